"""Retrieval metrics on item lists (leave-one-out, one target per user, full ranking).

Everything here scores *item ids*, never generated codes: a code shared by several items must
never count as a hit (DESIGN.md section 6), so a generative model first turns its beams into a
list of distinct items and is scored on that list like any ID model.

Conventions: a ranked list is a row of int item ids, best first, padded at the end with -1
when a model returns fewer than K items. A row that names an item twice is an error, not
something to clean up silently: duplicates would let one list hold the target twice and make
the list look longer than it is.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from lrm.core.errors import DataError
from lrm.data.types import Sequences

DEFAULT_KS = (5, 10, 20)
PAD = -1


def _as_ranked(ranked_items) -> np.ndarray:
  ranked = np.asarray(ranked_items)
  if ranked.ndim != 2:
    raise DataError(f"ranked_items must be 2-D [users, K], got shape {ranked.shape}")
  if ranked.size and not np.issubdtype(ranked.dtype, np.integer):
    raise DataError(f"ranked_items must hold integer item ids, got dtype {ranked.dtype}")
  return ranked.astype(np.int64, copy=False)


def check_ranked(ranked_items) -> np.ndarray:
  """Validates ranked lists; returns them as int64 [u, K].

  Raises DataError naming the first bad user row for: ids below -1, padding (-1) followed by
  an item, or an item listed twice.
  """
  ranked = _as_ranked(ranked_items)
  if ranked.size == 0:
    return ranked
  bad = (ranked < PAD).any(axis=1)
  if bad.any():
    r = int(np.flatnonzero(bad)[0])
    raise DataError(f"user row {r}: negative item id in ranked list {ranked[r].tolist()} "
                    f"(only -1 is allowed, as padding)")
  pad = ranked == PAD
  # Padding must be trailing: once a row has a -1, everything after it is -1.
  after_pad = np.logical_or.accumulate(pad, axis=1) & ~pad
  bad = after_pad.any(axis=1)
  if bad.any():
    r = int(np.flatnonzero(bad)[0])
    raise DataError(f"user row {r}: item after -1 padding in ranked list {ranked[r].tolist()}")
  s = np.sort(ranked, axis=1)
  dup = (s[:, 1:] == s[:, :-1]) & (s[:, 1:] != PAD)
  bad = dup.any(axis=1)
  if bad.any():
    r = int(np.flatnonzero(bad)[0])
    item = int(s[r, 1:][dup[r]][0])
    raise DataError(f"user row {r}: item {item} appears more than once in its ranked list; "
                    f"duplicates would inflate recall/NDCG (score distinct items)")
  return ranked


def hit_ranks(ranked_items, targets) -> np.ndarray:
  """int64 [u]: the 0-based position of each user's target in their list, -1 if absent."""
  ranked = check_ranked(ranked_items)
  targets = np.asarray(targets)
  if targets.shape != (ranked.shape[0],):
    raise DataError(f"targets have shape {targets.shape}, expected ({ranked.shape[0]},) "
                    f"(one per ranked list)")
  if targets.size and not np.issubdtype(targets.dtype, np.integer):
    raise DataError(f"targets must be integer item ids, got dtype {targets.dtype}")
  targets = targets.astype(np.int64, copy=False)
  if (targets < 0).any():
    r = int(np.flatnonzero(targets < 0)[0])
    raise DataError(f"user row {r}: negative target item id {int(targets[r])}")
  match = ranked == targets[:, None]
  return np.where(match.any(axis=1), match.argmax(axis=1), -1).astype(np.int64)


def retrieval_metrics(ranked_items, targets, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
  """Recall@k and NDCG@k with one target per user, averaged over users.

  Args:
    ranked_items: int [u, K] item ids, best first, -1 padding at the end. K >= max(ks).
    targets: int [u] each user's held-out item.
    ks: cut-offs.

  Returns:
    {"recall@k": ..., "ndcg@k": ...} for each k (floats), in the order of `ks`, recall before
    ndcg. With one target, recall@k is the hit rate: 1 if the target is in the top k. NDCG@k is
    1 / log2(rank + 2) for a hit at 0-based `rank` < k (the ideal DCG is 1), else 0.
  """
  ks = tuple(int(k) for k in ks)
  if not ks or min(ks) < 1:
    raise ValueError(f"ks must be positive cut-offs, got {ks}")
  ranked = _as_ranked(ranked_items)
  if ranked.shape[0] == 0:
    raise DataError("no users to evaluate (ranked_items is empty)")
  if ranked.shape[1] < max(ks):
    raise DataError(f"ranked lists hold {ranked.shape[1]} items, fewer than the largest "
                    f"cut-off {max(ks)}: rank at least max(ks) items per user")
  rank = hit_ranks(ranked, targets)
  hit = rank >= 0
  gain = np.where(hit, 1.0 / np.log2(np.where(hit, rank, 0) + 2.0), 0.0)
  out: dict[str, float] = {}
  for k in ks:
    in_k = hit & (rank < k)
    out[f"recall@{k}"] = float(in_k.mean())
    out[f"ndcg@{k}"] = float(np.where(in_k, gain, 0.0).mean())
  return out


def _compact(ranked: np.ndarray, keep: np.ndarray) -> np.ndarray:
  """Moves kept entries of each row to the front, in order; the rest becomes -1."""
  order = np.argsort(~keep, axis=1, kind="stable")
  out = np.take_along_axis(ranked, order, axis=1)
  out[~np.take_along_axis(keep, order, axis=1)] = PAD
  return out


def _row_membership(ranked: np.ndarray, exclude: Sequences) -> np.ndarray:
  """bool [u, K]: ranked[r, j] is one of exclude's items for row r (rows aligned)."""
  u, K = ranked.shape
  if len(exclude) != u:
    raise DataError(f"{len(exclude)} histories for {u} ranked lists; they must be aligned "
                    f"row for row (same users, same order)")
  if exclude.num_events == 0 or ranked.size == 0:
    return np.zeros(ranked.shape, bool)
  hist_rows = np.repeat(np.arange(u, dtype=np.int64), exclude.lengths)
  hist_items = exclude.items
  if (hist_items < 0).any():
    raise DataError("histories hold negative item ids")
  m = int(max(hist_items.max(), ranked.max(), 0)) + 1
  hist_keys = hist_rows * m + hist_items
  rows = np.broadcast_to(np.arange(u, dtype=np.int64)[:, None], ranked.shape)
  valid = ranked >= 0
  keys = rows * m + np.where(valid, ranked, 0)
  return valid & np.isin(keys, hist_keys)


def drop_seen(ranked_items, histories: Sequences, *, k: int | None = None) -> np.ndarray:
  """Removes from each list the items already in that user's history; the rest move up.

  This is the "history items excluded" variant (how eSASRec is scored, DESIGN.md section 6);
  the headline protocol (TIGER's) keeps them. Lists come back -1-padded to width `k` (default:
  the input width K). Dropping shortens lists, so a caller who wants full top-k lists after the
  drop must rank more than max(ks) items first (e.g. max(ks) + the longest history, or use
  `rank_full_scores(..., exclude=histories)` for models that score every item).

  Args:
    ranked_items: int [u, K], -1 padded.
    histories: Sequences with one row per ranked list, in the same order (e.g.
      `eval_set.histories`).
    k: width of the result; at most K.
  """
  ranked = check_ranked(ranked_items)
  width = ranked.shape[1] if k is None else int(k)
  if not 0 < width <= ranked.shape[1]:
    raise ValueError(f"k must be in [1, {ranked.shape[1]}], got {k}")
  keep = (ranked >= 0) & ~_row_membership(ranked, histories)
  return _compact(ranked, keep)[:, :width]


def rank_full_scores(scores, item_ids, k: int, exclude=None) -> np.ndarray:
  """Top-k item ids from scores over a whole catalog (for ID models that score every item).

  Args:
    scores: float [u, n] one score per user and item column (higher is better); NaN is an error.
    item_ids: int [n] the item id of each column.
    k: how many items to return per user.
    exclude: None; a bool [u, n] mask of columns never to return; or Sequences aligned row for
      row with `scores` (e.g. the users' histories) whose items are never returned (ids not in
      `item_ids` are ignored).

  Returns:
    int64 [u, k] item ids, best first. Equal scores are ordered by lower column index. Rows
    with fewer than k allowed items are padded with -1 at the end.

  Uses np.partition to find each row's k-th best score, so the cost is O(u * n) plus sorting
  only the k winners.
  """
  s = np.array(scores, dtype=np.float64)  # a copy: exclusion writes into it
  item_ids = np.asarray(item_ids, dtype=np.int64)
  if s.ndim != 2:
    raise DataError(f"scores must be 2-D [users, items], got shape {s.shape}")
  u, n = s.shape
  if item_ids.shape != (n,):
    raise DataError(f"item_ids have shape {item_ids.shape}, expected ({n},) (one per column)")
  if len(np.unique(item_ids)) != n:
    raise DataError("item_ids name some item twice; each column must be a distinct item")
  k = int(k)
  if not 0 < k <= n:
    raise ValueError(f"k must be in [1, {n}], got {k}")
  if np.isnan(s).any():
    r = int(np.flatnonzero(np.isnan(s).any(axis=1))[0])
    raise DataError(f"user row {r}: NaN score")
  if exclude is None:
    excluded = np.zeros((u, n), bool)
  elif isinstance(exclude, Sequences):
    if len(exclude) != u:
      raise DataError(f"{len(exclude)} exclusion rows for {u} score rows")
    excluded = np.zeros((u, n), bool)
    order = np.argsort(item_ids)
    pos = np.searchsorted(item_ids[order], exclude.items)
    pos = np.minimum(pos, n - 1)
    found = item_ids[order][pos] == exclude.items
    rows = np.repeat(np.arange(u), exclude.lengths)
    excluded[rows[found], order[pos[found]]] = True
  else:
    excluded = np.asarray(exclude, dtype=bool)
    if excluded.shape != (u, n):
      raise DataError(f"exclude mask has shape {excluded.shape}, expected {(u, n)}")
  if u == 0:
    return np.zeros((0, k), np.int64)
  s[excluded] = -np.inf
  # k-th best score per row; take everything strictly better, then the lowest-index ties.
  kth = -np.partition(-s, k - 1, axis=1)[:, k - 1]
  better = s > kth[:, None]
  tie = s == kth[:, None]
  need = k - better.sum(axis=1)
  selected = better | (tie & (np.cumsum(tie, axis=1) <= need[:, None]))
  cols = np.nonzero(selected)[1].reshape(u, k)  # each row's k columns, in index order
  best_first = np.argsort(-np.take_along_axis(s, cols, axis=1), axis=1, kind="stable")
  cols = np.take_along_axis(cols, best_first, axis=1)
  keep = ~np.take_along_axis(excluded, cols, axis=1)
  return _compact(item_ids[cols], keep)


def most_popular_ranking(train_sequences: Sequences, k: int) -> np.ndarray:
  """int64 [k]: the k items with the most training interactions, most first (ties: lower id).

  The popularity baseline, a sanity bar every model must clear. The same list serves every
  user: `np.broadcast_to(ranking, (num_users, k))`. Padded with -1 when fewer than k distinct
  items were seen. (For the history-excluded variant, rank more items and apply `drop_seen`.)
  """
  k = int(k)
  if k < 1:
    raise ValueError(f"k must be positive, got {k}")
  items, counts = np.unique(train_sequences.items, return_counts=True)
  order = np.lexsort((items, -counts))
  out = np.full(k, PAD, np.int64)
  top = items[order[:k]]
  out[:len(top)] = top
  return out
