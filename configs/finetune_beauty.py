"""Contrastive fine-tuning of MiniLM on Amazon Beauty (FLUID's recipe; lrm/jobs/finetune.py).

  lrm finetune --config=configs/finetune_beauty.py --workdir=runs/finetune_beauty
  lrm finetune --config=configs/finetune_beauty.py:cpu --workdir=runs/finetune_beauty_cpu
  lrm finetune --config=configs/finetune_beauty.py:cpu --config.pairs.cold_fraction=0.1 \
      --config.pairs.cold_seed=0 --workdir=runs/finetune_beauty_rank0   # for the ranker's SIDs
  lrm sid --embeddings=runs/finetune_beauty/embed/embeddings.npy --out=... --data=...

`:cpu` is a budget a shared 2-core CPU finishes in minutes (fewer, shorter steps).
"""

from __future__ import annotations

import pathlib

import ml_collections

from lrm.core.config import parse_arg
from lrm.encoders.contrastive import ContrastiveConfig


def get_config(arg: str | None = None):
  options = parse_arg(arg, cpu=False)
  here = pathlib.Path(__file__).resolve().parent
  config = ml_collections.ConfigDict()
  config.job = "finetune"          # lrm/jobs/finetune.py
  # A dataset folder in the standard layout, or "synthetic" (the built-in world).
  config.data = str(here.parent.parent / "shared" / "data" / "amazon_beauty")
  # The base sentence encoder (path or name found in local caches).
  config.encoder = "all-MiniLM-L6-v2"
  # Item text fields the item side encodes (the embed stage's default).
  config.fields = ("title", "brand", "categories")
  # Pairs: item-to-item co-consumption within `window` positions (training part only) and
  # category path + brand text queries. cold_fraction > 0: co-consumption only from the warm
  # training part of the cold-start split (fraction, cold_seed) that benchmarks/ranking.py
  # evaluates at seed cold_seed, so the encoder can feed that ranker's SIDs without leakage.
  config.pairs = ml_collections.ConfigDict({"window": 3, "item_to_item": True, "queries": True,
                                            "cold_fraction": 0.0, "cold_seed": 0})
  # lrm/encoders/contrastive.py ContrastiveConfig: FLUID's 128-d output, projection first.
  config.finetune = ml_collections.ConfigDict(ContrastiveConfig(
      dim=128, batch_size=128, max_seq_length=48, align_steps=500, joint_steps=1500,
      align_learning_rate=1e-3, joint_learning_rate=2e-5).to_dict())
  if options.cpu:
    config.finetune.update(batch_size=64, max_seq_length=40, align_steps=150, joint_steps=150)
  return config
