#!/usr/bin/env bash
# Prepares what a GPU benchmark run carries (the device machine has no network and does not see
# ../shared): run here from the project root, then name `.gpu` in the run's carry.
#   .gpu/{amazon_beauty,amazon_sports,movielens_100k}/  items.jsonl + sequences.txt (+ MovieLens'
#                            RecBole ml-100k.inter/.item/.user)
#                            (research-use data: ignored by git; ~15 MB together)
#   .gpu/all-MiniLM-L6-v2-fp16/  the encoder with fp16 weights (45 MB; fp32 does not fit the
#                            64 MiB carry limit); the loader upcasts to float32 parameters.
#   .gpu/beauty_minilm_embed/  Beauty's MiniLM `title; brand; categories` embeddings, an
#                            embed-stage folder (embeddings.npy + item_ids.npy + manifest, 18 MB),
#                            and the same matrix as .gpu/beauty_minilm.npy: copied from
#                            $BEAUTY_EMBED (default runs/beauty_cpu3/embed) when it is there,
#                            else made here with `lrm embed` (a few minutes on 2 cores).
# Everything together is ~80 MB: carry only what a run reads (the limit is 64 MiB), e.g.
# `.gpu/amazon_beauty` + `.gpu/beauty_minilm_embed` for the ranking item.
set -euo pipefail
cd "$(dirname "$0")/.."
# .gpu/ is listed in .gitignore.
for name in amazon_beauty amazon_sports movielens_100k; do
  mkdir -p .gpu/$name
  cp ../shared/data/$name/{items.jsonl,sequences.txt} .gpu/$name/
done
# The ranking benchmark reads MovieLens' RecBole files (ratings, user attributes).
cp ../shared/data/movielens_100k/ml-100k.{inter,item,user} .gpu/movielens_100k/
src=$(../shared/tools/get-minilm)
python3 - "$src" .gpu/all-MiniLM-L6-v2-fp16 <<'PY'
import pathlib, shutil, sys
import numpy as np
from safetensors.numpy import load_file, save_file
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
if dst.exists():
  shutil.rmtree(dst)
shutil.copytree(src, dst, ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".git*"))
tensors = {k: v.astype(np.float16) if v.dtype == np.float32 else v
           for k, v in load_file(src / "model.safetensors").items()}
save_file(tensors, dst / "model.safetensors")
PY
embed=${BEAUTY_EMBED:-runs/beauty_cpu3/embed}
if [ ! -f "$embed/embeddings.npy" ]; then
  embed=runs/beauty_minilm_embed
  [ -f "$embed/embeddings.npy" ] || lrm embed --data=../shared/data/amazon_beauty \
      --encoder=all-MiniLM-L6-v2 --out="$embed"
fi
rm -rf .gpu/beauty_minilm_embed && mkdir -p .gpu/beauty_minilm_embed
cp "$embed"/{embeddings.npy,item_ids.npy,manifest.json} .gpu/beauty_minilm_embed/
cp "$embed/embeddings.npy" .gpu/beauty_minilm.npy
du -sh .gpu/*; du -sh .gpu
