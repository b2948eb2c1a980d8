"""benchmarks/plum_ablation.py --merge: which records join, and what the merged summary says."""

from __future__ import annotations

import pytest


def _record(plum, rows_seeds: dict[str, list[int]], *, finetuned=None, sid_steps=1000):
  per_seed = {row: [{"seed": s, "uniqueness": 0.9 + 0.01 * s + (0.05 if row == "v2" else 0),
                     "fit_s": 1.0} for s in seeds] for row, seeds in rows_seeds.items()}
  settings = {k: None for k in plum.MERGE_KEYS}
  settings.update(benchmark="plum_ablation", dataset="amazon_beauty", sid_steps=sid_steps)
  return {**settings, "per_seed": per_seed, "finetuned": finetuned, "wall_s": 1.0,
          "commit": "abc", "command": "python benchmarks/plum_ablation.py"}


def test_merge_pools_seeds_and_rows(plum):
  merged = plum.merge_records([_record(plum, {"v1": [0, 1], "v2": [0, 1]}),
                               _record(plum, {"v1": [2], "v2": [2]})], ["a.json", "b.json"])
  assert merged["rows"] == ["v1", "v2"] and merged["seeds"] == [0, 1, 2]
  s = merged["summary"]
  assert s["v1"]["uniqueness"]["n"] == 3
  assert s["v1"]["uniqueness"]["mean"] == pytest.approx(0.91)
  assert s["v1"]["uniqueness"]["spread"] == pytest.approx(0.02)
  # v2 is +.05 everywhere, beyond the .02 spread: reported as a difference, not "none".
  assert s["v2"]["uniqueness"]["vs_v1"] == pytest.approx(0.05)


def test_merge_refuses_a_seed_twice_and_other_settings(plum):
  with pytest.raises(ValueError, match="b.json: row 'v1' seed 1"):
    plum.merge_records([_record(plum, {"v1": [0, 1]}), _record(plum, {"v1": [1]})],
                       ["a.json", "b.json"])
  with pytest.raises(ValueError, match="b.json: sid_steps 300 differs"):
    plum.merge_records([_record(plum, {"v1": [0]}), _record(plum, {"v1": [1]}, sid_steps=300)],
                       ["a.json", "b.json"])


def test_finetuned_encoder_must_agree_only_among_ft_records(plum):
  merged = plum.merge_records([_record(plum, {"v1": [0]}),
                               _record(plum, {"v1_ft": [0]}, finetuned="runs/ft/encoder"),
                               _record(plum, {"v2_ft": [0]}, finetuned="runs/ft/encoder")],
                              ["a.json", "b.json", "c.json"])
  assert merged["finetuned"] == "runs/ft/encoder"
  assert merged["rows"] == ["v1", "v1_ft", "v2_ft"]
  with pytest.raises(ValueError, match="c.json: finetuned 'runs/other/encoder' differs"):
    plum.merge_records([_record(plum, {"v1_ft": [0]}, finetuned="runs/ft/encoder"),
                        _record(plum, {"v2": [0]}),
                        _record(plum, {"v2_ft": [0]}, finetuned="runs/other/encoder")],
                       ["a.json", "b.json", "c.json"])


def test_summary_table_cells_are_mean_and_spread(plum):
  merged = plum.merge_records([_record(plum, {"v1": [0, 1, 2], "v2": [0, 1, 2]})], ["a.json"])
  header, rows = plum.summary_table(merged["summary"])
  assert header[:3] == ["row", "seeds", "uniqueness"]
  by_row = {r[0]: r for r in rows}
  # v1: .90, .91, .92 -> mean .91, spread .02; v2 is .05 above, beyond the spread: starred.
  assert by_row["v1"][1:3] == ["3", "0.9100 ± 0.0200"]
  assert by_row["v2"][2] == "0.9600 ± 0.0200*"
  assert by_row["v1"][header.index("recall@10")] == "-"    # no retrieval in these records
