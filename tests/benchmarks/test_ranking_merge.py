"""benchmarks/ranking.py --merge: records of different SID level dropout rates never join."""

from __future__ import annotations

import hashlib
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


def _content_folder(path: pathlib.Path, catalog_ids, pairs) -> pathlib.Path:
  import numpy as np
  path.mkdir()
  np.save(path / "embeddings.npy", np.zeros((len(catalog_ids), 4), np.float32))
  np.save(path / "item_ids.npy", np.asarray(catalog_ids))
  (path / "manifest.json").write_text(json.dumps(
      {"stage": "embed", "encoder": {"kind": "finetuned"}, "embedding_info": {"pairs": pairs}}))
  return path


def test_content_of_an_encoder_tuned_on_another_split_is_refused(ranking, tmp_path, monkeypatch):
  import types

  import numpy as np
  ids = np.arange(5)
  dataset = types.SimpleNamespace(catalog=types.SimpleNamespace(item_ids=ids))
  section = ranking.ranking_defaults()
  pairs = {"item_to_item": True, "cold_fraction": section.cold_fraction, "cold_seed": 1}
  folder = _content_folder(tmp_path / "ft1", ids, pairs)
  monkeypatch.setattr(ranking, "_CONTENT", types.SimpleNamespace(value=str(folder)))
  assert ranking._content(dataset, 1, section).shape == (5, 4)
  assert ranking._content_kind({"content": ranking._content_fields()["content"]}) == "finetuned"
  assert ranking._content_fields()["content"]["embeddings_sha256"] == hashlib.sha256(
      (folder / "embeddings.npy").read_bytes()).hexdigest()
  with pytest.raises(SystemExit, match="cold_seed"):
    ranking._content(dataset, 0, section)     # seed 0's cold items shaped that encoder
  queries_only = _content_folder(tmp_path / "q", ids, {"item_to_item": False, "queries": True})
  monkeypatch.setattr(ranking, "_CONTENT", types.SimpleNamespace(value=str(queries_only)))
  assert ranking._content(dataset, 0, section) is not None   # no interactions were read


def test_merge_refuses_finetuned_with_frozen_content(ranking, tmp_path, monkeypatch):
  monkeypatch.setattr(ranking, "_write_seeds", lambda *a, **k: pytest.fail("merged"))
  frozen = _write_record(tmp_path / "a.json", 0, content={"path": "e", "pairs": None})
  tuned = _write_record(tmp_path / "b.json", 1, content={"path": "f",
                                                         "pairs": {"item_to_item": True}})
  with pytest.raises(SystemExit, match="content_kind"):
    ranking._merge([frozen, tuned], 0.0)


def test_checks_apply_the_late_targets_to_the_warmed_late_model_too(ranking):
  auc = lambda warm, cold: {"warm": {"click/auc": warm}, "cold": {"click/auc": cold}}
  results = {"variants": {"id": auc(.72, .50), "replace": auc(.79, .74), "concat": auc(.80, .73),
                          "gate": auc(.78, .71), "late": auc(.78, .75)},
             "two_tower": {"id_only": {"cold_coverage@20": .01},
                           "cluster_ids": {"cold_coverage@20": .1}},
             "warmup": {"after": {"warm_auc_no_id": .795, "cold_auc_no_id": .76}}}
  checks = ranking._checks(results)
  assert checks["late_keeps_80pct_lift"] and checks["late_ge_early_on_cold"]
  assert not checks["late_within_1pct_of_best_warm"]          # .78 < .80 - .01
  assert checks["warmed_late_within_1pct_of_best_warm"]       # .795 >= .79
  assert checks["warmed_late_keeps_80pct_lift"] and checks["warmed_late_ge_early_on_cold"]
  results["warmup"]["after"]["cold_auc_no_id"] = .72           # .22 < .8 x .295
  checks = ranking._checks(results)
  assert not checks["warmed_late_keeps_80pct_lift"]
  assert not checks["warmed_late_ge_early_on_cold"]
  del results["warmup"]
  assert not any(k.startswith("warmed") for k in ranking._checks(results))
