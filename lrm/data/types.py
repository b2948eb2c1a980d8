"""The two tables every stage reads: an item catalog and users' interaction sequences, plus an
optional table of user attributes.

Item and user ids are the integers of the source files (1-based in `../shared/data`); arrays are
in *catalog order* (row r is item `catalog.item_ids[r]`). Sequences are stored flat, CSR-style
(`offsets` into one `items` array), so millions of events and 32k-long histories cost one array
each rather than one Python list per user. User attributes (age, gender, occupation, zip code:
what MovieLens ships) live in a `UserTable` that a Dataset keeps aligned to its sequences' users,
so row u of either is the same user and no stage needs an id lookup.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from lrm.core.errors import DataError

# Text fields rendered into an item's text, in this order, when present.
DEFAULT_TEXT_FIELDS = ("title", "brand", "categories")


@dataclasses.dataclass(frozen=True, eq=False)
class Catalog:
  """Items: ids, per-item fields (text, categories, ...), optional embeddings and timestamps.

  Attributes:
    item_ids: int64 [n], unique.
    fields: name -> list of n values (str, list of str, number or None), e.g. `title`,
      `brand`, `categories` (a list, coarse to fine).
    embeddings: modality -> float32 [n, d], precomputed content embeddings.
    timestamps: float64 [n] (e.g. release or creation time, unix seconds) or None.
  """
  item_ids: np.ndarray
  fields: Mapping[str, list[Any]] = dataclasses.field(default_factory=dict)
  embeddings: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
  timestamps: np.ndarray | None = None

  def __post_init__(self):
    ids = np.asarray(self.item_ids, dtype=np.int64)
    object.__setattr__(self, "item_ids", ids)
    if ids.ndim != 1:
      raise DataError(f"item_ids must be 1-d, got shape {ids.shape}")
    n = len(ids)
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != n:
      dup = uniq[counts > 1][:5].tolist()
      raise DataError(f"duplicate item ids in catalog: {dup}")
    for name, values in self.fields.items():
      if len(values) != n:
        raise DataError(f"catalog field '{name}' has {len(values)} values for {n} items")
    embs = {}
    for name, emb in self.embeddings.items():
      emb = np.asarray(emb, dtype=np.float32)
      if emb.ndim != 2 or emb.shape[0] != n:
        raise DataError(f"embeddings '{name}' have shape {emb.shape}, expected ({n}, d)")
      if not np.isfinite(emb).all():
        bad = np.flatnonzero(~np.isfinite(emb).all(axis=1))[:5]
        raise DataError(f"embeddings '{name}' contain NaN or inf in rows {bad.tolist()} "
                        f"(item ids {ids[bad].tolist()})")
      embs[name] = emb
    object.__setattr__(self, "embeddings", embs)
    if self.timestamps is not None:
      ts = np.asarray(self.timestamps, dtype=np.float64)
      if ts.shape != (n,):
        raise DataError(f"catalog timestamps have shape {ts.shape}, expected ({n},)")
      object.__setattr__(self, "timestamps", ts)

  def __len__(self) -> int:
    return len(self.item_ids)

  @property
  def row_of(self) -> dict[int, int]:
    """item id -> catalog row (built once, cached)."""
    cached = self.__dict__.get("_row_of")
    if cached is None:
      cached = {int(i): r for r, i in enumerate(self.item_ids)}
      object.__setattr__(self, "_row_of", cached)
    return cached

  def rows(self, item_ids: Sequence[int] | np.ndarray, *, what: str = "item") -> np.ndarray:
    """Catalog rows of `item_ids`; raises DataError naming the first unknown id."""
    ids = np.asarray(item_ids, dtype=np.int64)
    # Vectorised lookup via a sorted copy of the ids.
    order = np.argsort(self.item_ids, kind="stable")
    sorted_ids = self.item_ids[order]
    pos = np.searchsorted(sorted_ids, ids)
    pos = np.clip(pos, 0, max(len(sorted_ids) - 1, 0))
    ok = (sorted_ids[pos] == ids) if len(sorted_ids) else np.zeros(ids.shape, bool)
    if not ok.all():
      bad = ids[~ok][:5].tolist()
      raise DataError(f"unknown {what} ids (not in catalog): {bad}")
    return order[pos]

  def text(self, fields: Sequence[str] = DEFAULT_TEXT_FIELDS, *, sep: str = "; ",
           list_sep: str = " > ") -> list[str]:
    """One string per item joining the present `fields` (lists joined by `list_sep`)."""
    cols = [self.fields[f] for f in fields if f in self.fields]
    out = []
    for r in range(len(self)):
      parts = []
      for col in cols:
        v = col[r]
        if v is None or v == "" or v == []:
          continue
        parts.append(list_sep.join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
      out.append(sep.join(parts))
    return out

  def leaf_category(self, field: str = "categories") -> np.ndarray:
    """Int label per item of its finest category (-1 if none), for sanity metrics."""
    if field not in self.fields:
      raise DataError(f"catalog has no field '{field}'")
    vocab: dict[str, int] = {}
    out = np.full(len(self), -1, np.int64)
    for r, v in enumerate(self.fields[field]):
      if isinstance(v, (list, tuple)) and v:
        out[r] = vocab.setdefault(str(v[-1]), len(vocab))
      elif isinstance(v, str) and v:
        out[r] = vocab.setdefault(v, len(vocab))
    return out

  def take(self, rows: np.ndarray) -> "Catalog":
    rows = np.asarray(rows, dtype=np.int64)
    return Catalog(
        item_ids=self.item_ids[rows],
        fields={k: [v[r] for r in rows] for k, v in self.fields.items()},
        embeddings={k: v[rows] for k, v in self.embeddings.items()},
        timestamps=None if self.timestamps is None else self.timestamps[rows])

  def with_embeddings(self, **embeddings: np.ndarray) -> "Catalog":
    return dataclasses.replace(self, embeddings={**self.embeddings, **embeddings})


@dataclasses.dataclass(frozen=True, eq=False)
class Sequences:
  """Per-user chronological interaction sequences, stored flat (CSR).

  User u's events are `items[offsets[u]:offsets[u+1]]`, oldest first.

  Attributes:
    user_ids: int64 [u], unique.
    offsets: int64 [u + 1], non-decreasing, offsets[0] == 0, offsets[-1] == n.
    items: int64 [n] item ids.
    timestamps: float64 [n] or None (unix seconds, or any increasing clock).
    event_types: int32 [n] or None, indices into `event_type_names`.
    event_type_names: names of event types (e.g. ("view", "like", "order")).
    signals: name -> float32 [n] numeric signals per event (rating, watch time, ...).
  """
  user_ids: np.ndarray
  offsets: np.ndarray
  items: np.ndarray
  timestamps: np.ndarray | None = None
  event_types: np.ndarray | None = None
  event_type_names: tuple[str, ...] = ()
  signals: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    users = np.asarray(self.user_ids, dtype=np.int64)
    offsets = np.asarray(self.offsets, dtype=np.int64)
    items = np.asarray(self.items, dtype=np.int64)
    object.__setattr__(self, "user_ids", users)
    object.__setattr__(self, "offsets", offsets)
    object.__setattr__(self, "items", items)
    if users.ndim != 1 or offsets.shape != (len(users) + 1,):
      raise DataError(f"offsets must have shape ({len(users) + 1},), got {offsets.shape}")
    if offsets[0] != 0 or offsets[-1] != len(items) or (np.diff(offsets) < 0).any():
      raise DataError("offsets must start at 0, end at len(items) and never decrease")
    uniq, counts = np.unique(users, return_counts=True)
    if len(uniq) != len(users):
      raise DataError(f"duplicate user ids: {uniq[counts > 1][:5].tolist()}")
    n = len(items)
    if self.timestamps is not None:
      ts = np.asarray(self.timestamps, dtype=np.float64)
      if ts.shape != (n,):
        raise DataError(f"timestamps have shape {ts.shape}, expected ({n},)")
      if not np.isfinite(ts).all():
        raise DataError("timestamps contain NaN or inf")
      object.__setattr__(self, "timestamps", ts)
    if self.event_types is not None:
      et = np.asarray(self.event_types, dtype=np.int32)
      if et.shape != (n,):
        raise DataError(f"event_types have shape {et.shape}, expected ({n},)")
      if n and (et.min() < 0 or et.max() >= len(self.event_type_names)):
        raise DataError(f"event_types out of range for names {self.event_type_names}")
      object.__setattr__(self, "event_types", et)
    sig = {}
    for name, v in self.signals.items():
      v = np.asarray(v, dtype=np.float32)
      if v.shape != (n,):
        raise DataError(f"signal '{name}' has shape {v.shape}, expected ({n},)")
      sig[name] = v
    object.__setattr__(self, "signals", sig)
    object.__setattr__(self, "event_type_names", tuple(self.event_type_names))

  @classmethod
  def from_lists(cls, user_ids: Sequence[int], item_lists: Sequence[Sequence[int]],
                 **per_event: Any) -> "Sequences":
    """Builds from one list per user; `per_event` values (timestamps=, signals=) are lists too."""
    lengths = np.array([len(x) for x in item_lists], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    flat = lambda lists: np.concatenate([np.asarray(x) for x in lists]) if len(lists) else np.zeros(0)
    items = flat(item_lists).astype(np.int64) if len(item_lists) else np.zeros(0, np.int64)
    kw: dict[str, Any] = {}
    if per_event.get("timestamps") is not None:
      kw["timestamps"] = flat(per_event["timestamps"])
    if per_event.get("event_types") is not None:
      kw["event_types"] = flat(per_event["event_types"])
      kw["event_type_names"] = per_event["event_type_names"]
    if per_event.get("signals"):
      kw["signals"] = {k: flat(v) for k, v in per_event["signals"].items()}
    return cls(user_ids=np.asarray(user_ids), offsets=offsets, items=items, **kw)

  def __len__(self) -> int:
    return len(self.user_ids)

  @property
  def num_events(self) -> int:
    return len(self.items)

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  def user(self, u: int) -> np.ndarray:
    """Item ids of the user at row u (a view, oldest first)."""
    return self.items[self.offsets[u]:self.offsets[u + 1]]

  def __iter__(self) -> Iterator[np.ndarray]:
    for u in range(len(self)):
      yield self.user(u)

  def event_rows(self, user_rows: np.ndarray) -> np.ndarray:
    """Flat event indices of the given users, concatenated in the given order."""
    user_rows = np.asarray(user_rows, dtype=np.int64)
    starts, ends = self.offsets[user_rows], self.offsets[user_rows + 1]
    lens = ends - starts
    if lens.sum() == 0:
      return np.zeros(0, np.int64)
    return np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(lens.sum())

  def take_users(self, user_rows: np.ndarray) -> "Sequences":
    """The sequences of a subset of users (rows), in the given order."""
    user_rows = np.asarray(user_rows, dtype=np.int64)
    ev = self.event_rows(user_rows)
    lens = self.lengths[user_rows]
    return self._with_events(self.user_ids[user_rows], np.concatenate([[0], np.cumsum(lens)]), ev)

  def select_events(self, keep: np.ndarray) -> "Sequences":
    """Keeps the events where the boolean mask `keep` [n] is true; users keep their rows."""
    keep = np.asarray(keep, dtype=bool)
    if keep.shape != (self.num_events,):
      raise DataError(f"event mask has shape {keep.shape}, expected ({self.num_events},)")
    csum = np.concatenate([[0], np.cumsum(keep)])
    return self._with_events(self.user_ids, csum[self.offsets], np.flatnonzero(keep))

  def _with_events(self, user_ids: np.ndarray, offsets: np.ndarray, ev: np.ndarray) -> "Sequences":
    return Sequences(
        user_ids=user_ids, offsets=offsets, items=self.items[ev],
        timestamps=None if self.timestamps is None else self.timestamps[ev],
        event_types=None if self.event_types is None else self.event_types[ev],
        event_type_names=self.event_type_names,
        signals={k: v[ev] for k, v in self.signals.items()})

  def check_items(self, catalog: Catalog, *, source: str | None = None) -> None:
    """Raises DataError naming the user of the first event whose item is not in `catalog`."""
    known = np.isin(self.items, catalog.item_ids)
    if not known.all():
      e = int(np.flatnonzero(~known)[0])
      u = int(np.searchsorted(self.offsets, e, side="right") - 1)
      raise DataError(f"user {int(self.user_ids[u])}: unknown item id {int(self.items[e])} "
                      f"(not in the catalog); {int((~known).sum())} such events in all",
                      path=source)


@dataclasses.dataclass(frozen=True, eq=False)
class UserTable:
  """Per-user attributes: one scalar value (str, int, float or None = missing) per user and field.

  Attributes:
    user_ids: int64 [u], unique.
    fields: name -> list of u values, e.g. `age` (int), `gender`, `occupation`, `zip_code` (str).
  """
  user_ids: np.ndarray
  fields: Mapping[str, list[Any]] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    ids = np.asarray(self.user_ids, dtype=np.int64)
    object.__setattr__(self, "user_ids", ids)
    if ids.ndim != 1:
      raise DataError(f"user_ids must be 1-d, got shape {ids.shape}")
    uniq, counts = np.unique(ids, return_counts=True)
    if len(uniq) != len(ids):
      raise DataError(f"duplicate user ids in the user table: {uniq[counts > 1][:5].tolist()}")
    fields = {}
    for name, values in self.fields.items():
      if name == "user_id":
        raise DataError("user field name 'user_id' is reserved for the id")
      values = list(values)
      if len(values) != len(ids):
        raise DataError(f"user field '{name}' has {len(values)} values for {len(ids)} users")
      bad = next((v for v in values if v is not None and (isinstance(v, bool) or not isinstance(
          v, (str, int, float, np.integer, np.floating)))), None)
      if bad is not None:
        raise DataError(f"user field '{name}': values must be str, int, float or None, got "
                        f"{bad!r}")
      fields[name] = [v.item() if isinstance(v, np.generic) else v for v in values]
    object.__setattr__(self, "fields", fields)

  def __len__(self) -> int:
    return len(self.user_ids)

  def align(self, user_ids: Sequence[int] | np.ndarray) -> "UserTable":
    """The table over `user_ids` in their order; users without a row get None everywhere.
    Users of this table that are not in `user_ids` are dropped."""
    ids = np.asarray(user_ids, dtype=np.int64)
    row_of = {int(u): r for r, u in enumerate(self.user_ids)}
    rows = [row_of.get(int(u), -1) for u in ids]
    return UserTable(user_ids=ids, fields={
        name: [values[r] if r >= 0 else None for r in rows]
        for name, values in self.fields.items()})


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """A catalog with the interaction sequences over it, and optionally user attributes.

  `users`, when given, is re-aligned to `sequences.user_ids` (row u = sequences user u; users
  without attributes get None); a user id that has no sequence raises DataError.
  """
  name: str
  catalog: Catalog
  sequences: Sequences
  meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  users: UserTable | None = None

  def __post_init__(self):
    if self.users is None:
      return
    unknown = ~np.isin(self.users.user_ids, self.sequences.user_ids)
    if unknown.any():
      raise DataError(f"user table holds ids with no sequence: "
                      f"{self.users.user_ids[unknown][:5].tolist()}")
    if not np.array_equal(self.users.user_ids, self.sequences.user_ids):
      object.__setattr__(self, "users", self.users.align(self.sequences.user_ids))

  def stats(self) -> dict[str, Any]:
    lens = self.sequences.lengths
    return {
        "users": len(self.sequences),
        "items": len(self.catalog),
        "interactions": int(self.sequences.num_events),
        "mean_length": float(lens.mean()) if len(lens) else 0.0,
        "median_length": float(np.median(lens)) if len(lens) else 0.0,
        "min_length": int(lens.min()) if len(lens) else 0,
        "max_length": int(lens.max()) if len(lens) else 0,
        "text_fields": sorted(self.catalog.fields),
        "embedding_modalities": sorted(self.catalog.embeddings),
        "has_timestamps": self.sequences.timestamps is not None,
    }
