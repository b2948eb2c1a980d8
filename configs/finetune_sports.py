"""Contrastive fine-tuning of MiniLM on Amazon Sports (configs/finetune_beauty.py's recipe).

  lrm finetune --config=configs/finetune_sports.py --workdir=runs/finetune_sports
  lrm finetune --config=configs/finetune_sports.py:cpu --workdir=runs/finetune_sports_cpu

Sports items have no titles, so an item's text is its brand and category path: the same words
a category + brand query would hold. Such a query only restates its items' text (items with
one brand and path already embed identically), so Sports trains on item-to-item
co-consumption pairs alone.
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  config = load_config(here / "finetune_beauty.py", arg)
  config.data = str(here.parent.parent / "shared" / "data" / "amazon_sports")
  config.pairs.queries = False
  return config
