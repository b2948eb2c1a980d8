"""benchmarks/ranking.py --merge: records of different SID level dropout rates never join."""

from __future__ import annotations

import json
import pathlib

import pytest


def _write_record(path: pathlib.Path, seed: int, **fields) -> str:
  record = {"benchmark": "ranking", "dataset": "amazon_beauty", "split": "cold", "steps": 5000,
            "seeds": [seed], "metrics": {"variants": {"late": {}}}, "counts": {},
            "commit": "abc", "command": f"python benchmarks/ranking.py --seed={seed}",
            "wall_s": 1.0, **fields}
  path.write_text(json.dumps(record))
  return str(path)


def test_merge_counts_old_records_as_default_rates(ranking, tmp_path, monkeypatch):
  written = {}
  monkeypatch.setattr(ranking, "_write_seeds",
                      lambda runs, *args, **fields: written.update(runs=runs, **fields))
  defaults = ranking._dropout_fields(ranking.ranking_defaults())
  assert defaults["history_level_dropout"] is None
  old = _write_record(tmp_path / "a.json", 0)                 # before the flags existed
  new = _write_record(tmp_path / "b.json", 1, **defaults)
  ranking._merge([old, new], 0.0)
  assert sorted(written["runs"]) == [0, 1]
  assert written["sid_level_dropout"] == defaults["sid_level_dropout"]
  assert written["history_level_dropout"] is None


@pytest.mark.parametrize("field, value", [("sid_level_dropout", [0.0, 0.2, 0.8]),
                                          ("history_level_dropout", [0.0, 0.0, 0.0])])
def test_merge_refuses_other_rates(ranking, tmp_path, monkeypatch, field, value):
  monkeypatch.setattr(ranking, "_write_seeds", lambda *a, **k: pytest.fail("merged"))
  old = _write_record(tmp_path / "a.json", 0)
  other = _write_record(tmp_path / "b.json", 1, **{field: value})
  with pytest.raises(SystemExit, match=field):
    ranking._merge([old, other], 0.0)
