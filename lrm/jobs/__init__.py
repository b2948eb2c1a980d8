"""Every job, by the name `config.job` gives it (the `lrm` command dispatches through `JOBS`).

A job is a module with `run(config, workdir)` (train, resuming, and score what it trains) and
`evaluate(config, workdir)` (score what a run trained in `workdir`, without training; for a job
whose run is its own evaluation, print what the run recorded). `workdir` None means
`config.run_dir`.

Beside the jobs: `stages.py` (the data, embed and SID stages every job starts from), `embed.py`
and `sid.py` (those two stages' specs, fits and artifacts) and `common.py` (what jobs share).
"""

from __future__ import annotations

from types import ModuleType

from lrm.core.errors import ConfigError
from lrm.jobs import finetune, lm, pipeline, ranking, replay, retrieval, rounds

JOBS: dict[str, ModuleType] = {
    "pipeline": pipeline,    # the main job: data -> embed -> sid -> retrieval, evaluated
    "retrieval": retrieval,  # generative retrieval (TIGER, decoder-only, SASRec, RPG)
    "lm": lm,                # the bilingual SID language model
    "ranking": ranking,      # cold-start ranking: ID / early / late fusion rankers
    "replay": replay,        # cold-start replay: how fast new items gain impressions
    "rounds": rounds,        # continued pretraining over snapshots of a growing catalog
    "finetune": finetune,    # contrastive fine-tuning of the sentence encoder
}


def get(name: str) -> ModuleType:
  """The job called `name`; ConfigError naming `job` when there is none."""
  if name not in JOBS:
    raise ConfigError("job", f"'{name}' is not one of {sorted(JOBS)}")
  return JOBS[name]
