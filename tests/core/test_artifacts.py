import json

import numpy as np
import pytest

from lrm.core import artifacts
from lrm.core.config import check_known, parse_arg
from lrm.core.errors import ConfigError, DataError
from lrm.core.report import format_table


def test_atomic_write_leaves_nothing_on_failure(tmp_path):
  target = tmp_path / "out" / "x.json"
  with pytest.raises(RuntimeError):
    with artifacts.atomic_path(target) as tmp:
      tmp.write_text("half")
      raise RuntimeError("crash mid-write")
  assert not target.exists()
  assert list(target.parent.iterdir()) == []  # no temp file left either


def test_atomic_write_replaces_whole_file(tmp_path):
  target = tmp_path / "x.txt"
  artifacts.atomic_write_text(target, "old")
  artifacts.atomic_write_text(target, "new")
  assert target.read_text() == "new"


def test_save_npy_roundtrip_and_no_pickle(tmp_path):
  a = np.arange(6, dtype=np.float32).reshape(2, 3)
  artifacts.save_npy(tmp_path / "a.npy", a)
  np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), a)
  with pytest.raises(ValueError):
    artifacts.save_npy(tmp_path / "b.npy", np.array([{"a": 1}], dtype=object))
  assert not (tmp_path / "b.npy").exists()


def test_manifest_and_is_complete(tmp_path):
  cfg = {"a": 1, "b": [1, 2], "c": np.int64(3)}
  assert not artifacts.is_complete(tmp_path, cfg)
  m = artifacts.write_manifest(tmp_path, stage="x", config=cfg, counts={"n": 2})
  assert m["versions"]["jax"]
  assert json.loads((tmp_path / "manifest.json").read_text())["counts"] == {"n": 2}
  assert artifacts.is_complete(tmp_path, {"a": 1, "b": (1, 2), "c": 3})
  assert not artifacts.is_complete(tmp_path, {"a": 2, "b": [1, 2], "c": 3})
  (tmp_path / "manifest.json").write_text("{broken")
  assert not artifacts.is_complete(tmp_path, cfg)
  with pytest.raises(DataError, match="manifest.json:1"):
    artifacts.read_manifest(tmp_path)


def test_read_manifest_missing_names_file(tmp_path):
  with pytest.raises(DataError, match="no manifest.json"):
    artifacts.read_manifest(tmp_path)


def test_data_error_names_file_and_line():
  e = DataError("bad id 'x'", path="/d/sequences.txt", line=12)
  assert str(e) == "/d/sequences.txt:12: bad id 'x'"
  assert (e.path, e.line) == ("/d/sequences.txt", 12)


def test_check_known_names_nested_field():
  known = {"a": 1, "embed": {"encoder": None, "batch_size": 1}}
  check_known({"a": 2, "embed": {"batch_size": 4}}, known)
  with pytest.raises(ConfigError, match="'embed.bach_size'"):
    check_known({"embed": {"bach_size": 4}}, known)


def test_parse_arg():
  assert parse_arg("runlocal", runlocal=False, n=3).runlocal is True
  assert parse_arg("n=5", runlocal=False, n=3).n == 5
  with pytest.raises(ConfigError, match="arg.nope"):
    parse_arg("nope", runlocal=False)


def test_format_table_aligns():
  out = format_table(["k", "value"], [["recall@10", 0.123456], ["users", 22363]])
  lines = out.splitlines()
  assert len({len(l) for l in lines}) == 1
  assert "0.1235" in out and "22363" in out


def test_is_complete_notices_a_rebuilt_input(tmp_path):
  upstream, downstream = tmp_path / "up", tmp_path / "down"
  artifacts.write_manifest(upstream, stage="up", config={})
  first = {"up": artifacts.artifact_id(upstream)}
  artifacts.write_manifest(downstream, stage="down", config={"a": 1}, inputs=first)
  assert artifacts.is_complete(downstream, {"a": 1}, first)
  artifacts.write_manifest(upstream, stage="up", config={})     # rebuilt: a new id
  second = {"up": artifacts.artifact_id(upstream)}
  assert second != first
  assert not artifacts.is_complete(downstream, {"a": 1}, second)
  # A folder made elsewhere (no manifest) is identified by its path.
  assert artifacts.artifact_id(tmp_path / "shared") == str((tmp_path / "shared").resolve())


def test_benchmark_records_carry_the_shared_fields(tmp_path):
  record = artifacts.benchmark_record("retrieval", dataset="beauty", split="test", model="rpg",
                                      metrics={"recall@10": 0.07}, train={"train_wall_s": 1.0},
                                      wall_s=2.04, seed=0, curve=[])
  assert list(record)[:len(artifacts.RECORD_FIELDS)] == list(artifacts.RECORD_FIELDS)
  assert record["wall_s"] == 2.0 and record["device"] and record["command"].startswith("python")
  assert record["curve"] == []
  path = artifacts.write_benchmark_result(tmp_path, "retrieval_beauty_rpg_cpu2", record)
  assert json.loads(path.read_text())["metrics"] == {"recall@10": 0.07}
  with pytest.raises(ValueError, match="train_wall_s"):
    artifacts.benchmark_record("retrieval", dataset="beauty", metrics={}, train={"steps": 3})
  with pytest.raises(ValueError, match=r"lacks \['split'"):
    artifacts.write_benchmark_result(tmp_path, "x", {k: None for k in artifacts.RECORD_FIELDS
                                                     if k != "split"})
  assert len(list(tmp_path.iterdir())) == 1         # nothing written for the bad record
