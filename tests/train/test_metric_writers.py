"""MetricWriter: JSONL round trip, NaN as null, append on reopen, TensorBoard event files."""

from __future__ import annotations

import json
import math
import struct

import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.train.metric_writers import MetricWriter, read_metrics


def test_lines_round_trip(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as w:
    w.write(1, {"loss": 2.5, "lr": np.float32(0.5)})
    w.write(2, {"recall@10": 0.25}, prefix="eval/")
  records = read_metrics(tmp_path / "metrics.jsonl")
  assert [r["step"] for r in records] == [1, 2]
  assert records[0]["loss"] == 2.5 and records[0]["lr"] == 0.5
  assert records[1]["eval/recall@10"] == 0.25
  assert all(isinstance(r["time"], float) for r in records)
  assert read_metrics(tmp_path) == records  # A logdir works too.


def test_non_finite_is_null(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as w:
    w.write(1, {"loss": float("nan"), "grad_norm": float("inf"), "ok": 1.0})
  line = (tmp_path / "metrics.jsonl").read_text()
  assert "NaN" not in line and "Infinity" not in line
  record = json.loads(line)
  assert record["loss"] is None and record["grad_norm"] is None and record["ok"] == 1.0


def test_reopen_appends(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as w:
    w.write(1, {"loss": 1.0})
  with MetricWriter(tmp_path, tensorboard=False) as w:
    w.write(2, {"loss": 0.5})
  assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]


def test_reopen_after_partial_line_starts_a_new_line(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as w:
    w.write(1, {"loss": 1.0})
  with open(tmp_path / "metrics.jsonl", "a") as f:
    f.write('{"step": 2, "lo')  # a run killed mid-write
  with MetricWriter(tmp_path, tensorboard=False) as w:
    w.write(3, {"loss": 0.5})
  lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
  assert json.loads(lines[2])["step"] == 3
  with pytest.raises(DataError, match=r"metrics\.jsonl:2:"):
    read_metrics(tmp_path)


def test_malformed_line_names_path_and_line(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text('{"step": 1, "loss": 1.0}\n\nnot json\n')
  with pytest.raises(DataError) as e:
    read_metrics(path)
  assert e.value.line == 3
  assert f"{path}:3:" in str(e.value)
  path.write_text('[1, 2]\n')
  with pytest.raises(DataError, match=r"metrics\.jsonl:1:"):
    read_metrics(path)


def test_non_scalar_metric_is_refused(tmp_path):
  with MetricWriter(tmp_path, tensorboard=False) as w, pytest.raises(TypeError, match="loss"):
    w.write(1, {"loss": "low"})


def _tfrecords(path):
  """The payloads of a TFRecord file: [u64 length][u32 crc][data][u32 crc] per record."""
  data = path.read_bytes()
  pos = 0
  while pos < len(data):
    (length,) = struct.unpack("<Q", data[pos:pos + 8])
    pos += 12
    yield data[pos:pos + length]
    pos += length + 4


def _scalars(logdir):
  """{tag: [(step, value)]} from every event file under `logdir`."""
  from tensorboardX.proto import event_pb2
  out = {}
  files = sorted(logdir.glob("events.out.tfevents.*"))
  assert files, f"no event file in {logdir}"
  for path in files:
    for payload in _tfrecords(path):
      event = event_pb2.Event.FromString(payload)
      for value in event.summary.value:
        out.setdefault(value.tag, []).append((event.step, value.simple_value))
  return out


def test_tensorboard_event_file(tmp_path, caplog):
  caplog.set_level("INFO")
  with MetricWriter(tmp_path) as w:
    w.write(1, {"loss": 2.0})
    w.write(2, {"loss": 1.5, "grad_norm": float("nan")})
    w.write(2, {"recall@10": 0.25}, prefix="eval/")
  scalars = _scalars(tmp_path / "tensorboard")
  assert scalars["loss"] == [(1, 2.0), (2, 1.5)]
  # TensorBoard tags allow only [-/\w.]: "@" is written as "_", quietly (tensorboardX would
  # log an "illegal name" line per metric and call).
  assert scalars["eval/recall_10"] == [(2, 0.25)]
  assert not [r for r in caplog.records if "illegal" in r.getMessage()]
  [(step, value)] = scalars["grad_norm"]
  assert step == 2 and math.isnan(value)
