"""Training pairs for contrastive fine-tuning (FLUID) and the co-occurrence loss (PLUM SID-v2).

A `PairSet` holds (query, item) positives: the query is a text (an item's category path and
brand, or a synthetic topic name) or another item (item-to-item pairs of items a user consumed
close together). Every query has an integer id; `positive_keys` lists every (query id, item row)
that is a positive, so a batch can mask in-batch "negatives" that are in fact positives of the
query (false-negative masking, FLUID). An item query also names its own catalog row
(`query_item`), so the anchor item met again among the in-batch candidates is masked too: its
similarity to itself is the largest there is, and as a negative it only floors the loss.

No leakage: co-consumption pairs are read from the *training part* of leave-one-out only.
`co_consumption_pairs` takes the `LeaveOneOut` split (not raw sequences) so that the validation
and test targets cannot contribute a pair by construction.

Shape letters: p pairs, n items (catalog rows), q queries.
"""

from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from lrm.core.errors import ConfigError, DataError
from lrm.data.splits import LeaveOneOut
from lrm.data.types import Catalog, Sequences


@dataclasses.dataclass(frozen=True, eq=False)
class PairSet:
  """Positive (query, item) pairs.

  Attributes:
    query_texts: str [q], the text of each query id.
    query: int64 [p], query id of each pair.
    item: int64 [p], catalog row of each pair's item.
    positive_keys: int64 sorted unique, query id * num_items + item row of every positive.
    num_items: catalog size (the key's base).
    query_item: int64 [q], the catalog row an item query stands for, -1 for a text query
      (None: all text queries).
  """
  query_texts: list[str]
  query: np.ndarray
  item: np.ndarray
  positive_keys: np.ndarray
  num_items: int
  query_item: np.ndarray | None = None

  def __post_init__(self):
    q, i = np.asarray(self.query, np.int64), np.asarray(self.item, np.int64)
    if q.shape != i.shape or q.ndim != 1:
      raise DataError(f"query {q.shape} and item {i.shape} must be 1-d of one length")
    if len(q) and (q.min() < 0 or q.max() >= len(self.query_texts)):
      raise DataError(f"query ids must lie in [0, {len(self.query_texts)})")
    if len(i) and (i.min() < 0 or i.max() >= self.num_items):
      raise DataError(f"item rows must lie in [0, {self.num_items})")
    qi = (np.full(len(self.query_texts), -1, np.int64) if self.query_item is None
          else np.asarray(self.query_item, np.int64))
    if qi.shape != (len(self.query_texts),) or (len(qi) and (qi.min() < -1
                                                             or qi.max() >= self.num_items)):
      raise DataError(f"query_item must be [{len(self.query_texts)}] rows in "
                      f"[-1, {self.num_items}), got shape {qi.shape}")
    object.__setattr__(self, "query", q)
    object.__setattr__(self, "item", i)
    object.__setattr__(self, "query_item", qi)

  def __len__(self) -> int:
    return len(self.query)


def _keys(query: np.ndarray, item: np.ndarray, num_items: int) -> np.ndarray:
  return np.asarray(query, np.int64) * num_items + np.asarray(item, np.int64)


def make_pair_set(query_texts: Sequence[str], query: np.ndarray, item: np.ndarray,
                  num_items: int, query_item: np.ndarray | None = None) -> PairSet:
  """A PairSet whose positives are exactly the given pairs (deduplicated)."""
  keys = np.unique(_keys(query, item, num_items))
  return PairSet(list(query_texts), query=keys // num_items, item=keys % num_items,
                 positive_keys=keys, num_items=num_items, query_item=query_item)


def concat(a: PairSet, b: PairSet) -> PairSet:
  """Both sets' pairs; b's query ids are shifted past a's."""
  if a.num_items != b.num_items:
    raise DataError(f"pair sets over {a.num_items} and {b.num_items} items")
  shift = len(a.query_texts)
  return make_pair_set(a.query_texts + b.query_texts, np.concatenate([a.query, b.query + shift]),
                       np.concatenate([a.item, b.item]), a.num_items,
                       np.concatenate([a.query_item, b.query_item]))


def false_negative_mask(query: np.ndarray, item: np.ndarray,
                        positive_keys: np.ndarray, num_items: int,
                        query_item: np.ndarray | None = None) -> np.ndarray:
  """bool [b, b]: True where in-batch item j must leave query i's denominator.

  Item j is masked for query i (j != i) when it is the same item as i's positive (a duplicate),
  a known positive of query i, or the item query i stands for (`query_item[i]`, the anchor
  itself; -1 for a text query). The diagonal (the pair itself) is never masked.
  Shape: query, item, query_item int [b] -> bool [b, b].
  """
  query, item = np.asarray(query, np.int64), np.asarray(item, np.int64)
  same_item = item[:, None] == item[None, :]
  keys = _keys(query[:, None], item[None, :], num_items)
  pos = np.searchsorted(positive_keys, keys)
  pos = np.minimum(pos, max(len(positive_keys) - 1, 0))
  known = (positive_keys[pos] == keys) if len(positive_keys) else np.zeros_like(same_item)
  mask = same_item | known
  if query_item is not None:
    mask |= np.asarray(query_item, np.int64)[:, None] == item[None, :]
  np.fill_diagonal(mask, False)
  return mask


def window_pairs(train: Sequences, catalog: Catalog, *, window: int
                 ) -> tuple[np.ndarray, np.ndarray]:
  """Every (earlier, later) catalog-row pair of distinct items one user consumed within
  `window` positions, with repeats (one per occurrence). Pass only training sequences.

  Shape: -> (int64 [p], int64 [p]).
  """
  if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
    raise ConfigError("window", f"must be an integer >= 1, got {window!r}")
  rows = catalog.rows(train.items, what="sequence item")
  user = np.repeat(np.arange(len(train)), train.lengths)
  earlier, later = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
  for gap in range(1, window + 1):
    same_user = user[gap:] == user[:-gap]
    a, b = rows[:-gap][same_user], rows[gap:][same_user]
    earlier.append(a[a != b])
    later.append(b[a != b])
  return np.concatenate(earlier).astype(np.int64), np.concatenate(later).astype(np.int64)


def co_consumption_rows(train: Sequences, catalog: Catalog, *, window: int = 3
                        ) -> np.ndarray:
  """Catalog-row pairs (a, b), a != b, of items one user consumed within `window` positions.

  Each unordered pair appears once (a < b). Pass only training sequences.
  Shape: -> int64 [p, 2].
  """
  a, b = window_pairs(train, catalog, window=window)
  pairs = np.stack([np.minimum(a, b), np.maximum(a, b)], 1)
  return np.unique(pairs, axis=0).astype(np.int64)


def co_consumption_pairs(split: LeaveOneOut, catalog: Catalog, *, window: int = 3,
                         item_texts: Sequence[str] | None = None) -> PairSet:
  """Item-to-item pairs from the training part of leave-one-out, in both directions.

  Query id a is item row a (its text is `item_texts[a]`, default the catalog's text); item b is
  a positive of query a when the two were consumed within `window` positions by one user.
  """
  if not isinstance(split, LeaveOneOut):
    raise ConfigError("split", "co-consumption pairs come from a LeaveOneOut split's training "
                      f"part only, got {type(split).__name__}")
  rows = co_consumption_rows(split.train, catalog, window=window)
  texts = list(item_texts) if item_texts is not None else catalog.text()
  if len(texts) != len(catalog):
    raise DataError(f"{len(texts)} item texts for {len(catalog)} items")
  n = len(catalog)
  query = np.concatenate([rows[:, 0], rows[:, 1]])
  item = np.concatenate([rows[:, 1], rows[:, 0]])
  return make_pair_set(texts, query, item, n, query_item=np.arange(n))


def category_brand_queries(catalog: Catalog, *, fields: Sequence[str] = ("categories", "brand")
                           ) -> PairSet:
  """Text queries from an item's category path and brand (Amazon); one query per distinct text.

  Every item whose text equals a query is its positive, so two items sharing a category path
  and brand never act as each other's negatives.
  """
  missing = [f for f in fields if f not in catalog.fields]
  if missing:
    raise ConfigError("fields", f"catalog has no field(s) {missing}")
  texts = catalog.text(fields, sep=" | ")
  return _queries_from_texts(texts, len(catalog))


def topic_queries(world) -> PairSet:
  """The synthetic world's topic queries: each item's leaf topic path ("A > B > C")."""
  truth = world.truth
  names = np.asarray(truth.topic_names)
  paths = [" > ".join(str(names[node]) for node in truth.leaf_path[leaf])
           for leaf in range(len(truth.leaf_node))]
  texts = [paths[int(t)] for t in truth.item_topic]
  return _queries_from_texts(texts, len(world.catalog))


def _queries_from_texts(texts: Sequence[str], num_items: int) -> PairSet:
  keep = np.asarray([bool(t.strip()) for t in texts])
  uniq, inverse = np.unique(np.asarray(texts, dtype=object)[keep].astype(str), return_inverse=True)
  return make_pair_set([str(u) for u in uniq], inverse.ravel(), np.flatnonzero(keep), num_items)


def sample_batches(pairs: PairSet, batch_size: int, *, seed: int):
  """Endless shuffled batches of pair indices (a fresh permutation per epoch).

  Shape: yields int64 [batch_size].
  """
  if len(pairs) < batch_size:
    raise DataError(f"{len(pairs)} pairs cannot fill a batch of {batch_size}")
  epoch = 0
  while True:
    perm = np.random.default_rng([seed, epoch]).permutation(len(pairs))
    for start in range(0, len(perm) - batch_size + 1, batch_size):
      yield perm[start:start + batch_size]
    epoch += 1
