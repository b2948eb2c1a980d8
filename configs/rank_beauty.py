"""Ranking on Amazon Beauty's cold-start item split (lrm/jobs/ranking.py), and the cold-start replay
(`lrm replay`, lrm/jobs/replay.py); SIDs of the items' MiniLM text embeddings (the embed stage with
configs/beauty.py's encoder and fields).

  lrm rank --config=configs/rank_beauty.py --workdir=runs/rank_beauty
  lrm rank --config=configs/rank_beauty.py:runlocal           # a quick look
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config, parse_arg
from lrm.jobs.defaults import ranking_defaults, replay_defaults


def get_config(arg: str | None = None):
  options = parse_arg(arg, runlocal=False)
  here = pathlib.Path(__file__).resolve().parent
  config = load_config(here / "beauty.py", "cpu")
  config.run_dir = "runs/rank_beauty"
  config.job = "ranking"
  config.ranking = ranking_defaults()
  config.ranking.content = "embed"          # MiniLM SIDs (configs/beauty.py's encoder)
  config.replay = replay_defaults()         # lrm replay's section (lrm/jobs/replay.py)
  config.ranking.codebook_sizes = (32, 32, 32)
  config.ranking.max_train_events = 100000
  if options.runlocal:
    config.ranking.num_steps = 100
    config.ranking.max_train_events = 5000
  return config
