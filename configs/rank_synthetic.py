"""Ranking on the synthetic world's cold-start item split (lrm/jobs/ranking.py), and the cold-start
replay (`lrm replay`, lrm/jobs/replay.py).

  lrm rank --config=configs/rank_synthetic.py --workdir=runs/rank_synthetic
  lrm rank --config=configs/rank_synthetic.py:runlocal       # a quick look
  lrm rank --config=configs/rank_synthetic.py --config.ranking.variants="('id','late')"
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config, parse_arg
from lrm.jobs.defaults import ranking_defaults, replay_defaults


def get_config(arg: str | None = None):
  options = parse_arg(arg, runlocal=False)
  here = pathlib.Path(__file__).resolve().parent
  config = load_config(here / "base.py", "runlocal" if options.runlocal else "")
  config.run_dir = "runs/rank_synthetic"
  config.job = "ranking"
  config.ranking = ranking_defaults()
  config.replay = replay_defaults()         # lrm replay's section (lrm/jobs/replay.py)
  if options.runlocal:
    config.ranking.num_steps = 100
    config.ranking.eval_negatives = 5
    config.replay.rounds = 5
    config.replay.train_steps = 300
  return config
