"""Amazon Beauty (TIGER's split) from ../shared/data, MiniLM text embeddings of title; brand; categories.

  lrm run --config=configs/beauty.py
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  config = load_config(here / "base.py", arg)
  config.run_dir = "runs/beauty"
  config.data.source = "layout"
  config.data.path = str(here.parent.parent / "shared" / "data" / "amazon_beauty")
  config.embed.encoder = "all-MiniLM-L6-v2"
  config.embed.modalities = ("text",)
  return config
