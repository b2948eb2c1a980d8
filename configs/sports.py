"""Amazon Sports and Outdoors (TIGER's split) from ../shared/data. Its items have brand and
categories but no titles, so the text embedded is `brand; cat1 > cat2 > ...`.

  lrm train --config=configs/sports.py --workdir=runs/sports
  lrm train --config=configs/sports.py --workdir=runs/sports --config.model.name=sasrec
  lrm evaluate --workdir=runs/sports
  lrm train --config=configs/sports.py:cpu    # the small-model budget of a 2-core CPU
"""

from __future__ import annotations

import importlib.util
import pathlib


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  spec = importlib.util.spec_from_file_location("lrm_config_beauty", here / "beauty.py")
  beauty = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(beauty)
  config = beauty.get_config(arg)
  config.run_dir = config.run_dir.replace("beauty", "sports")
  config.data.path = str(here.parent.parent / "shared" / "data" / "amazon_sports")
  # `title` is absent for every Sports item; the text joins the fields that exist.
  config.embed.fields = ("brand", "categories")
  return config
