"""SID tables: item ids with their semantic codes, the collision level, votes and stability.

A table maps each item (catalog order) to `L` semantic codes, level 0 the coarsest. TIGER
appends one more level so that items sharing all `L` semantic codes still get distinct full
codes: the collision level numbers the items of each group 0, 1, 2, ... Everything here is
plain NumPy, built offline; decoding reads the trie built from `full_codes` (lrm.sid.trie).

Shape letters: n items, c level (L semantic levels), k codebook size, p parents, w windows.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Sequence

import numpy as np

from lrm.core import artifacts
from lrm.core.errors import DataError

TABLE_JSON = "table.json"
CODES_NPY = "codes.npy"
ITEM_IDS_NPY = "item_ids.npy"
STAGE = "sid_table"


# ------------------------------------------------------------------------------------------
# Validation helpers


def check_codes(codes: Any, codebook_sizes: Sequence[int] | None = None, *,
                name: str = "codes", path: str | os.PathLike | None = None,
                allow_missing: bool = False) -> np.ndarray:
  """Returns `codes` as int32 [n, L] after checking ndim, dtype and ranges (DataError names `name`).

  With `allow_missing`, -1 entries are accepted (missing windows or slices).

  Shape:
    codes: [n, L]
  """
  arr = np.asarray(codes)
  if arr.ndim != 2:
    raise DataError(f"{name} must be 2-d [items, levels], got shape {arr.shape}", path=path)
  if arr.size and not np.issubdtype(arr.dtype, np.integer):
    raise DataError(f"{name} must be integers, got dtype {arr.dtype}", path=path)
  arr = arr.astype(np.int64, copy=False)
  low = -1 if allow_missing else 0
  if arr.size and arr.min() < low:
    r, c = np.argwhere(arr < low)[0]
    raise DataError(f"{name} has a negative code {int(arr[r, c])} at row {r}, level {c}",
                    path=path)
  if codebook_sizes is not None:
    sizes = tuple(int(k) for k in codebook_sizes)
    if len(sizes) != arr.shape[1]:
      raise DataError(f"{name} has {arr.shape[1]} levels but codebook_sizes has {len(sizes)}: "
                      f"{sizes}", path=path)
    if any(k < 1 for k in sizes):
      raise DataError(f"codebook_sizes must be positive, got {sizes}", path=path)
    if arr.size:
      over = arr >= np.asarray(sizes, np.int64)[None, :]
      if over.any():
        r, c = np.argwhere(over)[0]
        raise DataError(f"{name} has code {int(arr[r, c])} at row {r}, level {c}, not below "
                        f"the codebook size {sizes[c]}", path=path)
  if arr.size and arr.max() > np.iinfo(np.int32).max:
    raise DataError(f"{name} has codes beyond int32", path=path)
  return arr.astype(np.int32)


def _check_ids(item_ids: Any, n: int | None = None, *, name: str = "item_ids",
               path: str | os.PathLike | None = None) -> np.ndarray:
  ids = np.asarray(item_ids)
  if ids.ndim != 1:
    raise DataError(f"{name} must be 1-d, got shape {ids.shape}", path=path)
  if ids.size and not np.issubdtype(ids.dtype, np.integer):
    raise DataError(f"{name} must be integers, got dtype {ids.dtype}", path=path)
  ids = ids.astype(np.int64)
  if n is not None and len(ids) != n:
    raise DataError(f"{name} has {len(ids)} entries for {n} rows of codes", path=path)
  uniq, counts = np.unique(ids, return_counts=True)
  if len(uniq) != len(ids):
    raise DataError(f"duplicate {name}: {uniq[counts > 1][:5].tolist()}", path=path)
  return ids


def row_keys(codes: np.ndarray) -> np.ndarray | None:
  """One int64 per row, ordered as the rows are lexicographically, or None when the codes do
  not fit in 63 bits (or hold negatives). Sorting one integer column is several times faster
  than `np.lexsort` over L columns or `np.unique(axis=0)`, which compares rows as bytes.

  Shape:
    codes: [n, L] -> int64 [n]
  """
  codes = np.asarray(codes)
  if codes.size == 0 or codes.min() < 0:
    return None
  widths = [int(c.max()).bit_length() for c in codes.T]
  if sum(widths) > 63:
    return None
  key = np.zeros(len(codes), np.int64)
  for column, width in zip(codes.T, widths):
    key = (key << width) | column.astype(np.int64)
  return key


def lex_order(codes: np.ndarray) -> np.ndarray:
  """The stable lexicographic order of the rows (ties keep row order). Shape: [n, L] -> [n]."""
  codes = np.asarray(codes)
  key = row_keys(codes)
  if key is None:
    return np.lexsort(codes.T[::-1])
  return np.argsort(key, kind="stable")


def group_index(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Groups identical rows: returns (group of each row int64 [n], size of each group int64 [g]).

  Groups are numbered in lexicographic order of their codes.

  Shape:
    codes: [n, L]
  """
  groups, counts, _ = _grouped(codes)
  return groups, counts


def _grouped(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """`group_index` plus the stable lexicographic order of the rows it sorted by."""
  codes = np.asarray(codes)
  n = codes.shape[0]
  if n == 0:
    return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
  if codes.shape[1] == 0:
    return np.zeros(n, np.int64), np.array([n], np.int64), np.arange(n)
  order = lex_order(codes)
  ordered = codes[order]
  starts = np.r_[True, (ordered[1:] != ordered[:-1]).any(axis=1)]
  groups = np.empty(n, np.int64)
  groups[order] = np.cumsum(starts) - 1
  return groups, np.diff(np.r_[np.flatnonzero(starts), n]).astype(np.int64), order


def _rank_in_group(groups: np.ndarray, order: np.ndarray) -> np.ndarray:
  """Rank of each row within its group, rows visited in `order` (a permutation of rows)."""
  n = len(groups)
  rank = np.zeros(n, np.int64)
  if n == 0:
    return rank
  g = groups[order]
  perm = np.argsort(g, kind="stable")         # by group, `order` kept within a group
  sorted_g = g[perm]
  starts = np.flatnonzero(np.r_[True, sorted_g[1:] != sorted_g[:-1]])
  run_start = np.repeat(starts, np.diff(np.r_[starts, n]))
  rank[order[perm]] = np.arange(n) - run_start
  return rank


# ------------------------------------------------------------------------------------------
# The table


@dataclasses.dataclass(frozen=True, eq=False)
class SIDTable:
  """Items and their Semantic IDs.

  Attributes:
    item_ids: int64 [n], unique, catalog order.
    codes: int32 [n, L], the semantic levels (level 0 coarsest).
    codebook_sizes: the codebook size of each semantic level (length L).
    collision: int32 [n] or None: the collision level (TIGER's extra level), numbering the
      items that share all L semantic codes 0, 1, 2, ...
    collision_size: the collision level's codebook size (the largest group), 0 without one.
    use_collision: whether `full_codes` includes the collision level (switch it with
      `set_collision`).
  """
  item_ids: np.ndarray
  codes: np.ndarray
  codebook_sizes: tuple[int, ...]
  collision: np.ndarray | None = None
  collision_size: int = 0
  use_collision: bool = True

  def __post_init__(self):
    codes = check_codes(self.codes, self.codebook_sizes)
    object.__setattr__(self, "codes", codes)
    object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
    object.__setattr__(self, "item_ids", _check_ids(self.item_ids, len(codes)))
    if self.collision is not None:
      col = np.asarray(self.collision)
      if col.shape != (len(codes),):
        raise DataError(f"collision must have shape ({len(codes)},), got {col.shape}")
      col = col.astype(np.int64)
      size = int(self.collision_size)
      if col.size and (col.min() < 0 or col.max() >= size):
        raise DataError(f"collision codes must lie in [0, collision_size={size}), got range "
                        f"[{col.min()}, {col.max()}]")
      object.__setattr__(self, "collision", col.astype(np.int32))
      object.__setattr__(self, "collision_size", size)
    else:
      object.__setattr__(self, "collision_size", 0)

  # --- shapes

  @property
  def num_items(self) -> int:
    return len(self.item_ids)

  @property
  def num_semantic_levels(self) -> int:
    return self.codes.shape[1]

  @property
  def has_collision(self) -> bool:
    return self.collision is not None and self.use_collision

  @property
  def num_levels(self) -> int:
    """Levels of `full_codes`: L, plus one with the collision level switched on."""
    return self.num_semantic_levels + int(self.has_collision)

  @property
  def full_codes(self) -> np.ndarray:
    """int32 [n, L] or [n, L + 1] (the collision level last, when present and switched on)."""
    if not self.has_collision:
      return self.codes
    return np.concatenate([self.codes, self.collision[:, None]], axis=1)

  @property
  def full_codebook_sizes(self) -> tuple[int, ...]:
    extra = (max(self.collision_size, 1),) if self.has_collision else ()
    return self.codebook_sizes + extra

  def set_collision(self, enabled: bool) -> "SIDTable":
    """The same table with the collision level switched on or off (kept either way)."""
    return dataclasses.replace(self, use_collision=bool(enabled))

  # --- views

  def truncate(self, k: int) -> "SIDTable":
    """The first `k` semantic levels (Beyond Item IDs' depth truncation); no collision level."""
    L = self.num_semantic_levels
    if not 1 <= k <= L:
      raise DataError(f"truncate: k must lie in [1, {L}], got {k}")
    return SIDTable(item_ids=self.item_ids, codes=self.codes[:, :k],
                    codebook_sizes=self.codebook_sizes[:k])

  def row_of(self, item_ids: Any) -> np.ndarray:
    """Row of each item id in the table (int64 [m]; -1 for unknown ids)."""
    q = np.asarray(item_ids, np.int64).reshape(-1)
    if self.num_items == 0:
      return np.full(len(q), -1, np.int64)
    order = np.argsort(self.item_ids, kind="stable")
    sorted_ids = self.item_ids[order]
    pos = np.clip(np.searchsorted(sorted_ids, q), 0, len(sorted_ids) - 1)
    return np.where(sorted_ids[pos] == q, order[pos], -1).astype(np.int64)

  def lookup(self, codes: Any) -> np.ndarray:
    """Item ids of full codes: int64 [m], -1 where no item has the code.

    `codes` has `num_levels` columns (the full code). Where several items share a code (no
    collision level), the first in catalog order is returned.

    Shape:
      codes: [m, num_levels]
    """
    q = np.asarray(codes)
    if q.ndim == 1:
      q = q[None, :]
    if q.ndim != 2 or q.shape[1] != self.num_levels:
      raise DataError(f"lookup: codes must have shape [m, {self.num_levels}], got {q.shape}")
    q = q.astype(np.int64)
    full = self.full_codes.astype(np.int64)
    if len(full) == 0:
      return np.full(len(q), -1, np.int64)
    sizes = np.asarray(self.full_codebook_sizes, np.int64)
    inside = ((q >= 0) & (q < sizes[None, :])).all(axis=1)
    if float(np.prod(sizes.astype(np.float64))) < 2.0 ** 62:
      # Mixed-radix keys: one int64 per code, order-preserving.
      radix = np.cumprod(np.r_[sizes[1:], 1][::-1])[::-1]
      table_keys, query_keys = full @ radix, np.where(inside[:, None], q, 0) @ radix
      order = np.argsort(table_keys, kind="stable")
      table_keys = table_keys[order]
    else:
      # Huge code spaces: rank table and query rows together lexicographically.
      order = np.lexsort(full.T[::-1])
      _, inv = np.unique(np.concatenate([full[order], q]), axis=0, return_inverse=True)
      inv = inv.reshape(-1)
      table_keys, query_keys = inv[:len(full)], inv[len(full):]
    pos = np.clip(np.searchsorted(table_keys, query_keys, side="left"), 0, len(full) - 1)
    hit = inside & (table_keys[pos] == query_keys)
    return np.where(hit, self.item_ids[order[pos]], -1).astype(np.int64)

  # --- growth

  def extend(self, new_item_ids: Any, new_codes: Any) -> "SIDTable":
    """Appends new items; old rows (and their collision codes) stay exactly as they were.

    A new item's collision code continues its group's numbering: one more than the largest
    collision code in its group so far (old items first, then new ones in the given order).

    Shape:
      new_item_ids: [m]
      new_codes: [m, L]
    """
    new_codes = check_codes(new_codes, self.codebook_sizes, name="new_codes")
    new_ids = _check_ids(new_item_ids, len(new_codes), name="new_item_ids")
    clash = np.intersect1d(new_ids, self.item_ids)
    if len(clash):
      raise DataError(f"new_item_ids already in the table: {clash[:5].tolist()}")
    ids = np.concatenate([self.item_ids, new_ids])
    codes = np.concatenate([self.codes, new_codes], axis=0)
    if self.collision is None:
      return dataclasses.replace(self, item_ids=ids, codes=codes)
    n_old = self.num_items
    groups, counts = group_index(codes)
    top = np.full(len(counts), -1, np.int64)
    np.maximum.at(top, groups[:n_old], self.collision.astype(np.int64))
    new_groups = groups[n_old:]
    rank = _rank_in_group(new_groups, np.arange(len(new_groups)))
    new_col = top[new_groups] + 1 + rank
    collision = np.concatenate([self.collision.astype(np.int64), new_col])
    size = max(self.collision_size, int(collision.max()) + 1 if len(collision) else 1)
    return dataclasses.replace(self, item_ids=ids, codes=codes, collision=collision,
                               collision_size=size)

  # --- disk

  def save(self, directory: str | os.PathLike, *, config: Any = None,
           **extra: Any) -> dict[str, Any]:
    """Writes codes.npy (full codes, collision level last if any), item_ids.npy, table.json and
    manifest.json (last), each atomically. Returns the manifest."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stored = self.codes if self.collision is None else \
        np.concatenate([self.codes, self.collision[:, None]], axis=1)
    artifacts.save_npy(directory / CODES_NPY, stored.astype(np.int32))
    artifacts.save_npy(directory / ITEM_IDS_NPY, self.item_ids.astype(np.int64))
    meta = {"num_items": self.num_items, "num_semantic_levels": self.num_semantic_levels,
            "codebook_sizes": list(self.codebook_sizes),
            "collision_level": self.collision is not None,
            "collision_size": int(self.collision_size), "use_collision": self.use_collision}
    artifacts.atomic_write_json(directory / TABLE_JSON, meta)
    counts = {"items": self.num_items, "levels": self.num_semantic_levels,
              "distinct_codes": int(len(group_index(self.codes)[1]))}
    return artifacts.write_manifest(directory, stage=STAGE, config=config, counts=counts,
                                    **extra)

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "SIDTable":
    """Reads a table written by `save`; DataError names the file at fault."""
    directory = pathlib.Path(directory)
    artifacts.read_manifest(directory)
    meta_path = directory / TABLE_JSON
    if not meta_path.exists():
      raise DataError("missing", path=meta_path)
    meta = artifacts.read_json(meta_path)
    for key in ("num_semantic_levels", "codebook_sizes", "collision_level"):
      if key not in meta:
        raise DataError(f"no field '{key}'", path=meta_path)
    sizes = tuple(int(k) for k in meta["codebook_sizes"])
    L = int(meta["num_semantic_levels"])
    if len(sizes) != L:
      raise DataError(f"codebook_sizes has {len(sizes)} entries for {L} levels", path=meta_path)
    stored = _load_npy(directory / CODES_NPY)
    ids = _load_npy(directory / ITEM_IDS_NPY)
    with_col = bool(meta["collision_level"])
    width = L + int(with_col)
    if stored.ndim != 2 or stored.shape[1] != width:
      raise DataError(f"codes must have shape [n, {width}], got {stored.shape}",
                      path=directory / CODES_NPY)
    col_size = int(meta.get("collision_size", 0))
    full_sizes = sizes + ((max(col_size, 1),) if with_col else ())
    stored = check_codes(stored, full_sizes, name="codes", path=directory / CODES_NPY)
    ids = _check_ids(ids, len(stored), path=directory / ITEM_IDS_NPY)
    return cls(item_ids=ids, codes=stored[:, :L], codebook_sizes=sizes,
               collision=stored[:, L] if with_col else None, collision_size=col_size,
               use_collision=bool(meta.get("use_collision", True)))


def _load_npy(path: pathlib.Path) -> np.ndarray:
  if not path.exists():
    raise DataError("missing", path=path)
  try:
    return np.load(path, allow_pickle=False)
  except (ValueError, OSError) as e:
    raise DataError(f"unreadable .npy: {e}", path=path) from None


def with_collision_level(table: SIDTable, order: Any = None) -> SIDTable:
  """Appends TIGER's collision level: items sharing all L semantic codes get 0, 1, 2, ...

  Items are numbered in catalog order, or in `order` (a permutation of the rows: the first
  row listed gets 0, e.g. rows by decreasing popularity). The level's codebook size is the
  largest group. Any existing collision level is replaced.

  Shape:
    order: [n]
  """
  n = table.num_items
  if order is None:
    order = np.arange(n)
  else:
    order = np.asarray(order)
    if order.shape != (n,) or not np.issubdtype(order.dtype, np.integer) or \
        not np.array_equal(np.sort(order), np.arange(n)):
      raise DataError(f"order must be a permutation of the {n} rows, got shape {order.shape}")
    order = order.astype(np.int64)
  groups, counts, lex = _grouped(table.codes)
  if np.array_equal(order, np.arange(n)):
    # Catalog order: the stable sort already lists each group's rows in that order.
    collision = np.empty(n, np.int64)
    collision[lex] = np.arange(n) - np.repeat(np.cumsum(counts) - counts, counts)
  else:
    collision = _rank_in_group(groups, order)
  size = int(counts.max()) if len(counts) else 1
  return dataclasses.replace(table, collision=collision, collision_size=size,
                             use_collision=True)


# ------------------------------------------------------------------------------------------
# Majority vote (FLUID: room code from slice codes)


def _vote(parent: np.ndarray, code: np.ndarray, weight: np.ndarray | None,
          num_parents: int) -> np.ndarray:
  """Most frequent `code` per parent (ties: smallest code); -1 for parents with no votes."""
  out = np.full(num_parents, -1, np.int64)
  if len(parent) == 0:
    return out
  k = int(code.max()) + 1
  key = parent.astype(np.int64) * k + code
  uniq, inv = np.unique(key, return_inverse=True)
  w = np.ones(len(key)) if weight is None else weight
  count = np.bincount(inv.reshape(-1), weights=w, minlength=len(uniq))
  p, c = uniq // k, uniq % k
  best = np.lexsort((c, -count, p))          # by parent, then count down, then code up
  first = np.r_[True, p[best][1:] != p[best][:-1]]
  out[p[best][first]] = c[best][first]
  return out


def majority_vote(child_codes: Any, parent_index: Any, *, num_parents: int,
                  weights: Any = None, hierarchical: bool = True) -> np.ndarray:
  """Parent codes by majority vote of their children's codes (FLUID's room code from slices).

  Hierarchical (default): level 0 is the most common level-0 code among the parent's
  children; level c is the most common level-c code among the children that agree with the
  prefix chosen so far (all children if none agree, which cannot happen for a nonempty
  parent, since every chosen code came from an agreeing child). The result is therefore
  always the code of one of the children. With `hierarchical=False` every level votes
  independently over all children (the result may be no child's code). Ties go to the
  smallest code. `weights` (e.g. slice durations) weight the votes. Parents without children
  get -1 on every level.

  Shape:
    child_codes: [m, L]
    parent_index: [m], in [0, num_parents)
    weights: [m] or None
    returns: int32 [p, L]
  """
  codes = check_codes(child_codes, name="child_codes").astype(np.int64)
  parent = np.asarray(parent_index)
  if parent.shape != (len(codes),):
    raise DataError(f"parent_index must have shape ({len(codes)},), got {parent.shape}")
  if parent.size and not np.issubdtype(parent.dtype, np.integer):
    raise DataError(f"parent_index must be integers, got dtype {parent.dtype}")
  parent = parent.astype(np.int64)
  if num_parents < 0 or (parent.size and (parent.min() < 0 or parent.max() >= num_parents)):
    raise DataError(f"parent_index must lie in [0, num_parents={num_parents})")
  w = None
  if weights is not None:
    w = np.asarray(weights, np.float64)
    if w.shape != (len(codes),) or (w.size and (w.min() < 0 or not np.isfinite(w).all())):
      raise DataError(f"weights must be finite, non-negative, shape ({len(codes)},)")
  m, L = codes.shape
  out = np.full((num_parents, L), -1, np.int64)
  agree = np.ones(m, bool)
  for c in range(L):
    if hierarchical and c > 0:
      agree &= codes[:, c - 1] == out[parent, c - 1]
      has = np.zeros(num_parents, bool)
      has[parent[agree]] = True
      use = agree | ~has[parent]                 # fallback: all children of that parent
    else:
      use = np.ones(m, bool)
    out[:, c] = _vote(parent[use], codes[use, c], None if w is None else w[use], num_parents)
  return out.astype(np.int32)


# ------------------------------------------------------------------------------------------
# Dynamic SIDs (SSRLive: codes per item and time window)


def dynamic_sids(slice_codes: Any, item_index: Any, window_index: Any, *, num_items: int,
                 num_windows: int, weights: Any = None) -> np.ndarray:
  """Codes per (item, time window): the majority vote of the item's slices in that window.

  Windows without slices get -1 on every level.

  Shape:
    slice_codes: [m, L]
    item_index: [m], in [0, num_items)
    window_index: [m], in [0, num_windows)
    returns: int32 [n, w, L]
  """
  codes = check_codes(slice_codes, name="slice_codes")
  items = np.asarray(item_index, np.int64)
  windows = np.asarray(window_index, np.int64)
  for name, arr, hi in (("item_index", items, num_items), ("window_index", windows, num_windows)):
    if arr.shape != (len(codes),):
      raise DataError(f"{name} must have shape ({len(codes)},), got {arr.shape}")
    if arr.size and (arr.min() < 0 or arr.max() >= hi):
      raise DataError(f"{name} must lie in [0, {hi})")
  voted = majority_vote(codes, items * num_windows + windows,
                        num_parents=num_items * num_windows, weights=weights)
  return voted.reshape(num_items, num_windows, codes.shape[1])


def check_dynamic(codes: Any, *, name: str = "codes") -> np.ndarray:
  """int32 [n, w, L] codes with -1 for missing windows (a window is missing on all levels)."""
  arr = np.asarray(codes)
  if arr.ndim != 3:
    raise DataError(f"{name} must be 3-d [items, windows, levels], got shape {arr.shape}")
  flat = check_codes(arr.reshape(-1, arr.shape[2]), name=name, allow_missing=True)
  missing = flat < 0
  partial = missing.any(axis=1) & ~missing.all(axis=1)
  if partial.any():
    r = int(np.flatnonzero(partial)[0])
    raise DataError(f"{name}: item {r // arr.shape[1]}, window {r % arr.shape[1]} is missing "
                    f"on some levels only")
  return flat.reshape(arr.shape)


def forward_fill(codes: Any) -> np.ndarray:
  """Missing windows take the item's last present code (-1 before its first window).

  Shape:
    codes: [n, w, L]
  """
  codes = check_dynamic(codes)
  n, w, _ = codes.shape
  present = codes[:, :, 0] >= 0
  idx = np.where(present, np.arange(w)[None, :], -1)
  idx = np.maximum.accumulate(idx, axis=1)
  filled = np.take_along_axis(codes, np.maximum(idx, 0)[:, :, None], axis=1)
  return np.where((idx >= 0)[:, :, None], filled, -1).astype(np.int32)


def static_sids(codes: Any) -> np.ndarray:
  """One code per item: the majority vote over its present windows (-1 if none).

  Shape:
    codes: [n, w, L]
    returns: int32 [n, L]
  """
  codes = check_dynamic(codes)
  n, w, L = codes.shape
  flat = codes.reshape(-1, L)
  present = flat[:, 0] >= 0
  parent = np.repeat(np.arange(n), w)
  return majority_vote(flat[present], parent[present], num_parents=n)


def stability_report(old_codes: Any, new_codes: Any, *,
                     levels: int | None = None) -> dict[str, Any]:
  """How much two code assignments of the same items differ (e.g. two refits, two windows).

  Rows where either side is missing (-1) are skipped. `levels` compares the first levels only
  (default: all).

  Returns:
    {"num_items", "num_compared", "levels", "changed" (share of items whose code over `levels`
    changed), "prefix_changed" (list: share whose prefix of length 1..levels changed),
    "level_changed" (list: share whose code at level c changed)}.

  Shape:
    old_codes, new_codes: [n, L]
  """
  old = check_codes(old_codes, name="old_codes", allow_missing=True)
  new = check_codes(new_codes, name="new_codes", allow_missing=True)
  if old.shape[0] != new.shape[0]:
    raise DataError(f"old_codes has {old.shape[0]} items, new_codes {new.shape[0]}")
  L = min(old.shape[1], new.shape[1]) if levels is None else int(levels)
  if not 1 <= L <= min(old.shape[1], new.shape[1]):
    raise DataError(f"levels must lie in [1, {min(old.shape[1], new.shape[1])}], got {levels}")
  keep = (old[:, :L] >= 0).all(axis=1) & (new[:, :L] >= 0).all(axis=1)
  diff = old[keep, :L] != new[keep, :L]
  m = int(keep.sum())
  rate = lambda x: float(x.mean()) if m else 0.0
  prefix = np.logical_or.accumulate(diff, axis=1) if m else np.zeros((0, L), bool)
  return {"num_items": int(old.shape[0]), "num_compared": m, "levels": L,
          "changed": rate(diff.any(axis=1)),
          "prefix_changed": [rate(prefix[:, c]) for c in range(L)],
          "level_changed": [rate(diff[:, c]) for c in range(L)]}


def window_stability(codes: Any, *, levels: int | None = None) -> dict[str, Any]:
  """Stability between consecutive present windows of dynamic SIDs (pairs pooled over items).

  Shape:
    codes: [n, w, L]
  """
  codes = check_dynamic(codes)
  n, w, L = codes.shape
  if w < 2:
    return stability_report(np.zeros((0, L), np.int32), np.zeros((0, L), np.int32),
                            levels=levels or L)
  filled = forward_fill(codes)
  prev, cur = filled[:, :-1].reshape(-1, L), codes[:, 1:].reshape(-1, L)
  return stability_report(prev, cur, levels=levels)
