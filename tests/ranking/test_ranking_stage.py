"""The ranking stage end to end on a tiny synthetic world, and its config section."""

from __future__ import annotations

import json
import pathlib

import pytest

from lrm.core.config import load_config
from lrm.core.errors import ConfigError
from lrm.ranking import pipeline_config, ranking_section, run

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _tiny(tmp_path):
  config = load_config(CONFIGS / "rank_synthetic.py", "runlocal")
  config.run_dir = str(tmp_path / "run")
  config.world.num_users = 80
  config.world.num_items = 300
  config.ranking.update(variants=("id", "late"), num_steps=20, batch_size=32,
                        codebook_sizes=(4, 4, 4), kmeans_iters=5, eval_negatives=4)
  return config


def test_stage_writes_warm_and_cold_metrics_and_resumes(tmp_path):
  results = run(_tiny(tmp_path))
  saved = json.loads((tmp_path / "run" / "ranking" / "results.json").read_text())
  assert set(saved["variants"]) == {"id", "late"}
  for variant in saved["variants"].values():
    for part in ("warm", "cold"):
      assert 0.0 <= variant[part]["click/auc"] <= 1.0
      assert "watch_time/rmse" in variant[part]
  assert results["counts"]["cold_items"] > 0
  # Trained through the project's trainer: checkpoints and metrics per variant; a second run
  # resumes at the last step (no training) and reproduces the numbers.
  late = tmp_path / "run" / "ranking" / "late"
  assert (late / "checkpoints").is_dir() and (late / "metrics.jsonl").exists()
  config = _tiny(tmp_path)
  config.ranking.variants = ("late",)
  again = run(config)
  for part in ("warm", "cold"):
    assert again["variants"]["late"][part]["click/auc"] == \
        results["variants"]["late"][part]["click/auc"]


def test_section_is_checked_and_stripped(tmp_path):
  config = _tiny(tmp_path)
  assert "ranking" not in pipeline_config(config)
  config.ranking.unknown_field = 1
  with pytest.raises(ConfigError, match="ranking.unknown_field"):
    ranking_section(config)
  config = _tiny(tmp_path)
  config.ranking.num_steps = 0
  with pytest.raises(ConfigError, match="ranking.num_steps"):
    ranking_section(config)

