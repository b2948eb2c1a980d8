"""lrm rounds [--config=configs/base.py[:runlocal]] [--config.rounds.FIELD=VALUE ...]

Continuous pretraining: one training round per dated snapshot of a growing catalog (the
synthetic world by default). Each round refreshes the SIDs (warm-started RQ-KMeans, churn
reported), grows the vocabulary, resumes the model and optimizer from the previous round and
trains `rounds.steps` steps, then reports recall overall and on items new in the round.
Resumable: completed rounds are reused, an interrupted one resumes from its checkpoints.
"""

from __future__ import annotations

import pathlib

from absl import flags
from ml_collections import config_flags

from lrm.cli.job_flags import join_job

_DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "configs" / "base.py"
_CONFIG = config_flags.DEFINE_config_file("config", str(_DEFAULT), "config file (get_config)",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (overrides config.run_dir)")


def main(argv):
  del argv
  join_job()
  from lrm.rounds import run_rounds
  config = _CONFIG.value
  if _WORKDIR.value:
    config.run_dir = _WORKDIR.value
  run_rounds(config)
