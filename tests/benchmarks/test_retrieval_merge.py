"""benchmarks/retrieval.py --merge: seeds of one dataset and model -> mean and spread."""

from __future__ import annotations

import pytest


def _record(seed: int, recall: float, model: str = "rpg") -> dict:
  return {"benchmark": "retrieval", "dataset": "amazon_beauty", "model": model, "seed": seed,
          "metrics": {"recall@10": recall, "ndcg@10": recall / 2, "users_per_s": 9.0,
                      "history_excluded": {"recall@10": recall + .01}},
          "train": {"train_wall_s": 100.0 * (seed + 1)}, "device": "cpu", "commit": "abc",
          "reference": {"recall@10": .0648}}


def test_merge_gives_mean_spread_and_every_seed(retrieval):
  merged = retrieval.merge_records([_record(0, .07), _record(1, .08)], ["a.json", "b.json"])
  assert merged["seed"] == merged["seeds"] == [0, 1] and merged["split"] == "test"
  assert merged["metrics"]["recall@10"] == pytest.approx(.075)
  assert merged["summary"]["recall@10"]["spread"] == pytest.approx(.01)
  assert merged["metrics"]["history_excluded/recall@10"] == pytest.approx(.085)
  assert "users_per_s" not in merged["metrics"]          # a timing is not a quality metric
  assert merged["train"]["train_wall_s"] == pytest.approx(150.0)
  assert merged["reference"] == {"recall@10": .0648} and merged["merged"] == ["a.json", "b.json"]


def test_merge_refuses_repeated_seeds_and_mixed_models(retrieval):
  with pytest.raises(SystemExit, match="repeated seeds"):
    retrieval.merge_records([_record(0, .07), _record(0, .08)], ["a", "b"])
  with pytest.raises(SystemExit, match="mix"):
    retrieval.merge_records([_record(0, .07), _record(1, .08, "tiger")], ["a", "b"])
