"""lrm replay --config=configs/rank_synthetic.py --workdir=W [--config.replay.FIELD=V]

The cold-start replay (lrm/replay.py): the data stage (reused from W when complete), the
cold-start item split, two-towers (ID only, cluster IDs, + content, + ID) trained on the warm
items, then round by round top-K slates, clicks (the synthetic world's planted affinity, or the
user's held-out events) and incremental training; how fast new items gain impressions. Results
go to W/replay/results.json. Any config works; its `replay` section (lrm/replay.py
`replay_defaults`) is optional.
"""

from __future__ import annotations

from lrm.cli.job_flags import join_job
from lrm.cli.run_config import define_run_config
from lrm.replay import run

_RUN_CONFIG = define_run_config("rank_synthetic.py")


def main(argv):
  del argv
  join_job()
  config = _RUN_CONFIG()
  run(config)
