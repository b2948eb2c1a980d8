#!/usr/bin/env bash
# The GPU benchmarks, for any machine with a CUDA GPU and this project installed with its CUDA
# extra (`pip install -e '.[cuda]'`). Each item writes its JSON records to OUT_DIR; copy the ones
# to keep into benchmarks/results/ and update the table in benchmarks/README.md.
#
#   bash benchmarks/gpu_suite.sh OUT_DIR [DATA_ROOT]                  # every item, in order
#   ITEMS="embed retrieval" bash benchmarks/gpu_suite.sh OUT_DIR      # the named items only
#   DRY_RUN=1 bash benchmarks/gpu_suite.sh OUT_DIR                    # print the commands only
#
# DATA_ROOT (default ../shared/data, from the project root) holds the standard-layout folders
# amazon_beauty, amazon_sports and movielens_100k (the last with MovieLens' RecBole files
# ml-100k.inter/.item/.user, which the ranking item reads).
# Environment:
#   MINILM      the all-MiniLM-L6-v2 folder (Hugging Face layout); unset: ../shared/tools/get-minilm
#   RUNS        training folders, relative to the project root (default runs/gpu). Training
#               resumes from their checkpoints, so an interrupted item is simply run again.
#   PYTHON      the interpreter (default python3)
#   PEAK_FLOPS  one device's dense bf16 peak, for MFU (default 989e12, an H100 SXM)
#   MAX_TEMP_GIB  the compression item skips configurations needing more (default 120)
#
# Items, numbered as in the GPU lists of docs/experiments/ ("Pending on GPU item N"):
#    1 embed        embedding throughput, bf16 and fp32, and sentence-transformers   (issue 2)
#    2 rq_kmeans    RQ-KMeans fit speed and memory bandwidth, 1M x 128               (issue 3)
#    3 sid          RQ-VAE full recipe on Beauty                                    (issue 3)
#    4 retrieval    TIGER, SASRec and RPG full recipes on Beauty and Sports     (issues 4, 23)
#    5 decode       decoding throughput of item 4's Beauty models               (issues 4, 23)
#    6 lm_speed     LM training speed and MFU at 100M and 300M                       (issue 5)
#    7 checkpoint   asynchronous checkpoint cost at ~300M                            (issue 7)
#    8 compression  compression transformer against full attention, speed and quality (issue 6)
#    9 lm_beauty    bilingual LM on Beauty at full size, with the cold-start rows    (issue 5)
#   10 plum         PLUM SID-v2 ablation with retrieval, Beauty and Sports          (issue 10)
#   11 ranking      long-term user token; cold-start tables at 5,000 steps, 3 seeds  (issue 8)
set -euo pipefail

ALL_ITEMS="embed rq_kmeans sid retrieval decode lm_speed checkpoint compression lm_beauty plum ranking"

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: [ITEMS=\"$ALL_ITEMS\"] bash benchmarks/gpu_suite.sh OUT_DIR [DATA_ROOT]" >&2
  exit 2
fi
mkdir -p "$1"
OUT_DIR=$(cd "$1" && pwd)
DATA=""
if [ $# -eq 2 ]; then
  DATA=$(cd "$2" && pwd)
fi
cd "$(dirname "$0")/.."
if [ -z "$DATA" ] && [ -d ../shared/data ]; then
  DATA=$(cd ../shared/data && pwd)
fi
RUNS=${RUNS:-runs/gpu}
mkdir -p "$RUNS"
RUNS=$(cd "$RUNS" && pwd)
PY=${PYTHON:-python3}
PEAK_FLOPS=${PEAK_FLOPS:-989e12}
MAX_TEMP_GIB=${MAX_TEMP_GIB:-120}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if command -v lrm >/dev/null; then
  LRM=(lrm)
else
  LRM=("$PY" -m lrm.cli.main)
fi

# Prints a command, then runs it (DRY_RUN=1: prints only).
cmd() {
  echo "+ $*" >&2
  if [ -z "${DRY_RUN:-}" ]; then
    "$@"
  fi
}

need_data() {  # need_data FOLDER...: each must be under DATA_ROOT
  local name
  for name in "$@"; do
    if [ -z "$DATA" ] || [ ! -d "$DATA/$name" ]; then
      echo "gpu_suite: no $name under '${DATA:-../shared/data}': pass DATA_ROOT" >&2
      exit 2
    fi
  done
}

need_minilm() {
  if [ -z "${MINILM:-}" ] && [ -n "${DRY_RUN:-}" ]; then
    MINILM='$(../shared/tools/get-minilm)'
  elif [ -z "${MINILM:-}" ]; then
    MINILM=$(../shared/tools/get-minilm)
  fi
}

# Beauty's MiniLM `title; brand; categories` embeddings: an embed-stage folder (embeddings.npy,
# item_ids.npy, manifest.json) under RUNS, made once.
beauty_embed() {
  need_data amazon_beauty
  need_minilm
  if [ ! -f "$RUNS/beauty_embed/embeddings.npy" ]; then
    cmd "${LRM[@]}" embed --data="$DATA/amazon_beauty" --encoder="$MINILM" \
        --out="$RUNS/beauty_embed"
  fi
}

# 1. Embedding throughput on the GPU (issue 2): the MiniLM port in bf16 and fp32, then the
# sentence-transformers reference on the same GPU when it is installed.
item_embed() {
  need_data amazon_beauty
  need_minilm
  local dt
  for dt in bfloat16 float32; do
    cmd "$PY" benchmarks/embed_throughput.py --data "$DATA/amazon_beauty" --model "$MINILM" \
        --encoders minilm --dtype "$dt" --repeats 3 --out "$OUT_DIR"
  done
  if [ -n "${DRY_RUN:-}" ] || "$PY" -c "import sentence_transformers" 2>/dev/null; then
    cmd "$PY" benchmarks/embed_reference_st.py --data "$DATA/amazon_beauty" --model "$MINILM" \
        --device cuda --repeats 3 --out "$OUT_DIR"
  else
    echo "gpu_suite: sentence-transformers is not installed: no reference row" >&2
  fi
}

# 2. RQ-KMeans speed (issue 3): the same 1M x 128 fit, data generated on the machine.
# Bandwidth: each Lloyd iteration reads x once (n*d*4 bytes = 512 MB) for the distances;
# report (iterations x 512 MB) / fit time against the device's peak (H100 ~3.3 TB/s, H200 ~4.8).
item_rq_kmeans() {
  cmd "$PY" benchmarks/rq_kmeans_speed.py --repeats 3 --skip-faiss --out "$OUT_DIR"
}

# 3. RQ-VAE full recipe on Beauty (issue 3): 20k steps at batch 1024 (RQ-KMeans refit beside it).
item_sid() {
  beauty_embed
  cmd "$PY" benchmarks/sid_beauty.py --data "$DATA/amazon_beauty" \
      --embeddings "$RUNS/beauty_embed/embeddings.npy" --rqvae-steps 20000 --out "$OUT_DIR"
}

# 4. Generative retrieval, full recipes, Beauty and Sports (issues 4, 23). TIGER-sized seq2seq
# (4 + 4 layers, d 128) on 3 x 256 RQ-KMeans SIDs of MiniLM text + collision level, 30k steps at
# batch 256 with early stopping on validation NDCG@10 (configs/beauty.py, configs/sports.py);
# the SASRec baseline from the same pipeline; RPG (configs/rpg_beauty.py, configs/rpg_sports.py).
# Targets: TIGER's published numbers (RPG: RPG's); train wall time in the record (tokenizer +
# model), TIGER's target under 15 minutes.
item_retrieval() {
  need_data amazon_beauty amazon_sports
  need_minilm
  local ds m
  for ds in beauty sports; do
    for m in tiger sasrec; do
      cmd "$PY" benchmarks/retrieval.py --config="configs/$ds.py" \
          --config.data.path="$DATA/amazon_$ds" --config.embed.encoder="$MINILM" \
          --config.run_dir="$RUNS/$ds" --config.model.name="$m" \
          --config.model.tiger.dtype=bfloat16 --out "$OUT_DIR"
    done
    cmd "$PY" benchmarks/retrieval.py --config="configs/rpg_$ds.py" \
        --config.data.path="$DATA/amazon_$ds" --config.embed.encoder="$MINILM" \
        --config.run_dir="$RUNS/rpg_$ds" --out "$OUT_DIR"
  done
}

# 5. Decoding throughput (issues 4, 23) of item 4's Beauty models: TIGER's constrained beam
# search (beam 20, top-10) per batch size; RPG's exact, graph and trie decoders at batch 256 on
# every test user.
item_decode() {
  cmd "$PY" benchmarks/decode_trained.py --workdir "$RUNS/beauty" --batches=32,256,1024 \
      --out "$OUT_DIR"
  cmd "$PY" benchmarks/decode_trained.py --workdir "$RUNS/rpg_beauty" --model rpg --users 22363 \
      --beams 20 --batches 256 --out "$OUT_DIR"
}

# 6. LM speed and MFU (issue 5); goal >= 40% MFU at 300M. Worth trying too:
# --attention_impl=xla, --remat, other batch sizes.
item_lm_speed() {
  local s
  for s in 100m 300m; do
    cmd "$PY" benchmarks/lm_speed.py --size="$s" --batch_size=16 --seq_len=2048 --dtype=bfloat16 \
        --attention_impl=cudnn --peak_flops="$PEAK_FLOPS" --out "$OUT_DIR"
  done
}

# 7. Checkpoint cost at ~300M (issue 7); goal: asynchronous overhead < 5%.
item_checkpoint() {
  cmd "$PY" benchmarks/checkpoint.py --size=300m --batch_size=16 --seq_len=2048 --steps=60 \
      --save_every=20 --dtype=bfloat16 --attention_impl=cudnn --out "$OUT_DIR"
}

# 8. Compression transformer (issue 6): speed and memory against full attention in XLA, then
# against cuDNN's fused kernel, then compress without pooling (--summaries=16; full attention
# does not depend on it); quality on the synthetic world and MovieLens 100k.
item_compression() {
  need_data movielens_100k
  local speed=(--what=speed --batch=4 --d_model=512 --num_heads=8 --head_dim=64 --mlp_dim=2048
               --num_layers=4 --dtype=bfloat16 --max_temp_gib="$MAX_TEMP_GIB" --repeats=10
               --out "$OUT_DIR")
  cmd "$PY" benchmarks/compression_transformer.py "${speed[@]}" --full_impl=xla
  cmd "$PY" benchmarks/compression_transformer.py "${speed[@]}" --full_impl=cudnn
  cmd "$PY" benchmarks/compression_transformer.py "${speed[@]}" --mixers=compress --summaries=16
  cmd "$PY" benchmarks/compression_transformer.py --what=quality \
      --movielens_path="$DATA/movielens_100k" --steps=5000 --train_batch=128 --d_model=128 \
      --num_heads=4 --head_dim=32 --mlp_dim=512 --summaries=16 --synthetic_length=2048 \
      --synthetic_long_users=400 --returning_fraction=1.0 --per_user=2 --out "$OUT_DIR"
}

# 9. Bilingual LM on Beauty at configs/lm_beauty.py's full size (issue 5): all tasks, next-item
# only, and both on the cold-start split (5% of items held out of every interaction). It shares
# item 4's Beauty run folder (the same SIDs). Add --config.lm.train.num_steps=10000 to shorten.
item_lm_beauty() {
  need_data amazon_beauty
  need_minilm
  cmd "$PY" benchmarks/lm_beauty.py --config=configs/lm_beauty.py --cold_start=0.05 \
      --config.data.path="$DATA/amazon_beauty" --config.embed.encoder="$MINILM" \
      --config.run_dir="$RUNS/beauty" --config.lm.model.dtype=bfloat16 \
      --config.lm.model.attention_impl=cudnn --out "$OUT_DIR"
}

# 10. PLUM SID-v2 ablation with retrieval (issue 10) at full budgets: FLUID's full fine-tune of
# MiniLM per dataset (Sports: no text queries, its items have no titles), then every row
# (the RQ-KMeans reference included) x 3 seeds, 20k tokenizer steps, 30k retrieval steps.
# On the CPU, v2 on the :cpu-budget fine-tuned encoder fell below v1 (R@10 .0255 vs .0308,
# 3 seeds): this checks it at the full fine-tune.
item_plum() {
  need_data amazon_beauty amazon_sports
  need_minilm
  local ds
  for ds in beauty sports; do
    cmd "${LRM[@]}" finetune --config="configs/finetune_$ds.py" --config.encoder="$MINILM" \
        --config.data="$DATA/amazon_$ds" --workdir="$RUNS/finetune_$ds"
    cmd "$PY" benchmarks/plum_ablation.py --dataset="$ds" --data_root="$DATA" \
        --encoder="$MINILM" --finetuned="$RUNS/finetune_$ds/encoder" --sid_steps=20000 \
        --retrieval_steps=30000 --seeds=0,1,2 --workdir="$RUNS/plum_ablation" --out "$OUT_DIR"
  done
}

# 11. Ranking (issue 8). The long-term user token trained properly (T = 256 and 512; the CPU
# ran 200 steps). The full cold-start tables at 5,000 steps and 3 seeds, targets checked on the
# seed means: synthetic; Beauty on MiniLM SIDs at the default SID level dropout and at
# (0, .2, .8); Beauty on SIDs of the full fine-tune, one encoder per seed's cold-start split
# (the benchmark refuses an encoder tuned on another seed's split), one record per seed:
# merge those with `python benchmarks/ranking.py --merge=a.json,b.json,c.json`.
item_ranking() {
  need_data amazon_beauty movielens_100k
  local t s
  for t in 256 512; do
    cmd "$PY" benchmarks/ranking.py --dataset=movielens --movielens_path="$DATA/movielens_100k" \
        --long_history="$t" --variants=late --train_steps=2000 --time_steps=20 --out "$OUT_DIR"
  done
  cmd "$PY" benchmarks/ranking.py --train_steps=5000 --seeds=0,1,2 --out "$OUT_DIR"
  beauty_embed
  local beauty=(--dataset=beauty --beauty_path="$DATA/amazon_beauty" --train_steps=5000)
  cmd "$PY" benchmarks/ranking.py "${beauty[@]}" --content="$RUNS/beauty_embed" --seeds=0,1,2 \
      --out "$OUT_DIR"
  cmd "$PY" benchmarks/ranking.py "${beauty[@]}" --content="$RUNS/beauty_embed" --seeds=0,1,2 \
      --sid_level_dropout=0,0.2,0.8 --out "$OUT_DIR"
  for s in 0 1 2; do
    cmd "${LRM[@]}" finetune --config=configs/finetune_beauty.py --config.encoder="$MINILM" \
        --config.data="$DATA/amazon_beauty" --config.pairs.cold_fraction=0.1 \
        --config.pairs.cold_seed="$s" --workdir="$RUNS/ft_rank$s"
    cmd "$PY" benchmarks/ranking.py "${beauty[@]}" --content="$RUNS/ft_rank$s/embed" --seed="$s" \
        --out "$OUT_DIR"
  done
}

ITEMS=${ITEMS:-$ALL_ITEMS}
for item in $ITEMS; do
  if ! declare -F "item_$item" >/dev/null; then
    echo "gpu_suite: unknown item '$item'; the items are: $ALL_ITEMS" >&2
    exit 2
  fi
done
if [ -z "${DRY_RUN:-}" ]; then
  "$PY" -c 'import jax, sys; print(jax.devices()); sys.exit(jax.default_backend() != "gpu")' || {
    echo "gpu_suite: jax sees no CUDA GPU (install the project with its cuda extra)" >&2
    exit 1
  }
fi
for item in $ITEMS; do
  echo "== $item" >&2
  "item_$item"
done
echo "records in $OUT_DIR:" >&2
ls -1 "$OUT_DIR" >&2
