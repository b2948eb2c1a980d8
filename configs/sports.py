"""Amazon Sports and Outdoors (TIGER's split) from ../shared/data. Its items have brand and
categories but no titles, so the text embedded is `brand; cat1 > cat2 > ...`.

  lrm train --config=configs/sports.py --workdir=runs/sports
  lrm train --config=configs/sports.py --workdir=runs/sports --config.model.name=sasrec
  lrm evaluate --workdir=runs/sports
  lrm train --config=configs/sports.py:cpu    # the small-model budget of a 2-core CPU
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  config = load_config(here / "beauty.py", arg)
  config.run_dir = config.run_dir.replace("beauty", "sports")
  config.data.path = str(here.parent.parent / "shared" / "data" / "amazon_sports")
  # `title` is absent for every Sports item; the text joins the fields that exist.
  config.embed.fields = ("brand", "categories")
  return config
