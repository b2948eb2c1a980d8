"""RPG on MovieLens 100k: 16 x 64 OPQ codes of title, year and genres (1,682 movies), windows
of the last 50 ratings, validation on all 943 users.

  lrm train --config=configs/rpg_movielens.py --workdir=runs/rpg_movielens
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  config = load_config(here / "movielens.py", arg)
  config.run_dir = "runs/rpg_movielens"
  config.sid.method = "opq"
  config.sid.num_codebooks = 16
  config.sid.codebook_size = 64
  config.model.name = "rpg"
  config.model.rpg.update(max_length=50, d_model=64, num_heads=2, head_dim=32, mlp_dim=256,
                          num_layers=2, dropout=0.2, temperature=0.05)
  config.train.update(batch_size=128, num_steps=3000, learning_rate=3e-3, warmup_steps=100,
                      eval_every=250, checkpoint_every=250, patience=6)
  config.eval.decoder = "exact"
  return config
