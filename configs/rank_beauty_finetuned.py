"""configs/rank_beauty.py with FLUID's whole recipe: SIDs of a contrastively fine-tuned encoder.

  lrm rank --config=configs/rank_beauty_finetuned.py --workdir=runs/rank_beauty_ft

The ranking stage first fine-tunes MiniLM (configs/finetune_beauty.py:cpu) on co-consumption
pairs from this run's warm training part only (the cold-start split of `ranking.cold_fraction`
and the run's seed; lrm/jobs/ranking.py `finetuned_content`) and on category + brand text queries,
then quantizes the fine-tuned embeddings into the items' SIDs. On Beauty at 5,000 steps this
raised the late-fusion ranker's cold AUC by about .05 (benchmarks/README.md, cold-start ranking).
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  config = load_config(here / "rank_beauty.py", arg)
  config.run_dir = "runs/rank_beauty_ft"
  config.ranking.content = "finetuned"
  config.ranking.finetune_config = f"{here / 'finetune_beauty.py'}:cpu"
  return config
