"""benchmarks/ranking.py --merge: records of different SID level dropout rates never join (the
rule is `merge_seed_records`, a pure function; the content checks take the folder)."""

from __future__ import annotations

import hashlib
import json
import pathlib

import pytest


def _record(seed: int, **fields) -> dict:
  return {"benchmark": "ranking", "dataset": "amazon_beauty", "split": "cold", "steps": 5000,
            "seeds": [seed], "metrics": {"variants": {"late": {}}}, "counts": {},
            "commit": "abc", "command": f"python benchmarks/ranking.py --seed={seed}",
            "wall_s": 1.0, **fields}


def test_merge_counts_old_records_as_default_rates(ranking):
  defaults = ranking._dropout_fields(ranking.ranking_defaults())
  assert defaults["history_level_dropout"] is None
  old = _record(0)                                            # before the flags existed
  new = _record(1, **defaults)
  runs, first, sources = ranking.merge_seed_records([old, new], ["a.json", "b.json"])
  assert sorted(runs) == [0, 1] and [s["path"] for s in sources] == ["a.json", "b.json"]
  assert first["sid_level_dropout"] == defaults["sid_level_dropout"]
  assert first["history_level_dropout"] is None
  with pytest.raises(ValueError, match="b.json: needs one seed"):
    ranking.merge_seed_records([old, _record(0)], ["a.json", "b.json"])


@pytest.mark.parametrize("field, value", [("sid_level_dropout", [0.0, 0.2, 0.8]),
                                          ("history_level_dropout", [0.0, 0.0, 0.0])])
def test_merge_refuses_other_rates(ranking, field, value):
  with pytest.raises(ValueError, match=f"b.json: {field}"):
    ranking.merge_seed_records([_record(0), _record(1, **{field: value})], ["a.json", "b.json"])


def _content_folder(path: pathlib.Path, catalog_ids, pairs) -> pathlib.Path:
  import numpy as np
  path.mkdir()
  np.save(path / "embeddings.npy", np.zeros((len(catalog_ids), 4), np.float32))
  np.save(path / "item_ids.npy", np.asarray(catalog_ids))
  (path / "manifest.json").write_text(json.dumps(
      {"stage": "embed", "encoder": {"kind": "finetuned"}, "embedding_info": {"pairs": pairs}}))
  return path


def test_content_of_an_encoder_tuned_on_another_split_is_refused(ranking, tmp_path):
  import types

  import numpy as np
  ids = np.arange(5)
  dataset = types.SimpleNamespace(catalog=types.SimpleNamespace(item_ids=ids))
  section = ranking.ranking_defaults()
  pairs = {"item_to_item": True, "cold_fraction": section.cold_fraction, "cold_seed": 1}
  folder = _content_folder(tmp_path / "ft1", ids, pairs)
  assert ranking._content(dataset, 1, section, str(folder)).shape == (5, 4)
  fields = ranking._content_fields(str(folder))
  assert ranking._content_kind(fields) == "finetuned"
  assert fields["content"]["embeddings_sha256"] == hashlib.sha256(
      (folder / "embeddings.npy").read_bytes()).hexdigest()
  with pytest.raises(SystemExit, match="cold_seed"):
    ranking._content(dataset, 0, section, str(folder))   # seed 0's cold items shaped it
  queries_only = _content_folder(tmp_path / "q", ids, {"item_to_item": False, "queries": True})
  assert ranking._content(dataset, 0, section, str(queries_only)) is not None  # no interactions
  assert ranking._content(dataset, 0, section, "") is None


def test_merge_refuses_finetuned_with_frozen_content(ranking):
  frozen = _record(0, content={"path": "e", "pairs": None})
  tuned = _record(1, content={"path": "f", "pairs": {"item_to_item": True}})
  with pytest.raises(ValueError, match="content_kind"):
    ranking.merge_seed_records([frozen, tuned], ["a.json", "b.json"])


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
