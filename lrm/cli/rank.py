"""lrm rank --config=configs/rank_synthetic.py --workdir=W [--config.ranking.FIELD=V]

The ranking stage (lrm/ranking.py): the data stage (reused from W when complete), the
cold-start item split with sampled negatives, RQ-KMeans SIDs of the item content, the configured
rankers (ID only, early fusion replace / concat / gate, late fusion), then click AUC and GAUC
per task on warm and cold candidates. Results go to W/ranking/results.json.
"""

from __future__ import annotations

from lrm.cli.job_flags import join_job
from lrm.cli.run_config import define_run_config
from lrm.ranking import run

_RUN_CONFIG = define_run_config("rank_synthetic.py")


def main(argv):
  del argv
  join_job()
  config = _RUN_CONFIG()
  run(config)
