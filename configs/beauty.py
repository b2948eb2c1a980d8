"""Amazon Beauty (TIGER's split) from ../shared/data: MiniLM embeddings of title; brand;
categories, 3 x 256 RQ-KMeans SIDs + a collision level, TIGER-sized seq2seq.

  lrm train --config=configs/beauty.py --workdir=runs/beauty            # TIGER
  lrm train --config=configs/beauty.py --workdir=runs/beauty --config.model.name=sasrec
  lrm evaluate --workdir=runs/beauty
  lrm run --config=configs/beauty.py:cpu      # a budget that fits a 2-core CPU (~1 h)
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config, parse_arg
from lrm.models.tiger import TIGER_SIZE


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  options = parse_arg(arg, cpu=False, runlocal=False)
  config = load_config(here / "base.py", "runlocal" if options.runlocal else None)
  config.run_dir = "runs/beauty"
  config.data.source = "layout"
  config.data.path = str(here.parent.parent / "shared" / "data" / "amazon_beauty")
  config.embed.encoder = "all-MiniLM-L6-v2"
  config.embed.modalities = ("text",)
  config.sid.codebook_size = 256     # TIGER: 3 levels x 256 codes + a collision level
  apply_training_recipe(config, cpu=options.cpu)
  return config


def apply_training_recipe(config, *, cpu: bool) -> None:
  """The Amazon recipe (shared by Beauty and Sports): ~130-300k examples, batch 256."""
  config.model.tiger.update(TIGER_SIZE)
  config.train.batch_size = 256
  config.train.num_steps = 30000
  config.train.learning_rate = 2e-3
  config.train.warmup_steps = 1000
  config.train.decay = "cosine"
  config.train.end_fraction = 0.05
  config.train.weight_decay = 0.05
  config.train.eval_every = 1000
  config.train.checkpoint_every = 1000
  config.train.patience = 8
  config.eval.valid_users = 3000
  if cpu:
    # What a 2-core CPU finishes in about an hour: a TIGER-sized step costs ~0.2 TFLOP (seconds
    # here), so a smaller model over the last 10 items (Beauty's median history is shorter).
    config.run_dir = config.run_dir + "_cpu"
    config.task.max_history = 10
    config.model.tiger.update(d_model=64, num_heads=2, head_dim=32, mlp_dim=256,
                              encoder_layers=2, decoder_layers=2)
    config.train.num_steps = 6000
    config.train.warmup_steps = 300
    config.train.eval_every = 1000
    config.eval.valid_users = 1000
