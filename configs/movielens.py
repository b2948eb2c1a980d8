"""MovieLens 100k from ../shared/data (long histories: mean ~106 ratings per user): title,
year and genres embedded; 3 x 64 SIDs (1,682 movies) + a collision level; the last 50 items
of history (TIGER's 20 would discard most of each user's context).

  lrm train --config=configs/movielens.py --workdir=runs/movielens
  lrm train --config=configs/movielens.py --workdir=runs/movielens --config.model.name=sasrec
  lrm evaluate --workdir=runs/movielens
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config, parse_arg
from lrm.models.tiger import TIGER_SIZE


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  options = parse_arg(arg, runlocal=False)
  config = load_config(here / "base.py", "runlocal" if options.runlocal else None)
  config.run_dir = "runs/movielens"
  config.data.source = "layout"
  config.data.path = str(here.parent.parent / "shared" / "data" / "movielens_100k")
  config.embed.encoder = "all-MiniLM-L6-v2"
  config.embed.modalities = ("text",)
  config.embed.fields = ("title", "release_year", "genres")
  config.sid.codebook_size = 64
  config.model.tiger.update(TIGER_SIZE)
  config.task.max_history = 50
  config.train.num_steps = 10000
  config.train.batch_size = 256
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 500
  config.train.eval_every = 500
  config.train.checkpoint_every = 500
  config.train.patience = 6
  config.eval.valid_users = 0        # 943 users: validate on all of them
  return config
