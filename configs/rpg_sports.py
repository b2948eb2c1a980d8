"""RPG on Amazon Sports and Outdoors: configs/rpg_beauty.py's recipe with 16 x 256 OPQ codes
(RPG's Sports setting) of `brand; categories` (Sports items have no titles), plus TIGER's
collision level, since that text leaves two items in three sharing their whole code.

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
  # Sports' brand + categories text gives 18,357 items only 5,967 distinct 16-code SIDs (32.5%
  # unique, groups up to 232): tied items score alike, so a collision level numbers them apart.
  config.sid.opq_collision_level = True
  return config
