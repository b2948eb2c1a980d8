"""Item-ID sequences for ID-based sequential recommenders (SASRec): all positions trained at once.

Items are encoded as `catalog row + 1` so that 0 is padding. Sequences are LEFT-padded to a
fixed length so the most recent item is always the last position, which is where a causal
model reads its next-item prediction.

Training (`sequence_examples`) follows SASRec: one example is a window of up to L + 1
consecutive training items of a user; `inputs` are its first L, `targets` its last L (the next
item at every position), so a causal model learns every (prefix, next item) pair of the window
in one pass. A user with n training items has n - 1 pairs (target positions 1 .. n-1). The last
window ends at the user's last item; users longer than L + 1 also get earlier windows, whose
ends step back by `stride`, until position 1 is covered. Each target belongs to exactly one
window (the one that gives it the longest history); in the others it is context only (target
0). With the default `stride = L` the windows tile the sequence and every position of every
window but the earliest is a target; a smaller stride gives every target at least
L - stride + 1 items of history (when the user has them), at the cost of more examples.

Streaming (`WindowStream`): the same windows cut per user from user records (TFDS ArrayRecord
through `user_source`, or `SequenceRecords` in memory) as Grain reads them, each process its own
shard of users: for data that does not fit in memory.

Shape letters: m examples, n users, L max_length.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from lrm.core.errors import ConfigError
from lrm.data.splits import EvalSet, leave_one_out
from lrm.data.tfds.loader import shard_range
from lrm.data.types import Catalog, Sequences

PAD = 0


def _windows(ids: np.ndarray, lo: np.ndarray, hi: np.ndarray, length: int) -> np.ndarray:
  """The `length` flat positions before each `hi` (exclusive), kept where >= `lo`, else PAD.

  Right-aligned, so the element just before `hi` lands in the last column.

  Shape: ids int [e] (flat, already + 1 encoded); lo, hi int [m] -> int32 [m, length].
  """
  pos = hi[:, None] - length + np.arange(length)[None, :]
  valid = pos >= lo[:, None]
  safe = np.clip(pos, 0, max(len(ids) - 1, 0))
  return np.where(valid, ids[safe] if len(ids) else 0, PAD).astype(np.int32)


def _check_length(max_length: int) -> None:
  if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)) \
      or max_length < 1:
    raise ConfigError("max_length", f"must be a positive integer, got {max_length!r}")


def sequence_examples(train: Sequences, catalog: Catalog, *, max_length: int = 50,
                      stride: int | None = None) -> dict[str, np.ndarray]:
  """SASRec training windows of every user's training items (see the module docstring).

  Users with fewer than two training items give no example. Examples are user-major, each
  user's windows oldest first.

  Args:
    train: the training part (e.g. leave_one_out(...).train), item ids in `catalog`.
    catalog: maps item ids to rows.
    max_length: L, the window's input length.
    stride: how far each earlier window's end steps back, in [1, L]; default L.

  Returns:
    {"inputs": int32 [m, L], "targets": int32 [m, L]}: catalog row + 1, 0 = padding / no target.
  """
  _check_length(max_length)
  stride = max_length if stride is None else stride
  if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) \
      or not 1 <= stride <= max_length:
    # A stride beyond L would skip targets between windows.
    raise ConfigError("stride", f"must be an integer in [1, max_length={max_length}], "
                      f"got {stride!r}")
  ids = catalog.rows(train.items).astype(np.int64) + 1
  n = train.lengths
  windows = np.where(n >= 2, -(-(n - 1) // stride), 0)           # ceil(pairs / stride)
  user = np.repeat(np.arange(len(train)), windows)
  # k counts windows back from the user's last one; oldest first within a user.
  first = np.concatenate([[0], np.cumsum(windows)[:-1]])
  k = windows[user] - 1 - (np.arange(len(user)) - first[user])
  start = train.offsets[:-1][user]
  end = start + n[user] - k * stride                              # exclusive, flat
  # A window owns its last `stride` targets; the oldest owns all down to position 1.
  owned_from = np.where(k == windows[user] - 1, start + 1, end - stride)
  return {"inputs": _windows(ids, start, end - 1, max_length),
          "targets": _windows(ids, owned_from, end, max_length)}


def eval_inputs(eval_set: EvalSet, catalog: Catalog, *, max_length: int = 50) -> np.ndarray:
  """Each user's history (last L items), in the encoding of `sequence_examples`' inputs.

  Returns: int32 [n, L], rows aligned with `eval_set.user_ids`, left-padded with 0.
  """
  _check_length(max_length)
  hist = eval_set.histories
  ids = catalog.rows(hist.items).astype(np.int64) + 1
  return _windows(ids, hist.offsets[:-1], hist.offsets[1:], max_length)


class UserWindows(grain.experimental.FlatMapTransform):
  """A user record -> the windows `sequence_examples` gives that user's training part.

  The training part is leave-one-out's (the last two items are the validation and test targets
  of users with at least 3), so a streamed epoch holds exactly the in-memory examples.
  """

  max_fan_out = None   # any number of windows per user (the Iter flat map needs no bound)

  def __init__(self, catalog: Catalog, *, max_length: int, stride: int | None = None):
    self.catalog, self.max_length, self.stride = catalog, max_length, stride

  def flat_map(self, record: dict[str, Any]) -> list[dict[str, np.ndarray]]:
    items = np.asarray(record["item_ids"], np.int64)[:int(record["length"])]
    user = Sequences(user_ids=np.asarray([record["user_id"]], np.int64),
                     offsets=np.asarray([0, len(items)], np.int64), items=items)
    ex = sequence_examples(leave_one_out(user).train, self.catalog, max_length=self.max_length,
                           stride=self.stride)
    return [{"inputs": i, "targets": t} for i, t in zip(ex["inputs"], ex["targets"])]


@dataclasses.dataclass(frozen=True)
class WindowStream:
  """SASRec's training windows streamed from user records instead of held in memory.

  `users` is a random-access source of user records (`lrm.data.tfds.user_source`, or
  `SequenceRecords` over in-memory sequences: the same records, so the same batches). Each
  process reads a contiguous, equal-sized shard of the users (Grain's `ShardOptions` rule,
  remainder dropped), shuffles it from the seed every epoch, cuts each user into windows and
  batches them; a user's windows arrive together. The trainer calls `iterator`; its state
  resumes exactly and is saved with the checkpoints.
  """
  users: Any
  catalog: Catalog
  max_length: int
  stride: int | None = None

  def __len__(self) -> int:
    """Users in the stream (examples are only known by reading it)."""
    return len(self.users)

  def iterator(self, *, batch_size: int, seed: int, num_epochs: int | None = None,
               worker_count: int = 0, process_index: int = 0, process_count: int = 1) -> Any:
    """This process's batches: `batch_size / process_count` windows each, from its shard."""
    _check_length(self.max_length)
    if batch_size < 1 or process_count < 1 or batch_size % process_count:
      raise ConfigError("train.batch_size", f"{batch_size} does not split evenly over "
                        f"{process_count} processes")
    shard = grain.sharding.ShardOptions(process_index, process_count, drop_remainder=True)
    start, end = shard_range(len(self.users), shard)
    users = (grain.MapDataset.source(self.users)[start:end].shuffle(seed=seed)
             .repeat(num_epochs).to_iter_dataset())
    windows = grain.experimental.FlatMapIterDataset(
        users, UserWindows(self.catalog, max_length=self.max_length, stride=self.stride))
    it = windows.batch(batch_size // process_count, drop_remainder=True)
    if worker_count > 0:
      it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
    return iter(it)
