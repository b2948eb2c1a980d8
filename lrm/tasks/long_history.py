"""Long-history next-item examples: (up to T past events, the next item) with time features.

One example is a target event and the T events of the same user strictly before it (never the
target itself nor anything after it), LEFT-padded so the most recent event is the last
position, with per-event features for lrm/models/compression.py:

  history  int32 [m, T]  catalog rows, -1 = padding
  gap      int32 [m, T]  log2 bucket of the seconds since the user's previous event (0 = pad;
                         1 for a user's first event and for data without timestamps)
  age      int32 [m, T]  log2 bucket of the seconds between the event and the target's time
  kind     int32 [m, T]  event kind: event type + 1, else the rounded rating, else 1 (0 = pad)
  target   int32 [m]     the target's catalog row
  user     int32 [m]     the user's row in the source sequences

Buckets: 1 + floor(log2(1 + seconds)), capped at NUM_TIME_BUCKETS - 1 (as in the model).

Splits: `leave_one_out` (MovieLens) and `returning_split` for the synthetic world's long
histories, where the returning interest is always a user's LAST event: every user's events but
the last are training material, and the long-history users are divided into those whose last
event is also trained on (so the returning pattern can be learned) and held-out users whose
last event is the test target.

SIDs: `item_sids` fits RQ-KMeans on item embeddings and appends TIGER's collision level, so
every item has a distinct code tuple (an ID-free item tower can then tell all items apart).

Shape letters: m examples, T history length, n items, c SID levels.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import jax
import numpy as np

from lrm.core.errors import ConfigError, DataError
from lrm.data.splits import EvalSet
from lrm.data.types import Catalog, Sequences
from lrm.sid.rq_kmeans import rq_kmeans_fit
from lrm.sid.table import SIDTable, with_collision_level

NUM_TIME_BUCKETS = 40       # must equal lrm.models.compression.NUM_TIME_BUCKETS
PAD_ROW = -1


def time_bucket(seconds: np.ndarray) -> np.ndarray:
  """1 + floor(log2(1 + s)) for s >= 0 (negative clock steps count as 0), capped."""
  s = np.maximum(np.asarray(seconds, np.float64), 0.0)
  return np.minimum(1 + np.floor(np.log2(1.0 + s)), NUM_TIME_BUCKETS - 1).astype(np.int32)


def event_kinds(sequences: Sequences, num_kinds: int = 8) -> np.ndarray:
  """int32 [n] kinds in [1, num_kinds): event type + 1, else rounded rating, else 1."""
  if sequences.event_types is not None:
    kinds = sequences.event_types.astype(np.int64) + 1
  elif "rating" in sequences.signals:
    kinds = np.rint(sequences.signals["rating"]).astype(np.int64)
  else:
    kinds = np.ones(sequences.num_events, np.int64)
  return np.clip(kinds, 1, num_kinds - 1).astype(np.int32)


def _gap_buckets(sequences: Sequences) -> np.ndarray:
  """int32 [n]: bucket of the time since the user's previous event (1 for the first)."""
  if sequences.timestamps is None:
    return np.ones(sequences.num_events, np.int32)
  ts = sequences.timestamps
  gap = np.zeros(len(ts))
  gap[1:] = ts[1:] - ts[:-1]
  gap[sequences.offsets[:-1][sequences.lengths > 0]] = 0.0
  return time_bucket(gap)


def _check_length(length: int) -> None:
  if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or length < 1:
    raise ConfigError("length", f"must be a positive integer, got {length!r}")


def windows(sequences: Sequences, catalog: Catalog, users: np.ndarray, ends: np.ndarray,
            target_rows: np.ndarray, target_times: np.ndarray | None, *, length: int,
            num_kinds: int = 8) -> dict[str, np.ndarray]:
  """Examples whose histories are the `length` events of user `users[i]` before flat event
  index `ends[i]` (exclusive; at least the user's first event), left-padded.

  Shape: users, ends, target_rows int [m], target_times float [m] or None -> the arrays of the
  module docstring.
  """
  _check_length(length)
  users = np.asarray(users, np.int64)
  ends = np.asarray(ends, np.int64)
  lo, hi = sequences.offsets[users], sequences.offsets[users + 1]
  if ((ends < lo) | (ends > hi)).any():
    raise DataError("an example's end lies outside its user's events")
  rows = catalog.rows(sequences.items).astype(np.int64)
  pos = ends[:, None] - length + np.arange(length)[None, :]            # [m, T] flat indices
  valid = pos >= lo[:, None]
  safe = np.clip(pos, 0, max(sequences.num_events - 1, 0))
  take = lambda a, pad: np.where(valid, a[safe] if len(a) else pad, pad).astype(np.int32)
  if sequences.timestamps is None or target_times is None:
    age = np.where(valid, 1, 0).astype(np.int32)
  else:
    seconds = np.asarray(target_times, np.float64)[:, None] - sequences.timestamps[safe]
    age = np.where(valid, time_bucket(seconds), 0).astype(np.int32)
  return {"history": take(rows, PAD_ROW), "gap": take(_gap_buckets(sequences), 0),
          "age": age, "kind": take(event_kinds(sequences, num_kinds), 0),
          "target": np.asarray(target_rows, np.int32), "user": users.astype(np.int32)}


def training_examples(train: Sequences, catalog: Catalog, *, length: int, per_user: int,
                      num_kinds: int = 8) -> dict[str, np.ndarray]:
  """Each user's last `per_user` events (that have at least one event before them) as
  targets, each with its `length` previous events. User-major, oldest target first."""
  _check_length(length)
  if isinstance(per_user, bool) or not isinstance(per_user, (int, np.integer)) or per_user < 1:
    raise ConfigError("per_user", f"must be a positive integer, got {per_user!r}")
  n = train.lengths
  count = np.clip(n - 1, 0, per_user)
  users = np.repeat(np.arange(len(train)), count)
  first = np.concatenate([[0], np.cumsum(count)[:-1]])
  back = count[users] - (np.arange(len(users)) - first[users])          # count .. 1
  targets = train.offsets[users + 1] - back                              # flat target index
  times = None if train.timestamps is None else train.timestamps[targets]
  rows = catalog.rows(train.items[targets])
  return windows(train, catalog, users, targets, rows, times, length=length,
                 num_kinds=num_kinds)


def eval_examples(eval_set: EvalSet, catalog: Catalog, *, length: int,
                  num_kinds: int = 8) -> dict[str, np.ndarray]:
  """One example per evaluated user: the last `length` history events and the target."""
  hist = eval_set.histories
  users = np.arange(len(hist))
  return windows(hist, catalog, users, hist.offsets[1:], catalog.rows(eval_set.targets),
                 eval_set.target_timestamps, length=length, num_kinds=num_kinds)


@dataclasses.dataclass(frozen=True, eq=False)
class ReturningSplit:
  """train: every user's events but the last, plus the last event of the trained long users;
  test: held-out long users (history = all but the last event, target = the last);
  test_returning: bool [u_test], whether the test user's target is a returning interest."""
  train: Sequences
  test: EvalSet
  test_returning: np.ndarray


def returning_split(sequences: Sequences, long_users: np.ndarray, returning: np.ndarray, *,
                    test_fraction: float = 0.5, seed: int = 0) -> ReturningSplit:
  """Splits long-history users for the returning-interest task (see the module docstring).

  Args:
    sequences: all users (e.g. a synthetic world's).
    long_users: bool [u], users with long histories (`truth.long_users`).
    returning: int user rows with a returning interest (`truth.returning_users`).
    test_fraction: share of long users held out, stratified by returning / not.
    seed: which users are held out.
  """
  long_users = np.asarray(long_users, bool)
  if long_users.shape != (len(sequences),):
    raise DataError(f"long_users has shape {long_users.shape}, expected ({len(sequences)},)")
  if not 0 < test_fraction < 1:
    raise ConfigError("test_fraction", f"must be in (0, 1), got {test_fraction}")
  is_returning = np.zeros(len(sequences), bool)
  is_returning[np.asarray(returning, np.int64)] = True
  rng = np.random.default_rng([seed, 6])
  held = np.zeros(len(sequences), bool)
  for group in (long_users & is_returning, long_users & ~is_returning):
    rows = np.flatnonzero(group)
    held[rng.permutation(rows)[:int(round(test_fraction * len(rows)))]] = True
  if not held.any():
    raise DataError("no long-history user to hold out")
  lengths = sequences.lengths
  user = np.repeat(np.arange(len(sequences)), lengths)
  is_last = np.arange(sequences.num_events) == np.repeat(sequences.offsets[1:] - 1, lengths)
  train = sequences.select_events(~is_last | (long_users & ~held)[user])
  rows = np.flatnonzero(held)
  test_seqs = sequences.take_users(rows)
  test_last = (np.arange(test_seqs.num_events)
               == np.repeat(test_seqs.offsets[1:] - 1, test_seqs.lengths))
  target = np.flatnonzero(test_last)
  test = EvalSet(user_ids=test_seqs.user_ids, histories=test_seqs.select_events(~test_last),
                 targets=test_seqs.items[target],
                 target_timestamps=None if test_seqs.timestamps is None
                 else test_seqs.timestamps[target])
  return ReturningSplit(train=train, test=test, test_returning=is_returning[rows])


def item_sids(embeddings: np.ndarray, codebook_sizes: Sequence[int], *, seed: int = 0,
              iters: int = 25) -> tuple[np.ndarray, tuple[int, ...]]:
  """RQ-KMeans codes plus TIGER's collision level: distinct code tuples for every item.

  Shape: embeddings [n, d] -> (codes int32 [n, L + 1], codebook sizes of the L + 1 levels).
  """
  model = rq_kmeans_fit(embeddings, tuple(codebook_sizes), key=jax.random.key(seed),
                        iters=iters)
  table = with_collision_level(SIDTable(item_ids=np.arange(len(embeddings)), codes=model.codes,
                                        codebook_sizes=tuple(codebook_sizes)))
  return table.full_codes.astype(np.int32), table.full_codebook_sizes
