"""RPG on Amazon Sports and Outdoors: configs/rpg_beauty.py's recipe with 16 x 256 OPQ codes
(RPG's Sports setting) of `brand; categories` (Sports items have no titles).

  lrm train --config=configs/rpg_sports.py --workdir=runs/rpg_sports
  python benchmarks/retrieval.py --config=configs/rpg_sports.py
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  config = load_config(here / "rpg_beauty.py", arg)
  config.run_dir = "runs/rpg_sports"
  config.data.path = str(here.parent.parent / "shared" / "data" / "amazon_sports")
  config.embed.fields = ("brand", "categories")
  config.sid.num_codebooks = 16
  return config
