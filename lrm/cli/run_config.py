"""The `--config` / `--workdir` pair that every training command takes."""

from __future__ import annotations

import pathlib
from typing import Callable

from absl import flags
from ml_collections import config_flags

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def define_run_config(default: str) -> Callable[[], object]:
  """Defines --config (a file in configs/, `default` unless given) and --workdir; returns a
  function giving the config with `run_dir` replaced by --workdir when it is set.

  Call at import time of the command's module: config_flags reads `--config.FIELD=VALUE`
  overrides from the command line once the flag exists.
  """
  config = config_flags.DEFINE_config_file("config", str(CONFIGS / default),
                                           "config file (get_config)", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "run directory (overrides config.run_dir)")

  def value():
    resolved = config.value
    if workdir.value:
      resolved.run_dir = workdir.value
    return resolved
  return value
