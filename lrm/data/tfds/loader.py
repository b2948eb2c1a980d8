"""Grain over the ArrayRecord user records: each process reads its own shard, padded batches.

  source = user_source("lrm_layout/amazon_beauty", data_dir)
  it = user_batches(source, batch_size=64, max_len=50, seed=0)   # ShardByJaxProcess
  batch = next(it)            # {"user_id": [b], "item_ids": [b, l], "length": [b], ...}
  state = it.get_state()      # saved by Orbax next to the model; it.set_state(state) resumes

Each process takes a contiguous, equal-sized range of the records (`shard_range`, Grain's
`ShardOptions` rule with the remainder dropped, so every process runs the same number of
steps), shuffles it from `seed` once per epoch, pads each user to `max_len` and batches.
"""

from __future__ import annotations

from typing import Any, Mapping

import grain
import numpy as np

from lrm.core.errors import ConfigError
from lrm.data.tfds.builders import SIGNAL_PREFIX
from lrm.data.types import Sequences

# Pad value of item ids and event types: ids may be 0, and lrm's histories pad with -1 too.
PAD = -1
# Per-event arrays of a user record, and their pad values; `attributes` (text) is dropped.
_EVENT_PAD = {"item_ids": PAD, "event_types": PAD, "timestamps": 0.0}


def shard_range(num_records: int, shard: grain.sharding.ShardOptions) -> tuple[int, int]:
  """[start, end) of this shard's records: contiguous, `num_records // shard_count` each.

  The last `num_records % shard_count` records are left out, so that every process sees the
  same number of batches; with `drop_remainder=False` the first shards take one more.
  """
  count, index = shard.shard_count, shard.shard_index  # ShardOptions checks their range
  size, extra = divmod(num_records, count)
  if shard.drop_remainder:
    return index * size, (index + 1) * size
  start = index * size + min(index, extra)
  return start, start + size + (index < extra)


class SequenceRecords:
  """In-memory sequences as user records (`user_id`, `length`, `item_ids`, `timestamps` when
  known), the fields `user_source` gives: the in-memory path behind the same interface, for
  small data and tests. Random access (len, [i]), in sequences order, as Grain sources are.
  """

  def __init__(self, sequences: Sequences):
    self.sequences = sequences

  def __len__(self) -> int:
    return len(self.sequences)

  def __getitem__(self, index: int) -> dict[str, Any]:
    s = self.sequences
    lo, hi = int(s.offsets[index]), int(s.offsets[index + 1])
    record = {"user_id": s.user_ids[index], "length": np.int64(hi - lo),
              "item_ids": s.items[lo:hi]}
    if s.timestamps is not None:
      record["timestamps"] = s.timestamps[lo:hi]
    return record


class PadUser:
  """Keeps a user's last `max_len` events and left-pads them to `max_len` (newest last).

  Shape: record arrays [n] per event -> [max_len]; `length` becomes the kept count.
  """

  def __init__(self, max_len: int):
    self.max_len = max_len

  def __call__(self, record: Mapping[str, Any]) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {"user_id": np.int64(record["user_id"])}
    kept = min(int(record["length"]), self.max_len)
    for key, values in record.items():
      if key in _EVENT_PAD or key.startswith(SIGNAL_PREFIX):
        values = np.asarray(values)
        padded = np.full(self.max_len, _EVENT_PAD.get(key, 0), values.dtype)
        if kept:
          padded[-kept:] = values[len(values) - kept:]
        out[key] = padded
    out["length"] = np.int64(kept)
    return out


def user_batches(source: Any, *, batch_size: int, max_len: int, seed: int,
                 shard_options: grain.sharding.ShardOptions | None = None,
                 num_epochs: int | None = None, shuffle: bool = True) -> grain.DatasetIterator:
  """A deterministic, resumable iterator of padded user batches from this process's shard.

  Args:
    source: a random-access source of user records (`user_source(...)`, or any len/[i]).
    batch_size: users per batch on this process (full batches only).
    max_len: events kept per user (the most recent).
    seed: the shuffle seed; each epoch is a new permutation of the shard.
    shard_options: which shard this process reads; default `ShardByJaxProcess`.
    num_epochs: passes over the shard; None repeats forever.
    shuffle: False keeps the written order (for evaluation).

  The iterator's `get_state()` / `set_state()` resume exactly (across epochs too).
  """
  if batch_size < 1 or max_len < 1:
    raise ConfigError("batch_size", f"batch_size and max_len must be >= 1, got {batch_size}, "
                      f"{max_len}")
  if shard_options is None:
    shard_options = grain.sharding.ShardByJaxProcess(drop_remainder=True)
  start, end = shard_range(len(source), shard_options)
  records = grain.MapDataset.source(source)[start:end]
  if shuffle:
    records = records.shuffle(seed=seed)
  batches = (records.repeat(num_epochs).map(PadUser(max_len))
             .batch(batch_size, drop_remainder=True))
  return iter(batches.to_iter_dataset())
