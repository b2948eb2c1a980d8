"""Retrieval metrics: exact hand-computed cases, validation, drop_seen, full ranking, popularity."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.data.types import Sequences
from lrm.eval.metrics import (drop_seen, hit_ranks, most_popular_ranking, rank_full_scores,
                              retrieval_metrics)


def test_hit_at_rank_0_3_and_absent():
  ranked = np.array([[7, 1, 2, 3, 4, 5, 6, 8, 9, 10],     # target 7 at rank 0
                     [1, 2, 3, 7, 4, 5, 6, 8, 9, 10],     # target 7 at rank 3
                     [1, 2, 3, 4, 5, 6, 8, 9, 10, 11]])   # absent
  targets = np.array([7, 7, 7])
  assert hit_ranks(ranked, targets).tolist() == [0, 3, -1]
  m = retrieval_metrics(ranked, targets, ks=(1, 3, 5, 10))
  assert m["recall@1"] == pytest.approx(1 / 3)
  assert m["recall@3"] == pytest.approx(1 / 3)   # rank 3 is the 4th item: outside top 3
  assert m["recall@5"] == pytest.approx(2 / 3)
  assert m["recall@10"] == pytest.approx(2 / 3)
  assert m["ndcg@1"] == pytest.approx(1 / 3)
  assert m["ndcg@3"] == pytest.approx(1 / 3)
  assert m["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(5)) / 3)
  assert m["ndcg@10"] == pytest.approx((1.0 + 1 / math.log2(5)) / 3)
  assert list(m) == ["recall@1", "ndcg@1", "recall@3", "ndcg@3", "recall@5", "ndcg@5",
                     "recall@10", "ndcg@10"]


def test_single_user_exact_ndcg_values():
  for rank in range(10):
    row = np.arange(100, 110)
    row[rank] = 5
    m = retrieval_metrics(row[None], [5], ks=(10,))
    assert m["ndcg@10"] == 1.0 / math.log2(rank + 2)
    assert m["recall@10"] == 1.0


def test_padding_never_hits_and_default_ks():
  ranked = np.full((2, 20), -1)
  ranked[0, :3] = [4, 5, 6]
  ranked[1, :2] = [9, 8]
  m = retrieval_metrics(ranked, [6, 1])
  assert set(m) == {f"{n}@{k}" for n in ("recall", "ndcg") for k in (5, 10, 20)}
  assert m["recall@5"] == 0.5 and m["ndcg@5"] == pytest.approx(0.5 * 0.5)  # 1/log2(4) = .5


def test_duplicates_are_rejected_naming_the_row():
  ranked = np.array([[1, 2, 3, 4, 5], [1, 2, 3, 2, 6]])
  with pytest.raises(DataError, match="user row 1: item 2 appears more than once"):
    retrieval_metrics(ranked, [1, 1], ks=(5,))


def test_bad_shapes_and_values():
  ranked = np.arange(10).reshape(2, 5)
  with pytest.raises(DataError, match="fewer than the largest cut-off 10"):
    retrieval_metrics(ranked, [0, 5], ks=(5, 10))
  with pytest.raises(DataError, match="targets have shape"):
    retrieval_metrics(ranked, [0], ks=(5,))
  with pytest.raises(DataError, match="user row 0: item after -1 padding"):
    retrieval_metrics(np.array([[1, -1, 2, 3, 4]]), [1], ks=(5,))
  with pytest.raises(DataError, match="negative item id"):
    retrieval_metrics(np.array([[1, -2, 2, 3, 4]]), [1], ks=(5,))
  with pytest.raises(DataError, match="integer"):
    retrieval_metrics(np.zeros((1, 5)), [1], ks=(5,))


def test_drop_seen_exact():
  ranked = np.array([[5, 1, 7, 2, 9, -1],
                     [3, 4, 6, 8, 0, 1]])
  hist = Sequences.from_lists([10, 20], [[7, 1, 100], [8, 3, 3]])
  out = drop_seen(ranked, hist)
  assert out.tolist() == [[5, 2, 9, -1, -1, -1],
                          [4, 6, 0, 1, -1, -1]]
  assert drop_seen(ranked, hist, k=3).tolist() == [[5, 2, 9], [4, 6, 0]]
  # Only the user's own history counts: user 1 saw 8, which user 0 never did.
  assert 8 not in out[1] and ranked.tolist()[0] == [5, 1, 7, 2, 9, -1]


def test_drop_seen_needs_aligned_histories():
  with pytest.raises(DataError, match="aligned"):
    drop_seen(np.array([[1, 2]]), Sequences.from_lists([1, 2], [[1], [2]]))


def test_rank_full_scores_order_and_ties():
  scores = np.array([[0.1, 0.9, 0.5, 0.9, 0.5, 0.0],
                     [1.0, 1.0, 1.0, 1.0, 1.0, 1.0]])
  ids = np.array([10, 11, 12, 13, 14, 15])
  assert rank_full_scores(scores, ids, 4).tolist() == [[11, 13, 12, 14], [10, 11, 12, 13]]
  # A tie at the k-th place goes to the lower column index.
  assert rank_full_scores(scores, ids, 3).tolist() == [[11, 13, 12], [10, 11, 12]]


def test_rank_full_scores_matches_a_full_sort():
  rng = np.random.default_rng(0)
  scores = rng.integers(0, 5, size=(30, 50)).astype(np.float32)  # many ties
  ids = rng.permutation(1000)[:50]
  got = rank_full_scores(scores, ids, 7)
  for r in range(30):
    order = sorted(range(50), key=lambda c: (-scores[r, c], c))[:7]
    assert got[r].tolist() == ids[order].tolist()


def test_rank_full_scores_exclusion():
  scores = np.array([[3.0, 2.0, 1.0, 0.0],
                     [0.0, 1.0, 2.0, 3.0]])
  ids = np.array([4, 5, 6, 7])
  hist = Sequences.from_lists([1, 2], [[4, 99], [7, 6, 5]])  # 99 is not a column: ignored
  assert rank_full_scores(scores, ids, 2, exclude=hist).tolist() == [[5, 6], [4, -1]]
  mask = np.array([[False, True, False, False], [False, False, False, False]])
  assert rank_full_scores(scores, ids, 2, exclude=mask).tolist() == [[4, 6], [7, 6]]
  # Padding is trailing even when a real -inf score ties with excluded columns.
  s = np.array([[-np.inf, -np.inf, 1.0, -np.inf]])
  ex = np.array([[True, False, False, False]])
  assert rank_full_scores(s, ids, 4, exclude=ex).tolist() == [[6, 5, 7, -1]]


def test_rank_full_scores_rejects_bad_input():
  with pytest.raises(DataError, match="NaN"):
    rank_full_scores(np.array([[0.0, np.nan]]), [1, 2], 1)
  with pytest.raises(ValueError, match="k must be"):
    rank_full_scores(np.zeros((1, 2)), [1, 2], 3)
  with pytest.raises(DataError, match="twice"):
    rank_full_scores(np.zeros((1, 2)), [1, 1], 1)


def test_most_popular_ranking():
  train = Sequences.from_lists([1, 2, 3], [[5, 3, 3], [3, 9, 5], [7, 5, 2]])
  # counts: 5 -> 3, 3 -> 3, 2/7/9 -> 1: ties by lower id.
  assert most_popular_ranking(train, 4).tolist() == [3, 5, 2, 7]
  assert most_popular_ranking(train, 7).tolist() == [3, 5, 2, 7, 9, -1, -1]
  ranked = np.broadcast_to(most_popular_ranking(train, 5), (2, 5))
  assert retrieval_metrics(ranked, [2, 9], ks=(5,))["recall@5"] == 1.0
