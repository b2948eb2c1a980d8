"""lrm rounds [--config=configs/base.py[:runlocal]] [--config.rounds.FIELD=VALUE ...]

Continuous pretraining: one training round per dated snapshot of a growing catalog (the
synthetic world by default). Each round refreshes the SIDs (warm-started RQ-KMeans, churn
reported), grows the vocabulary, resumes the model and optimizer from the previous round and
trains `rounds.steps` steps, then reports recall overall and on items new in the round.
Resumable: completed rounds are reused, an interrupted one resumes from its checkpoints.
"""

from __future__ import annotations

from lrm.cli.job_flags import join_job
from lrm.cli.run_config import define_run_config
from lrm.rounds import run_rounds

_RUN_CONFIG = define_run_config("base.py")


def main(argv):
  del argv
  join_job()
  config = _RUN_CONFIG()
  run_rounds(config)
