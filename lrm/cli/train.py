"""lrm train --config=configs/<name>.py --workdir=W [--config.FIELD=VALUE ...]

Trains the retrieval model `model.name` (tiger | sasrec) on the configured data: the data,
embedding and SID stages run first (reused from W when complete), then training resumes from
W/retrieval/<model>/checkpoints if there are any. Validation every `train.eval_every` steps,
early stopping on `train.best_metric`. Evaluate with `lrm evaluate --workdir=W`.

A ranking config (configs/rank_<dataset>.py, one with a `ranking` section) runs the ranking
stage instead (lrm/ranking.py, as `lrm rank` does): every ranker variant trained on the
cold-start split, then scored on warm and cold candidates.

Multi-process (one process per host or GPU): `python launch/local.py --num_processes=N -- lrm
train ...`, the SLURM / TPU launchers in launch/, or `--coordinator --num_processes
--process_id`. On SIGTERM it saves a checkpoint and exits with status 143; the same command
resumes.
"""

from __future__ import annotations

from lrm import pipeline, ranking
from lrm.cli.job_flags import join_job
from lrm.cli.run_config import define_run_config

_RUN_CONFIG = define_run_config("base.py")


def main(argv):
  del argv
  join_job()
  config = _RUN_CONFIG()
  if "ranking" in config:     # configs/rank_<dataset>.py: the ranking stage (lrm/ranking.py)
    ranking.run(config)
    return
  pipeline.run_pipeline(config, train=True, evaluate=False)
