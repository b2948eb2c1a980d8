"""The main job (`lrm run`): every stage from one config, end to end.

  data -> embed -> sid (lrm/jobs/stages.py, each reused when complete)
  -> retrieval: train `model.name` (resumed), rank every validation and test user
     (lrm/jobs/retrieval.py)

Writes run_dir/config.json (what `lrm evaluate` reads) and run_dir/results.json.
"""

from __future__ import annotations

from typing import Any

from lrm.jobs import retrieval
from lrm.jobs.common import at_workdir


def run(config, workdir=None) -> dict[str, Any]:
  """Every stage, training and evaluation included, in `workdir` (default: config.run_dir)."""
  return retrieval.run_pipeline(at_workdir(config, workdir))


def evaluate(config, workdir=None, *, models: tuple[str, ...] | None = None) -> dict[str, Any]:
  """Ranks the users again with the trained models (lrm.jobs.retrieval.evaluate)."""
  return retrieval.evaluate(config, workdir, models=models)
