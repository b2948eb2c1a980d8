"""Training metrics to a JSONL log (`logdir/metrics.jsonl`) and TensorBoard event files.

The JSONL file is the record that scripts and colabs read back (`read_metrics`); TensorBoard is
for watching a run. Event files come from tensorboardX, which needs only protobuf and numpy
(no TensorFlow). TensorBoard tags allow only `[-/A-Za-z0-9_.]`: other characters become `_`
here (`eval/recall@10` shows as `eval/recall_10`), before tensorboardX would warn about each
one; the JSONL keeps the names.

A writer opened on an existing logdir appends, so a resumed run keeps the earlier lines; the
steps then repeat from the restored step on, and readers keep the last line per step if they
want one curve.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import re
import time
from typing import Any, Self

from tensorboardX import SummaryWriter

from lrm.core.errors import DataError

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
_ILLEGAL_TAG_CHARS = re.compile(r"[^-/\w.]")


class MetricWriter:
  """Writes one JSON line per `write` call, and the same scalars to TensorBoard."""

  def __init__(self, logdir: str | os.PathLike, *, tensorboard: bool = True):
    self.logdir = pathlib.Path(logdir)
    self.logdir.mkdir(parents=True, exist_ok=True)
    self.path = self.logdir / METRICS_FILE
    partial = _ends_mid_line(self.path)
    # Open for the writer's lifetime; close() / __exit__ closes it.
    self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
    if partial:  # A run killed mid-write: start our lines on a line of their own.
      self._file.write("\n")
    self._tb = None
    if tensorboard:
      self._tb = SummaryWriter(logdir=str(self.logdir / TENSORBOARD_DIR))

  def write(self, step: int, metrics: dict[str, float], *, prefix: str = "") -> None:
    """Logs `metrics` at `step`, names prefixed by `prefix` (e.g. "eval/").

    Values are converted with float() (jax / numpy scalars are fine). NaN and inf become null
    in the JSON line (JSON has no NaN) but go to TensorBoard as they are.
    """
    step = int(step)
    values = {prefix + name: _to_float(name, value) for name, value in metrics.items()}
    record = {"step": step, "time": time.time(),
              **{k: v if math.isfinite(v) else None for k, v in values.items()}}
    self._file.write(json.dumps(record, allow_nan=False) + "\n")
    # Flushed per call: a crashed run still leaves every written line on disk.
    self._file.flush()
    if self._tb is not None:
      for name, value in values.items():
        self._tb.add_scalar(tensorboard_tag(name), value, global_step=step,
                            walltime=record["time"])

  def flush(self) -> None:
    self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    if not self._file.closed:
      self._file.close()
    if self._tb is not None:
      self._tb.close()
      self._tb = None

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()


def tensorboard_tag(name: str) -> str:
  """`name` with every character TensorBoard rejects replaced by `_`."""
  return _ILLEGAL_TAG_CHARS.sub("_", name)


def read_metrics(path: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of a metrics.jsonl file (or of `path/metrics.jsonl` for a logdir).

  null values come back as None. Blank lines are skipped.

  Raises:
    DataError: a line that is not a JSON object, named as path:line.
  """
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / METRICS_FILE
  records = []
  with open(path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise DataError(f"malformed metrics line: {e.msg}", path=path, line=lineno) from None
      if not isinstance(record, dict) or "step" not in record:
        raise DataError("metrics line is not a JSON object with a 'step'", path=path,
                        line=lineno)
      records.append(record)
  return records


def _to_float(name: str, value: Any) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    raise TypeError(f"metric {name!r} is not a scalar: {type(value).__name__}") from None


def _ends_mid_line(path: pathlib.Path) -> bool:
  """Whether `path` exists, is not empty and does not end with a newline."""
  try:
    with open(path, "rb") as f:
      f.seek(0, os.SEEK_END)
      if f.tell() == 0:
        return False
      f.seek(-1, os.SEEK_END)
      return f.read(1) != b"\n"
  except FileNotFoundError:
    return False
