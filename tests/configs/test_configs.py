"""Every file under configs/ loads, and the Sports fine-tune config differs from Beauty's only
where Sports' data says it must."""

from __future__ import annotations

import pathlib

import pytest

from lrm.core.config import load_config
from lrm.jobs import JOBS

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.py")), ids=lambda p: p.name)
def test_every_config_loads(path):
  assert load_config(path, None) is not None


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.py")), ids=lambda p: p.name)
def test_every_config_names_its_job(path):
  assert load_config(path, None).job in JOBS


@pytest.mark.parametrize("arg", [None, "cpu"])
def test_sports_finetune_is_beauty_finetune_on_sports_without_queries(arg):
  beauty = load_config(CONFIGS / "finetune_beauty.py", arg)
  sports = load_config(CONFIGS / "finetune_sports.py", arg)
  assert pathlib.Path(sports.data).name == "amazon_sports"
  assert not sports.pairs.queries and beauty.pairs.queries
  assert sports.finetune.to_dict() == beauty.finetune.to_dict()
  assert sports.pairs.window == beauty.pairs.window and tuple(sports.fields) == tuple(beauty.fields)


def test_rank_beauty_finetuned_names_a_finetune_config_that_loads():
  from lrm.jobs.ranking import ranking_section
  section = ranking_section(load_config(CONFIGS / "rank_beauty_finetuned.py", None))
  assert section.content == "finetuned"
  path, _, arg = section.finetune_config.partition(":")
  tuned = load_config(path, arg or None)
  assert tuned.pairs.item_to_item and tuned.pairs.cold_fraction == 0.0   # the run sets it
