"""Implicit-feedback ranking examples with sampled negatives, and a cold-start item protocol.

A ranking example is (user history of item rows, candidate, labels). Every observed event is a
positive (`click` = 1) and is joined by `num_negatives` sampled items the user never touched
(`click` = 0). Labels that only exist after an impression (like / order / watch time / rating)
are known on positives and *masked* on negatives, so a multi-task ranker learns them where they
were observed (the usual post-click treatment).

Protocol (`cold_warm_split`): `lrm.data.splits.cold_start_split` chooses the cold items (10% of
the interacted items by default) and removes every event on them from training. What is left is
split like leave-one-out: each user's last warm event is the *warm* evaluation positive; their
last cold event (history = the warm events before it) is the *cold* evaluation positive. Each
evaluation positive gets negatives from its own pool (warm items for warm, cold items for cold),
so per-user AUC (GAUC) is defined on both.

The synthetic world's live rooms (`room_examples`): a user meets a room at one of its content
slices; `follow` and `watch_time` depend on how close the *slice's* topic is to the user's
current interest (the same affinity rule as the world's own watch time), so a ranker that knows
only the room's overall (majority) content cannot tell an on-topic slice from an excursion.

User-side features beyond the history (issue 8 item 2):

- user attributes (`encode_user_features`): each field of the dataset's `UserTable` becomes a
  small categorical code, 0 = missing. Strings by a frequency-ordered vocabulary (the
  `max_vocab - 1` most frequent values, ties by value, get their own code; the rest share one
  "rare" code); numbers (age) by quantile buckets of the observed values, so each bucket holds
  about as many users (ages cluster in the 20s-30s; equal-width buckets would waste most codes);
  zip codes (`ZIP_FIELDS`) by their first character, which for a US ZIP is its national area
  (0 = New England ... 9 = the West Coast), all non-digit (Canadian) codes sharing one value.
  Fine-grained zips would give most users a code of their own: an ID in disguise.
- user-item interaction counts (`interaction_counts`): for each example and SID level l, how
  many of the user's earlier *training-visible* events (the whole prior history, not only the
  `max_history` window; events on cold items never count, as they never enter a history) share
  the candidate's level-l prefix, and how many were the candidate item itself. Counted with one
  sorted array of (user, prefix, event) keys per level and two binary searches per example,
  so memory stays O(events + examples) (no per-example history beyond the window). The ranker
  reads them as log2 buckets (`count_buckets`). Under sampled negatives the same-item count
  is 0 on every negative (a negative is never an item of the user), so on data with repeat
  consumption it separates positives outright; MovieLens 100k and Amazon Beauty have no
  repeats (each movie rated, each product reviewed once), so there it is 0 everywhere.

Long history (`long_history=T`, 0 = off; issue 8's long-history user encoder,
lrm/models/compression.py inside lrm/models/ranker.py): each example also carries the user's
last T training-visible events before its target (the same rule as the short history, so cold
items never enter it, and never the target or anything after it), reaching far beyond the
`max_history` window. It is stored per example row, int32 [n, T], repeated for the positive
and its negatives, because training batches and `predict` index every array by the same rows:
T is capped at `MAX_LONG_HISTORY` = 512, i.e. at most 2 KiB per row (MovieLens 100k with 40k
training positives x 5 rows at T = 256: 205 MB). SID codes of these events are looked up
inside the ranker (from a code table it holds), never materialised as [n, T, c].

Everything is in catalog rows (row r = `catalog.item_ids[r]`); -1 pads. Shape letters: n
examples, h history length, T long-history length, c SID level, f user fields, u users,
e events.
"""

from __future__ import annotations

import dataclasses
from typing import Mapping, Sequence

import numpy as np

from lrm.core.errors import ConfigError, DataError
from lrm.data.splits import cold_start_split
from lrm.data.types import Catalog, Sequences, UserTable

BINARY_TASKS = ("click", "like", "order", "follow")
MAX_LONG_HISTORY = 512   # the per-row long history is int32 [n, T]: at most 2 KiB per row
REGRESSION_TASKS = ("watch_time", "rating")
TASKS = BINARY_TASKS + REGRESSION_TASKS


@dataclasses.dataclass(frozen=True, eq=False)
class RankingData:
  """Ranking examples.

  Attributes:
    user: int32 [n] user rows (within the source Sequences).
    history: int32 [n, h] catalog rows of the user's earlier items, left-padded with -1.
    candidate: int32 [n] catalog row (or room row) of the candidate.
    labels: task -> float32 [n].
    masks: task -> float32 [n], 1 where the label is known.
    cold: bool [n], the candidate is a cold item.
    slice: int32 [n], the room's content slice at the impression (-1 for plain items).
    user_features: int32 [n, f] codes of the user's attributes (0 = missing), or None.
    counts: int32 [n, c + 1] interaction counts (levels 1..c, then the same item), or None.
    long_history: int32 [n, T] catalog rows of the user's last T visible events before the
      target, left-padded with -1, or None (module docstring).
  """
  user: np.ndarray
  history: np.ndarray
  candidate: np.ndarray
  labels: Mapping[str, np.ndarray]
  masks: Mapping[str, np.ndarray]
  cold: np.ndarray
  slice: np.ndarray | None = None
  user_features: np.ndarray | None = None
  counts: np.ndarray | None = None
  long_history: np.ndarray | None = None

  def __post_init__(self):
    n = len(self.user)
    if self.history.ndim != 2 or len(self.history) != n or self.candidate.shape != (n,):
      raise DataError(f"ranking arrays disagree: user {self.user.shape}, history "
                      f"{self.history.shape}, candidate {self.candidate.shape}")
    for name in self.labels:
      if name not in TASKS:
        raise DataError(f"unknown task '{name}'; known: {list(TASKS)}")
      if self.labels[name].shape != (n,) or self.masks[name].shape != (n,):
        raise DataError(f"label '{name}' must have shape ({n},)")
    if self.slice is None:
      object.__setattr__(self, "slice", np.full(n, -1, np.int32))
    for name in ("user_features", "counts", "long_history"):
      value = getattr(self, name)
      if value is not None and (value.ndim != 2 or len(value) != n):
        raise DataError(f"{name} must have shape ({n}, k), got {value.shape}")

  def __len__(self) -> int:
    return len(self.user)

  @property
  def tasks(self) -> tuple[str, ...]:
    return tuple(t for t in TASKS if t in self.labels)

  def take(self, rows: np.ndarray) -> "RankingData":
    pick = lambda a: None if a is None else a[rows]
    return RankingData(user=self.user[rows], history=self.history[rows],
                       candidate=self.candidate[rows],
                       labels={k: v[rows] for k, v in self.labels.items()},
                       masks={k: v[rows] for k, v in self.masks.items()}, cold=self.cold[rows],
                       slice=self.slice[rows], user_features=pick(self.user_features),
                       counts=pick(self.counts), long_history=pick(self.long_history))


# ------------------------------------------------------------------------------------------
# User attributes -> codes

# Fields read as zip / postal codes: coded by their first character (module docstring).
ZIP_FIELDS = ("zip_code", "zip", "zipcode", "postal_code")


@dataclasses.dataclass(frozen=True, eq=False)
class UserFeatures:
  """Categorical codes of the user attributes, aligned to the sequences' users.

  Attributes:
    names: field names, in the table's order.
    sizes: codes per field (including 0 = missing); the ranker's table sizes.
    codes: int32 [u, f].
  """
  names: tuple[str, ...]
  sizes: tuple[int, ...]
  codes: np.ndarray


def _is_number(v) -> bool:
  return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def quantile_codes(values: Sequence, num_buckets: int) -> tuple[np.ndarray, int]:
  """Numbers -> 1..num_buckets by quantiles of the present values (ties share a bucket, so
  fewer buckets where values repeat), None / NaN -> 0. Returns (codes [u], size)."""
  x = np.array([np.nan if v is None else float(v) for v in values], np.float64)
  present = np.isfinite(x)
  out = np.zeros(len(x), np.int32)
  if not present.any():
    return out, 1
  inner = np.quantile(x[present], np.arange(1, num_buckets) / num_buckets)
  edges = np.unique(inner)
  out[present] = 1 + np.searchsorted(edges, x[present], side="right")
  return out, len(edges) + 2


def vocabulary_codes(values: Sequence, max_vocab: int) -> tuple[np.ndarray, int]:
  """Strings -> 1.. by frequency (ties by value); beyond `max_vocab - 1` values, one shared
  rare code; None / "" -> 0. Returns (codes [u], size)."""
  keys = [None if v is None or v == "" else str(v) for v in values]
  counts: dict[str, int] = {}
  for k in keys:
    if k is not None:
      counts[k] = counts.get(k, 0) + 1
  ranked = sorted(counts, key=lambda k: (-counts[k], k))
  own = ranked if len(ranked) <= max_vocab else ranked[:max_vocab - 1]
  code_of = {k: i + 1 for i, k in enumerate(own)}
  rare = len(own) + 1
  out = np.array([0 if k is None else code_of.get(k, rare) for k in keys], np.int32)
  return out, len(own) + 1 + int(len(own) < len(ranked))


def zip_area(value) -> str | None:
  """A zip code's first character if it is a digit (the US national area), else "non-US"."""
  if value is None or str(value).strip() == "":
    return None
  first = str(value).strip()[0]
  return first if first.isdigit() else "non-US"


def encode_user_features(users: UserTable, *, num_buckets: int = 8,
                         max_vocab: int = 64) -> UserFeatures:
  """Each field of `users` as small codes, 0 = missing (module docstring: the rules).

  A field is numeric when every present value is a number; zip fields (`ZIP_FIELDS`) go
  through `zip_area`; everything else through the vocabulary.
  """
  if num_buckets < 2:
    raise ConfigError("num_buckets", f"must be >= 2, got {num_buckets}")
  if max_vocab < 2:
    raise ConfigError("max_vocab", f"must be >= 2, got {max_vocab}")
  names, sizes, columns = [], [], []
  for name, values in users.fields.items():
    present = [v for v in values if v is not None]
    if name.lower() in ZIP_FIELDS:
      # At most 11 areas (10 digits + non-US): never capped by max_vocab.
      codes, size = vocabulary_codes([zip_area(v) for v in values], max(max_vocab, 12))
    elif present and all(_is_number(v) for v in present):
      codes, size = quantile_codes(values, num_buckets)
    else:
      codes, size = vocabulary_codes(values, max_vocab)
    names.append(name)
    sizes.append(size)
    columns.append(codes)
  codes = (np.stack(columns, 1) if columns else np.zeros((len(users), 0), np.int32))
  return UserFeatures(names=tuple(names), sizes=tuple(sizes), codes=codes.astype(np.int32))


# ------------------------------------------------------------------------------------------
# User-item interaction counts


def prefix_ids(item_codes: np.ndarray) -> np.ndarray:
  """Dense ids of each item's SID prefixes: column l numbers the distinct (code_1..code_l+1)
  prefixes; a last column is the item row itself.

  Shape: item_codes int [items, c] -> int64 [items, c + 1].
  """
  codes = np.asarray(item_codes, np.int64)
  out = np.empty((len(codes), codes.shape[1] + 1), np.int64)
  for level in range(codes.shape[1]):
    _, out[:, level] = np.unique(codes[:, :level + 1], axis=0, return_inverse=True)
  out[:, -1] = np.arange(len(codes))
  return out


def interaction_counts(rows: np.ndarray, user_of_event: np.ndarray, visible: np.ndarray,
                       prefixes: np.ndarray, events: np.ndarray, candidates: np.ndarray
                       ) -> np.ndarray:
  """Per query: the visible events of the event's user *before* it whose item shares the
  candidate's prefix, per column of `prefixes` (SID levels, then the item itself).

  `rows` are per-event catalog rows (flat, users contiguous and in time order), `visible` bool
  per event (training-visible: not a cold item), `prefixes` from `prefix_ids`; query i asks
  about candidate row `candidates[i]` at flat event `events[i]`. Each column sorts the keys
  (user, prefix) * (e + 1) + event of the visible events once, then two binary searches per
  query count the ones before it.

  Shape: rows, user_of_event, visible [e]; prefixes [items, k]; events, candidates [n]
  -> int32 [n, k].
  """
  n_ev = len(rows)
  vis = np.flatnonzero(visible)
  events = np.asarray(events, np.int64)
  candidates = np.asarray(candidates, np.int64)
  out = np.zeros((len(events), prefixes.shape[1]), np.int32)
  for col in range(prefixes.shape[1]):
    width = int(prefixes[:, col].max()) + 1 if len(prefixes) else 1
    group = lambda users, items: users.astype(np.int64) * width + prefixes[items, col]
    # (user, prefix) groups renumbered densely, so the keys stay far below 2**63.
    groups, gid = np.unique(group(user_of_event[vis], rows[vis]), return_inverse=True)
    keys = np.sort(gid.reshape(-1) * (n_ev + 1) + vis)
    query = group(user_of_event[events], candidates)
    at = np.minimum(np.searchsorted(groups, query), max(len(groups) - 1, 0))
    found = np.flatnonzero(groups[at] == query) if len(groups) else np.zeros(0, np.int64)
    base = at[found] * (n_ev + 1)
    out[found, col] = (np.searchsorted(keys, base + events[found])
                       - np.searchsorted(keys, base))
  return out


def count_buckets(counts: np.ndarray) -> np.ndarray:
  """log2 buckets of counts: 0 -> 0, 1 -> 1, 2-3 -> 2, 4-7 -> 3, ... (uncapped; the ranker
  clips to its table). Shape: -> int32, same shape."""
  c = np.asarray(counts, np.int64)
  out = np.zeros(c.shape, np.int32)
  pos = c > 0
  out[pos] = np.floor(np.log2(c[pos])).astype(np.int32) + 1
  return out


def left_padded_histories(rows: np.ndarray, user_of_event: np.ndarray, offsets: np.ndarray,
                          max_history: int, targets: np.ndarray, keep: np.ndarray | None = None) -> np.ndarray:
  """The up to `max_history` events before each target event, left-padded with -1.

  `rows` are per-event catalog rows, `targets` flat event indices; with `keep` (bool per event)
  only kept events enter a history.

  Shape: -> int32 [len(targets), max_history].
  """
  out = np.full((len(targets), max_history), -1, np.int32)
  for i, e in enumerate(targets):
    start = offsets[user_of_event[e]]
    prev = np.arange(start, e)
    if keep is not None:
      prev = prev[keep[prev]]
    prev = prev[-max_history:]
    if len(prev):
      out[i, max_history - len(prev):] = rows[prev]
  return out


def sample_negatives(positives: Sequence[np.ndarray], pool: np.ndarray, count: int, *,
                     seed: int) -> np.ndarray:
  """`count` negatives per user, drawn uniformly from `pool` minus that user's positives.

  `positives[u]` are every item row user u ever interacted with (train and evaluation), so a
  negative is never an item of the user. Users whose positives cover the whole pool raise.

  Shape: -> int32 [len(positives), count].
  """
  pool = np.unique(np.asarray(pool, np.int64))
  rng = np.random.default_rng(seed)
  out = np.empty((len(positives), count), np.int32)
  for u, pos in enumerate(positives):
    draw = rng.choice(pool, count * 2 + 8)
    bad = np.isin(draw, pos)
    while bad.sum() > len(draw) - count:
      allowed = np.setdiff1d(pool, pos)
      if len(allowed) == 0:
        raise DataError(f"user row {u} interacted with every item of the negative pool")
      draw = rng.choice(allowed, count)
      bad = np.zeros(count, bool)
    out[u] = draw[~bad][:count]
  return out


@dataclasses.dataclass(frozen=True, eq=False)
class ColdWarmSplit:
  """train / warm evaluation / cold evaluation examples, the cold item rows, and the user
  feature encoding the examples carry (None without user features)."""
  train: RankingData
  warm: RankingData
  cold: RankingData
  cold_rows: np.ndarray
  num_items: int
  user_features: "UserFeatures | None" = None


def _signal_labels(sequences: Sequences, events: np.ndarray) -> dict[str, np.ndarray]:
  """Post-impression labels of the given flat events, from the sequences' types and signals."""
  out: dict[str, np.ndarray] = {}
  if sequences.event_types is not None and sequences.event_type_names:
    names = list(sequences.event_type_names)
    types = sequences.event_types[events]
    if "like" in names:   # a like or anything after it (an order implies engagement)
      out["like"] = (types >= names.index("like")).astype(np.float32)
    if "order" in names:
      out["order"] = (types == names.index("order")).astype(np.float32)
  for name in ("watch_time", "rating"):
    if name in sequences.signals:
      value = sequences.signals[name][events].astype(np.float32)
      out[name] = (value - 1.0) / 4.0 if name == "rating" else value  # ratings 1..5 -> 0..1
  return out


@dataclasses.dataclass(frozen=True)
class _UserSide:
  """What the examples' user-side features are computed from (None = that feature off)."""
  user_features: np.ndarray | None = None   # int32 [u, f]
  prefixes: np.ndarray | None = None        # int64 [items, c + 1] from prefix_ids
  visible: np.ndarray | None = None         # bool [e], training-visible events


def _examples(sequences: Sequences, rows: np.ndarray, targets: np.ndarray, negatives: np.ndarray,
              histories: np.ndarray, user_of_event: np.ndarray, cold_mask: np.ndarray,
              side: _UserSide = _UserSide(), long_histories: np.ndarray | None = None
              ) -> RankingData:
  """One positive per target event plus its user's negatives (labels masked on negatives)."""
  k = negatives.shape[1]
  n = len(targets)
  user = user_of_event[targets]
  cand = np.concatenate([rows[targets][:, None], negatives], axis=1).reshape(-1)
  counts = None
  if side.prefixes is not None:
    counts = interaction_counts(rows, user_of_event, side.visible, side.prefixes,
                                np.repeat(targets, k + 1), cand)
  is_pos = np.tile(np.r_[1.0, np.zeros(k)], n).astype(np.float32)
  labels = {"click": is_pos}
  masks = {"click": np.ones_like(is_pos)}
  for name, value in _signal_labels(sequences, targets).items():
    labels[name] = np.concatenate([value[:, None], np.zeros((n, k), np.float32)], 1).reshape(-1)
    masks[name] = is_pos.copy()
  feats = (None if side.user_features is None
           else np.repeat(side.user_features[user], k + 1, axis=0).astype(np.int32))
  return RankingData(user=np.repeat(user, k + 1).astype(np.int32),
                     history=np.repeat(histories, k + 1, axis=0), candidate=cand.astype(np.int32),
                     labels=labels, masks=masks, cold=cold_mask[cand], user_features=feats,
                     counts=counts, long_history=None if long_histories is None else
                     np.repeat(long_histories, k + 1, axis=0))


def cold_warm_split(sequences: Sequences, catalog: Catalog, *, cold_fraction: float = 0.1,
                    max_history: int = 20, num_negatives: int = 4, eval_negatives: int = 20,
                    seed: int = 0, max_train_events: int | None = None,
                    user_features: "UserFeatures | None" = None,
                    count_codes: np.ndarray | None = None,
                    long_history: int = 0) -> ColdWarmSplit:
  """Training, warm and cold evaluation examples (module docstring: the protocol).

  Training positives are every warm event with at least one warm event before it, except each
  user's last warm event; `max_train_events` keeps a seeded random subset of them.
  `user_features` (from `encode_user_features`, row u = sequences user u) are copied onto
  each example; with `count_codes` (the items' SIDs, int [items, c]) each example
  gets its interaction counts (`interaction_counts`, visible = warm events). With
  `long_history` = T > 0 each example carries its user's last T warm events before the target
  (`RankingData.long_history`). None of these changes the examples themselves.
  """
  if num_negatives < 1 or eval_negatives < 1:
    raise ConfigError("num_negatives", "num_negatives and eval_negatives must be >= 1")
  if max_history < 1:
    raise ConfigError("max_history", f"must be >= 1, got {max_history}")
  if not 0 <= long_history <= MAX_LONG_HISTORY:
    raise ConfigError("long_history", f"must be in [0, {MAX_LONG_HISTORY}] (0 = off), got "
                      f"{long_history}")
  if user_features is not None and len(user_features.codes) != len(sequences):
    raise ConfigError("user_features", f"need one row per user ({len(sequences)}), got "
                      f"{len(user_features.codes)}")
  if count_codes is not None and (np.ndim(count_codes) != 2 or len(count_codes) != len(catalog)):
    raise ConfigError("count_codes", f"need one SID per catalog row ({len(catalog)}), got "
                      f"shape {np.shape(count_codes)}")
  split = cold_start_split(sequences, catalog, fraction=cold_fraction, seed=seed)
  row_of = catalog.row_of
  rows = np.array([row_of[int(i)] for i in sequences.items], np.int64)
  cold_rows = np.sort(catalog.rows(split.cold_items))
  cold_mask = np.zeros(len(catalog), bool)
  cold_mask[cold_rows] = True
  is_cold = cold_mask[rows]
  u_of = np.repeat(np.arange(len(sequences)), sequences.lengths)
  # Warm events of the same user before each event.
  cum = np.cumsum(~is_cold)
  warm_before = cum - (~is_cold) - (cum - (~is_cold))[sequences.offsets[u_of]]
  # Each user's last warm event and last cold event.
  last_warm = np.full(len(sequences), -1, np.int64)
  last_cold = np.full(len(sequences), -1, np.int64)
  for e in range(sequences.num_events):
    (last_cold if is_cold[e] else last_warm)[u_of[e]] = e
  warm_targets = last_warm[(last_warm >= 0)]
  warm_targets = warm_targets[warm_before[warm_targets] > 0]
  cold_targets = last_cold[last_cold >= 0]
  cold_targets = cold_targets[warm_before[cold_targets] > 0]
  is_last_warm = np.zeros(sequences.num_events, bool)
  is_last_warm[last_warm[last_warm >= 0]] = True
  train_targets = np.flatnonzero(~is_cold & ~is_last_warm & (warm_before > 0))
  if max_train_events is not None and len(train_targets) > max_train_events:
    keep = np.random.default_rng([seed, 1]).choice(len(train_targets), max_train_events,
                                                   replace=False)
    train_targets = np.sort(train_targets[keep])
  # The cold evaluation set is exactly cold_start_split's test set (same targets).
  if not np.array_equal(np.sort(sequences.items[cold_targets]),
                        np.sort(split.test.targets)):
    raise DataError("cold evaluation targets disagree with cold_start_split's test set")
  positives = [np.unique(rows[sequences.offsets[u]:sequences.offsets[u + 1]])
               for u in range(len(sequences))]
  warm_pool = np.flatnonzero(~cold_mask)
  warm_pool = warm_pool[np.isin(warm_pool, rows[~is_cold])]   # items with training events

  warm_only = ~is_cold
  side = _UserSide(
      user_features=None if user_features is None else user_features.codes,
      prefixes=None if count_codes is None else prefix_ids(count_codes), visible=warm_only)

  def build(targets, pool, k, stream, keep):
    hist, long = _histories(rows, u_of, sequences.offsets, max_history, long_history, targets,
                            keep)
    neg_users = sample_negatives(positives, pool, k, seed=seed * 7919 + stream)
    return _examples(sequences, rows, targets, neg_users[u_of[targets]], hist, u_of, cold_mask,
                     side, long)

  # Negatives per user are drawn once per set; for training, each event needs its own draw.
  train = _train_examples(sequences, rows, train_targets, positives, warm_pool, num_negatives,
                          seed, max_history, u_of, warm_only, cold_mask, side, long_history)
  return ColdWarmSplit(train=train,
                       warm=build(warm_targets, warm_pool, eval_negatives, 2, warm_only),
                       cold=build(cold_targets, cold_rows, eval_negatives, 3, warm_only),
                       cold_rows=cold_rows, num_items=len(catalog),
                       user_features=user_features)


def _histories(rows, u_of, offsets, max_history, long_history, targets, keep
               ) -> tuple[np.ndarray, np.ndarray | None]:
  """Short [len(targets), h] and long [len(targets), T] (None when T = 0) histories; one
  pass of the longer, the shorter being its last columns."""
  width = max(max_history, long_history)
  hist = left_padded_histories(rows, u_of, offsets, width, targets, keep=keep)
  return (np.ascontiguousarray(hist[:, width - max_history:]),
          np.ascontiguousarray(hist[:, width - long_history:]) if long_history else None)


def _train_examples(sequences, rows, targets, positives, pool, k, seed, max_history, u_of,
                    keep, cold_mask, side, long_history=0) -> RankingData:
  """Training examples: each target event with its own `k` fresh negatives."""
  rng = np.random.default_rng([seed, 4])
  pool = np.asarray(pool, np.int64)
  draws = rng.choice(pool, (len(targets), k))
  for i, e in enumerate(targets):   # redraw the (rare) negatives that hit a user's positive
    bad = np.isin(draws[i], positives[u_of[e]])
    while bad.any():
      draws[i, bad] = rng.choice(pool, int(bad.sum()))
      bad = np.isin(draws[i], positives[u_of[e]])
  hist, long = _histories(rows, u_of, sequences.offsets, max_history, long_history, targets,
                          keep)
  return _examples(sequences, rows, targets, draws.astype(np.int32), hist, u_of, cold_mask,
                   side, long)


# ------------------------------------------------------------------------------------------
# Live rooms of the synthetic world (dynamic content)


def topic_affinity(leaf_path: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
  """Shared depth of two leaf topics' paths / depth (1 = same leaf, 0 = other category)."""
  return (leaf_path[a] == leaf_path[b]).sum(axis=1) / leaf_path.shape[1]


def room_examples(sequences: Sequences, catalog: Catalog, *, leaf_path: np.ndarray,
                  user_interest: np.ndarray, room_slice_topics: np.ndarray, num_examples: int,
                  max_history: int = 20, seed: int = 0) -> RankingData:
  """Users meeting live rooms at random slices; `follow` and `watch_time` depend on the slice.

  `user_interest[u]` is user u's interest topic at their last event (the world's truth); the
  history is their last `max_history` items. An impression shows room r at slice s chosen
  uniformly; with a = affinity(slice topic, interest): watch_time = 0.15 + 0.6 a + noise
  (clipped to [0, 1], as the world's own watch time), follow ~ Bernoulli(sigmoid(8 (a - 0.6))).
  Rooms are chosen half uniformly and half among rooms whose dominant topic shares the user's
  category, so positives are not too rare.

  Shape: leaf_path int [l, depth], user_interest int [u], room_slice_topics int [r, s].
  """
  if num_examples < 1:
    raise ConfigError("num_examples", f"must be >= 1, got {num_examples}")
  rng = np.random.default_rng([seed, 11])
  r, s = room_slice_topics.shape
  row_of = catalog.row_of
  rows = np.array([row_of[int(i)] for i in sequences.items], np.int64)
  u = rng.integers(0, len(sequences), num_examples)
  dominant = np.array([np.bincount(t).argmax() for t in room_slice_topics])
  top_of_room = leaf_path[dominant, 0]
  room = rng.integers(0, r, num_examples)
  near = rng.random(num_examples) < 0.5
  for i in np.flatnonzero(near):
    same = np.flatnonzero(top_of_room == leaf_path[user_interest[u[i]], 0])
    if len(same):
      room[i] = same[rng.integers(len(same))]
  slc = rng.integers(0, s, num_examples)
  a = topic_affinity(leaf_path, room_slice_topics[room, slc], user_interest[u])
  watch = np.clip(0.15 + 0.6 * a + rng.normal(0, 0.1, num_examples), 0, 1).astype(np.float32)
  follow = (rng.random(num_examples) < 1 / (1 + np.exp(-8 * (a - 0.6)))).astype(np.float32)
  ends = sequences.offsets[u + 1]
  hist = left_padded_histories(rows, np.repeat(np.arange(len(sequences)), sequences.lengths),
                               sequences.offsets, max_history, ends - 1)
  # The history ends with the user's last event (included): append it.
  hist = np.concatenate([hist[:, 1:], rows[ends - 1][:, None].astype(np.int32)], axis=1)
  ones = np.ones(num_examples, np.float32)
  return RankingData(user=u.astype(np.int32), history=hist, candidate=room.astype(np.int32),
                     labels={"follow": follow, "watch_time": watch},
                     masks={"follow": ones, "watch_time": ones.copy()},
                     cold=np.zeros(num_examples, bool), slice=slc.astype(np.int32))
