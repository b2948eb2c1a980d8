"""lrm run [--config=configs/base.py[:runlocal]] [--config.FIELD=VALUE ...]

The main job: every pipeline stage end to end on the configured data (default: the built-in
synthetic world), resuming stages whose artifacts are complete.
"""

from __future__ import annotations

import pathlib

from ml_collections import config_flags

from lrm.cli.job_flags import join_job
from lrm.pipeline import run_pipeline

_DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "configs" / "base.py"
_CONFIG = config_flags.DEFINE_config_file("config", str(_DEFAULT), "config file (get_config)",
                                          lock_config=True)


def main(argv):
  del argv
  join_job()
  run_pipeline(_CONFIG.value)
