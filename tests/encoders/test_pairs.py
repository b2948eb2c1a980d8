"""Pairs for contrastive fine-tuning: co-consumption windows, no leakage, false-negative masks."""

from __future__ import annotations

import numpy as np
import pytest

from lrm.core.errors import ConfigError
from lrm.data.splits import leave_one_out
from lrm.data.synthetic import WorldConfig, make_world
from lrm.data.types import Catalog, Sequences
from lrm.encoders import pairs as pairs_lib


def _catalog(n: int) -> Catalog:
  return Catalog(item_ids=np.arange(1, n + 1),
                 fields={"title": [f"t{i}" for i in range(n)],
                         "brand": ["acme" if i % 2 else "" for i in range(n)],
                         "categories": [["Makeup", "Nails"] if i < 4 else ["Skin"]
                                        for i in range(n)]})


def test_window_pairs_by_hand():
  catalog = _catalog(8)
  seqs = Sequences.from_lists([1, 2], [[1, 2, 3, 4], [5, 1, 5]])
  rows = pairs_lib.co_consumption_rows(seqs, catalog, window=1)
  # user 1: (1,2) (2,3) (3,4); user 2: (5,1) twice -> one pair; rows are ids - 1.
  assert rows.tolist() == [[0, 1], [0, 4], [1, 2], [2, 3]]
  rows2 = pairs_lib.co_consumption_rows(seqs, catalog, window=2)
  assert [0, 2] in rows2.tolist() and [1, 3] in rows2.tolist() and [0, 3] not in rows2.tolist()
  with pytest.raises(ConfigError, match="window"):
    pairs_lib.co_consumption_rows(seqs, catalog, window=0)


def test_no_validation_or_test_interaction_contributes_a_pair():
  n = 30
  catalog = _catalog(n)
  rng = np.random.default_rng(0)
  lists = [rng.choice(np.arange(1, 21), size=rng.integers(3, 9), replace=False).tolist()
           for _ in range(25)]
  seqs = Sequences.from_lists(np.arange(1, 26), lists)
  base = pairs_lib.co_consumption_pairs(leave_one_out(seqs), catalog, window=3)
  # Replace every user's last two events (validation and test targets) by items 21..30, which
  # occur nowhere else: the pairs must not change and never mention those items.
  swapped = [l[:-2] + [21 + (u % 5), 26 + (u % 5)] for u, l in enumerate(lists)]
  other = pairs_lib.co_consumption_pairs(leave_one_out(Sequences.from_lists(
      np.arange(1, 26), swapped)), catalog, window=3)
  np.testing.assert_array_equal(base.positive_keys, other.positive_keys)
  held_out_rows = np.arange(20, 30)
  assert not np.isin(other.item, held_out_rows).any()
  assert not np.isin(other.query, held_out_rows).any()
  # And the training part alone reproduces them exactly.
  train_rows = pairs_lib.co_consumption_rows(leave_one_out(seqs).train, catalog, window=3)
  assert len(base) == 2 * len(train_rows)
  with pytest.raises(ConfigError, match="split"):
    pairs_lib.co_consumption_pairs(seqs, catalog)


def test_category_brand_queries_group_items():
  catalog = _catalog(6)
  qs = pairs_lib.category_brand_queries(catalog)
  text = {int(i): qs.query_texts[q] for q, i in zip(qs.query, qs.item)}
  assert text[0] == "Makeup > Nails" and text[1] == "Makeup > Nails | acme"
  assert text[0] == text[2] and text[4] == "Skin" and text[5] == "Skin | acme"
  assert len(qs.query_texts) == 4 and len(qs) == 6


def test_false_negative_mask_by_hand():
  # Queries 0, 0, 1, 2 with items 5, 6, 5, 7; positives: (0,5) (0,6) (1,5) (2,7) (2,6).
  query = np.array([0, 0, 1, 2])
  item = np.array([5, 6, 5, 7])
  ps = pairs_lib.make_pair_set(["a", "b", "c"], np.array([0, 0, 1, 2, 2]),
                               np.array([5, 6, 5, 7, 6]), num_items=10)
  mask = pairs_lib.false_negative_mask(query, item, ps.positive_keys, 10)
  expected = np.array([
      [0, 1, 1, 0],   # query 0: item 6 is its positive, item 5 (row 2) duplicates its own
      [1, 0, 1, 0],   # query 0 again: item 5 is a positive of query 0
      [1, 0, 0, 0],   # query 1: row 0's item 5 is the same item
      [0, 1, 0, 0],   # query 2: item 6 is a known positive
  ], bool)
  np.testing.assert_array_equal(mask, expected)


def test_false_negative_mask_drops_the_anchor_item_itself():
  # Item queries 0, 1, 2 (query_item = their own rows) with positives 1, 3, 0. Anchor 1 meets
  # itself as row 0's positive, anchor 0 as row 2's: both leave the denominator although no
  # pair says so; a text query (query_item -1) masks nothing extra.
  anchors, positives = np.array([0, 1, 2]), np.array([1, 3, 0])
  keys = np.unique([0 * 5 + 1, 1 * 5 + 3, 2 * 5 + 0])
  plain = pairs_lib.false_negative_mask(anchors, positives, keys, 5)
  mask = pairs_lib.false_negative_mask(anchors, positives, keys, 5, query_item=anchors)
  assert not plain.any()
  expected = np.zeros((3, 3), bool)
  expected[1, 0] = expected[0, 2] = True
  np.testing.assert_array_equal(mask, expected)
  text = pairs_lib.false_negative_mask(anchors, positives, keys, 5,
                                       query_item=np.array([-1, -1, -1]))
  np.testing.assert_array_equal(text, plain)


def test_item_queries_name_their_rows_and_concat_keeps_them():
  seqs = Sequences.from_lists([1, 2], [[1, 2, 3, 4, 5], [2, 4, 5, 6, 3]])
  catalog = _catalog(6)
  co = pairs_lib.co_consumption_pairs(leave_one_out(seqs), catalog, window=1)
  np.testing.assert_array_equal(co.query_item, np.arange(6))
  both = pairs_lib.concat(co, pairs_lib.category_brand_queries(catalog))
  np.testing.assert_array_equal(both.query_item, np.r_[np.arange(6), [-1] * 4])
  with pytest.raises(Exception, match="query_item"):
    pairs_lib.make_pair_set(["a"], np.array([0]), np.array([1]), 3, query_item=np.array([3]))


def test_topic_queries_name_each_items_leaf():
  world = make_world(WorldConfig(branching=(2, 2), num_items=40, num_users=20))
  qs = pairs_lib.topic_queries(world)
  assert len(qs) == 40 and len(qs.query_texts) <= 4
  leaf_of_query = {}
  for q, i in zip(qs.query, qs.item):
    leaf_of_query.setdefault(int(q), set()).add(int(world.truth.item_topic[i]))
  assert all(len(v) == 1 for v in leaf_of_query.values())
  assert all(" > " in t for t in qs.query_texts)
