"""lrm rank --config=configs/rank_synthetic.py --workdir=W [--config.ranking.FIELD=V]

The ranking stage (lrm/ranking.py): the data stage (reused from W when complete), the
cold-start item split with sampled negatives, RQ-KMeans SIDs of the item content, the configured
rankers (ID only, early fusion replace / concat / gate, late fusion), then click AUC and GAUC
per task on warm and cold candidates. Results go to W/ranking/results.json.
"""

from __future__ import annotations

import pathlib

from absl import flags
from ml_collections import config_flags

from lrm.cli.job_flags import join_job

_DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "configs" / "rank_synthetic.py"
_CONFIG = config_flags.DEFINE_config_file("config", str(_DEFAULT), "config file (get_config)",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "run directory (overrides config.run_dir)")


def main(argv):
  del argv
  join_job()
  from lrm.ranking import run
  config = _CONFIG.value
  if _WORKDIR.value:
    config.run_dir = _WORKDIR.value
  run(config)
