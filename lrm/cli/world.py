"""lrm world --out=DIR [--config=configs/base.py] [--config.world.FIELD=VALUE ...]

Writes the synthetic world (standard dataset layout + truth.npz with the planted structure).
"""

from __future__ import annotations

import pathlib

from absl import flags
from ml_collections import config_flags

from lrm.core.report import print_table
from lrm.data.synthetic import WorldConfig, make_world, write_world

_DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "configs" / "base.py"
_CONFIG = config_flags.DEFINE_config_file("config", str(_DEFAULT), "config file; its `world` "
                                          "section is used", lock_config=True)
_OUT = flags.DEFINE_string("out", None, "output folder", required=True)


def main(argv):
  del argv
  world = make_world(WorldConfig.from_dict(_CONFIG.value.world, where="world"))
  write_world(world, _OUT.value)
  stats = world.dataset.stats()
  print_table(["synthetic world", _OUT.value],
              [[k, v] for k, v in stats.items() if not isinstance(v, list)])
