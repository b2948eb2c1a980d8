"""Train / evaluation splits of interaction sequences.

- `leave_one_out`: the protocol of TIGER, SASRec, S3-Rec, P5 (last item = test, second-last =
  validation, the rest = train).
- `cold_start_split`: item cold-start; a set of items gets no training interactions at all, and
  each user's last interaction with one of them becomes a test target.
- `time_split`: events before / from a time, for snapshots and temporal protocols.
- `warm_leave_one_out`: leave-one-out of a cold-start split's warm events, for stages that
  learn from interactions before the cold-start ranking protocol.
"""

from __future__ import annotations

import dataclasses
from typing import Literal, NamedTuple

import numpy as np

from lrm.core.errors import DataError
from lrm.data.types import Catalog, Sequences


@dataclasses.dataclass(frozen=True, eq=False)
class EvalSet:
  """Evaluation examples: for each user, a history and the item to predict next.

  Attributes:
    user_ids: int64 [u].
    histories: the users' events before the target (same users, same order), with their
      timestamps and signals when the source had them.
    targets: int64 [u] the item id to predict.
    target_timestamps: float64 [u] when the target happened, or None.
  """
  user_ids: np.ndarray
  histories: Sequences
  targets: np.ndarray
  target_timestamps: np.ndarray | None = None

  def __post_init__(self):
    object.__setattr__(self, "user_ids", np.asarray(self.user_ids, dtype=np.int64))
    object.__setattr__(self, "targets", np.asarray(self.targets, dtype=np.int64))
    u = len(self.user_ids)
    if self.targets.shape != (u,):
      raise DataError(f"targets have shape {self.targets.shape}, expected ({u},)")
    if not np.array_equal(self.histories.user_ids, self.user_ids):
      raise DataError("histories must hold the same users as user_ids, in the same order")
    if self.target_timestamps is not None:
      ts = np.asarray(self.target_timestamps, dtype=np.float64)
      if ts.shape != (u,):
        raise DataError(f"target_timestamps have shape {ts.shape}, expected ({u},)")
      object.__setattr__(self, "target_timestamps", ts)

  def __len__(self) -> int:
    return len(self.user_ids)


@dataclasses.dataclass(frozen=True, eq=False)
class LeaveOneOut:
  """train: every user's events but the last two (all events of users too short to evaluate);
  valid: history = all but the last two, target = the second-last;
  test: history = all but the last, target = the last."""
  train: Sequences
  valid: EvalSet
  test: EvalSet


@dataclasses.dataclass(frozen=True, eq=False)
class ColdStartSplit:
  """train: the sequences without any event on a cold item (users left empty are dropped);
  test: per user, the last event on a cold item, with the warm events before it as history;
  cold_items: int64 [c] sorted ids of the held-out items."""
  train: Sequences
  test: EvalSet
  cold_items: np.ndarray


class TimeSplit(NamedTuple):
  """Events before a time and from it on; users without events in a part are left out."""
  before: Sequences
  after: Sequences


def leave_one_out(sequences: Sequences, *, min_length: int = 3) -> LeaveOneOut:
  """Splits each user's sequence: last item = test target, second-last = validation target.

  Users with fewer than `min_length` events are kept whole in train and are in neither
  evaluation set (`min_length` >= 3 so that the validation history is never empty). Every
  user keeps a row in train, in the input order; for evaluated users, train + valid target +
  test target is the whole sequence.
  """
  if min_length < 3:
    raise ValueError(f"min_length must be >= 3 (a validation history needs an item), "
                     f"got {min_length}")
  lengths = sequences.lengths
  position = _positions(sequences)
  user_of_event = np.repeat(np.arange(len(sequences)), lengths)
  evaluated = lengths >= min_length
  from_end = lengths[user_of_event] - position  # 1 for a user's last event
  train = sequences.select_events(~evaluated[user_of_event] | (from_end > 2))
  rows = np.flatnonzero(evaluated)
  evaluated_seqs = sequences.take_users(rows)
  eval_from_end = from_end[sequences.event_rows(rows)]
  return LeaveOneOut(train=train,
                     valid=_eval_set(evaluated_seqs, eval_from_end > 2, eval_from_end == 2),
                     test=_eval_set(evaluated_seqs, eval_from_end > 1, eval_from_end == 1))


def _positions(sequences: Sequences) -> np.ndarray:
  """int64 [n]: each event's index within its user's sequence."""
  starts = np.repeat(sequences.offsets[:-1], sequences.lengths)
  return np.arange(sequences.num_events) - starts


def _eval_set(sequences: Sequences, history: np.ndarray, target: np.ndarray) -> EvalSet:
  """EvalSet from masks over `sequences`' events (exactly one target event per user)."""
  target_events = np.flatnonzero(target)
  return EvalSet(
      user_ids=sequences.user_ids, histories=sequences.select_events(history),
      targets=sequences.items[target_events],
      target_timestamps=(None if sequences.timestamps is None
                         else sequences.timestamps[target_events]))


def cold_start_split(sequences: Sequences, catalog: Catalog, *, fraction: float, seed: int,
                     by: Literal["random", "first_seen"] = "random") -> ColdStartSplit:
  """Holds out a set of cold items entirely, to measure retrieval of items never trained on.

  Cold items are `round(fraction * m)` of the m catalog items that occur in `sequences`:
  chosen uniformly with `seed` (by="random"), or those that first appear latest (by=
  "first_seen": the earliest timestamp of each item, ties and timestamp-less sequences by the
  first position in the flat event order).

  Every event on a cold item is removed from train. The test target of a user is their last
  event on a cold item; the history is their *warm* events before it, so an ID model meets no
  unknown item in its input and the only cold thing is the item to retrieve. Users with no
  cold event, or no warm event before their target, are not tested. Only items are held out:
  a user's warm events after the target stay in train (this measures generalisation to unseen
  items, not to the future; combine with `time_split` for a temporal protocol). For warm-item
  numbers on the same model, evaluate `leave_one_out(split.train)`.
  """
  if not 0.0 < fraction < 1.0:
    raise ValueError(f"fraction must be in (0, 1), got {fraction}")
  if by not in ("random", "first_seen"):
    raise ValueError(f"by must be 'random' or 'first_seen', got {by!r}")
  sequences.check_items(catalog)
  seen_items = catalog.item_ids[np.isin(catalog.item_ids, sequences.items)]
  num_cold = int(round(fraction * len(seen_items)))
  if not 0 < num_cold < len(seen_items):
    raise ValueError(f"fraction {fraction} of {len(seen_items)} interacted items gives "
                     f"{num_cold} cold items; need at least one cold and one warm item")
  if by == "random":
    cold = np.random.default_rng(seed).choice(seen_items, num_cold, replace=False)
  else:
    cold = _latest_first_seen(sequences, num_cold)
  cold = np.sort(cold)

  is_cold = np.isin(sequences.items, cold)
  train = _drop_empty_users(sequences.select_events(~is_cold))
  # Each user's last cold event, and the warm events before it.
  user_of_event = np.repeat(np.arange(len(sequences)), sequences.lengths)
  cold_events = np.flatnonzero(is_cold)
  last_of_user = np.r_[user_of_event[cold_events][1:] != user_of_event[cold_events][:-1], True]
  target_events = cold_events[last_of_user] if len(cold_events) else cold_events
  target_of_user = np.full(len(sequences), -1, np.int64)
  target_of_user[user_of_event[target_events]] = target_events
  history = ~is_cold & (np.arange(sequences.num_events) < target_of_user[user_of_event])
  with_history = sequences.select_events(history)
  rows = np.flatnonzero((target_of_user >= 0) & (with_history.lengths > 0))
  targets = target_of_user[rows]
  test = EvalSet(user_ids=sequences.user_ids[rows], histories=with_history.take_users(rows),
                 targets=sequences.items[targets],
                 target_timestamps=(None if sequences.timestamps is None
                                    else sequences.timestamps[targets]))
  return ColdStartSplit(train=train, test=test, cold_items=cold)


def warm_leave_one_out(sequences: Sequences, catalog: Catalog, *, cold_fraction: float,
                       seed: int) -> LeaveOneOut:
  """Leave-one-out of the warm events of the cold-start split `cold_start_split(fraction, seed)`.

  What an earlier stage (a fine-tuned encoder, co-occurrence SIDs) may learn from when its output
  feeds the cold-start ranking protocol of the same fraction and seed (`lrm.tasks.ranking
  .cold_warm_split`): no event on a cold item, and no user's last warm event (a warm evaluation
  target there). Users with fewer than 3 warm events are dropped, not kept whole as
  `leave_one_out` keeps short users, since their last warm event is such a target too.
  """
  warm = cold_start_split(sequences, catalog, fraction=cold_fraction, seed=seed).train
  return leave_one_out(warm.take_users(np.flatnonzero(warm.lengths >= 3)))


def _latest_first_seen(sequences: Sequences, count: int) -> np.ndarray:
  """The `count` items whose first event is latest (by timestamp, then flat position)."""
  items = sequences.items
  uniq, first_position = np.unique(items, return_index=True)
  if sequences.timestamps is None:
    first_time = np.zeros(len(uniq))
  else:
    first_time = np.full(len(uniq), np.inf)
    np.minimum.at(first_time, np.searchsorted(uniq, items), sequences.timestamps)
  order = np.lexsort((first_position, first_time))  # earliest first
  return uniq[order[-count:]]


def time_split(sequences: Sequences, t: float) -> TimeSplit:
  """Events with timestamp < t (before) and >= t (after)."""
  if sequences.timestamps is None:
    raise DataError("time_split needs timestamps; these sequences have none")
  early = sequences.timestamps < t
  return TimeSplit(before=_drop_empty_users(sequences.select_events(early)),
                   after=_drop_empty_users(sequences.select_events(~early)))


def _drop_empty_users(sequences: Sequences) -> Sequences:
  nonempty = sequences.lengths > 0
  return sequences if nonempty.all() else sequences.take_users(np.flatnonzero(nonempty))
