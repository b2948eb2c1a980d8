"""Leave-one-out, cold-start and time splits: exact small cases and leak checks on Beauty."""

from __future__ import annotations

import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.data.layout import read_dataset
from lrm.data.splits import cold_start_split, leave_one_out, time_split, warm_leave_one_out
from lrm.data.types import Catalog, Sequences


def _lists(seqs: Sequences) -> list[list[int]]:
  return [s.tolist() for s in seqs]


def _small() -> Sequences:
  return Sequences.from_lists(
      [10, 20, 30], [[1, 2, 3, 4], [5, 6], [7, 8, 9]],
      timestamps=[[1, 2, 3, 4], [5, 6], [7, 8, 9]],
      signals={"rating": [[1, 2, 3, 4], [5, 6], [7, 8, 9]]})


def test_leave_one_out_exact():
  split = leave_one_out(_small())
  np.testing.assert_array_equal(split.train.user_ids, [10, 20, 30])
  assert _lists(split.train) == [[1, 2], [5, 6], [7]]  # user 20 (2 events) only in train
  np.testing.assert_array_equal(split.valid.user_ids, [10, 30])
  assert _lists(split.valid.histories) == [[1, 2], [7]]
  np.testing.assert_array_equal(split.valid.targets, [3, 8])
  np.testing.assert_array_equal(split.valid.target_timestamps, [3, 8])
  np.testing.assert_array_equal(split.test.user_ids, [10, 30])
  assert _lists(split.test.histories) == [[1, 2, 3], [7, 8]]
  np.testing.assert_array_equal(split.test.targets, [4, 9])
  # Histories carry their per-event data.
  np.testing.assert_array_equal(split.test.histories.signals["rating"], [1, 2, 3, 7, 8])
  np.testing.assert_array_equal(split.train.timestamps, [1, 2, 5, 6, 7])


def test_leave_one_out_min_length():
  split = leave_one_out(_small(), min_length=4)
  assert _lists(split.train) == [[1, 2], [5, 6], [7, 8, 9]]
  np.testing.assert_array_equal(split.test.user_ids, [10])
  np.testing.assert_array_equal(split.test.targets, [4])
  with pytest.raises(ValueError, match="min_length must be >= 3"):
    leave_one_out(_small(), min_length=2)


def test_leave_one_out_on_beauty_has_no_leaks(shared_data):
  seqs = read_dataset(shared_data / "amazon_beauty").sequences
  split = leave_one_out(seqs)
  assert len(split.test) == len(split.valid) == len(seqs)  # every Beauty user has >= 5
  assert split.train.num_events == seqs.num_events - 2 * len(seqs)
  np.testing.assert_array_equal(split.train.lengths, seqs.lengths - 2)
  # Per user: train + valid target + test target == the full sequence, in order.
  last = seqs.offsets[1:] - 1
  np.testing.assert_array_equal(split.test.targets, seqs.items[last])
  np.testing.assert_array_equal(split.valid.targets, seqs.items[last - 1])
  train, valid, test = split.train, split.valid.targets.tolist(), split.test.targets.tolist()
  for u in range(len(seqs)):
    assert train.user(u).tolist() + [valid[u], test[u]] == seqs.user(u).tolist()
  # Histories: valid = train, test = train + valid target.
  np.testing.assert_array_equal(split.valid.histories.items, split.train.items)
  np.testing.assert_array_equal(split.test.histories.lengths, split.train.lengths + 1)
  np.testing.assert_array_equal(split.test.histories.items[split.test.histories.offsets[1:] - 1],
                                split.valid.targets)


def _catalog(ids) -> Catalog:
  return Catalog(item_ids=np.asarray(ids))


def test_cold_start_first_seen_exact():
  # First seen: item 4 at t = 0.5, 1 at 1, 2 at 2, 3 at 3, 5 at 7, 6 at 8.5 (user 2, before
  # user 1's t = 9); item 99 is never seen. A third of the 6 seen items: 5 and 6 are cold.
  seqs = Sequences.from_lists(
      [1, 2, 3, 4], [[1, 5, 2, 6, 3], [4, 6], [2, 3, 5, 1], [5]],
      timestamps=[[1, 7, 8, 9, 10], [0.5, 8.5], [2, 3, 12, 13], [14]])
  split = cold_start_split(seqs, _catalog([1, 2, 3, 4, 5, 6, 99]), fraction=1 / 3, seed=0,
                           by="first_seen")
  np.testing.assert_array_equal(split.cold_items, [5, 6])
  np.testing.assert_array_equal(split.train.user_ids, [1, 2, 3])  # user 4 had only item 5
  assert _lists(split.train) == [[1, 2, 3], [4], [2, 3, 1]]
  # User 1's last cold event is 6, with the warm events before it (5 dropped); user 4 has no
  # warm event before its cold one, so it is not tested.
  np.testing.assert_array_equal(split.test.user_ids, [1, 2, 3])
  np.testing.assert_array_equal(split.test.targets, [6, 6, 5])
  assert _lists(split.test.histories) == [[1, 2], [4], [2, 3]]
  np.testing.assert_array_equal(split.test.target_timestamps, [9, 8.5, 12])


def test_cold_start_first_seen_without_timestamps_uses_order():
  seqs = Sequences.from_lists([1, 2], [[3, 1, 2], [2, 4, 5]])
  split = cold_start_split(seqs, _catalog([1, 2, 3, 4, 5]), fraction=0.4, seed=0,
                           by="first_seen")
  np.testing.assert_array_equal(split.cold_items, [4, 5])
  assert split.test.target_timestamps is None


def test_cold_start_random_on_beauty(shared_data):
  dataset = read_dataset(shared_data / "amazon_beauty")
  seqs = dataset.sequences
  split = cold_start_split(seqs, dataset.catalog, fraction=0.1, seed=7)
  cold = split.cold_items
  assert len(cold) == round(0.1 * 12_101) and len(np.unique(cold)) == len(cold)
  assert not np.isin(split.train.items, cold).any()  # no cold item anywhere in training
  assert np.isin(split.test.targets, cold).all()  # every test target is cold
  assert not np.isin(split.test.histories.items, cold).any()
  assert split.train.num_events == (~np.isin(seqs.items, cold)).sum()
  assert len(split.test) > 1000
  # Each target is the user's last cold item, and the history is what came before it, warm.
  row_of_user = {int(u): r for r, u in enumerate(seqs.user_ids)}
  for k in range(0, len(split.test), 53):
    full = seqs.user(row_of_user[int(split.test.user_ids[k])]).tolist()
    cold_positions = [i for i, item in enumerate(full) if item in set(cold.tolist())]
    last = cold_positions[-1]
    assert full[last] == split.test.targets[k]
    assert split.test.histories.user(k).tolist() == [x for x in full[:last]
                                                     if x not in set(cold.tolist())]
  # Deterministic in the seed.
  again = cold_start_split(seqs, dataset.catalog, fraction=0.1, seed=7)
  np.testing.assert_array_equal(again.cold_items, cold)
  other = cold_start_split(seqs, dataset.catalog, fraction=0.1, seed=8)
  assert not np.array_equal(other.cold_items, cold)


def test_warm_leave_one_out_holds_out_cold_items_and_warm_targets():
  seqs = Sequences.from_lists([1, 2, 3, 4], [[1, 2, 3, 4, 5], [6, 1, 7], [2, 3, 4, 6, 7, 8],
                                             [8, 9, 10, 1]])
  catalog = Catalog(item_ids=np.arange(1, 11))
  cold = set(cold_start_split(seqs, catalog, fraction=0.3, seed=3).cold_items.tolist())
  assert len(cold) == 3
  loo = warm_leave_one_out(seqs, catalog, cold_fraction=0.3, seed=3)
  expected = {}
  for user, items in zip(seqs.user_ids, seqs):
    warm = [i for i in items.tolist() if i not in cold]
    if len(warm) >= 3:      # users with fewer warm events are dropped, not kept whole
      expected[int(user)] = warm[:-2]
  assert dict(zip(loo.train.user_ids.tolist(), _lists(loo.train))) == expected
  assert set(loo.test.targets.tolist()).isdisjoint(cold)


def test_warm_leave_one_out_on_beauty_never_trains_on_a_ranking_target(shared_data):
  dataset = read_dataset(shared_data / "amazon_beauty")
  seqs, catalog = dataset.sequences, dataset.catalog
  cold = cold_start_split(seqs, catalog, fraction=0.1, seed=5).cold_items
  loo = warm_leave_one_out(seqs, catalog, cold_fraction=0.1, seed=5)
  assert not np.isin(loo.train.items, cold).any()
  row_of_user = {int(u): r for r, u in enumerate(seqs.user_ids)}
  for k in range(0, len(loo.train), 97):
    warm = [i for i in seqs.user(row_of_user[int(loo.train.user_ids[k])]).tolist()
            if i not in set(cold.tolist())]
    # A strict prefix of the user's warm events: the last one (a warm ranking target) is out.
    assert loo.train.user(k).tolist() == warm[:-2]


def test_cold_start_bad_arguments():
  seqs = Sequences.from_lists([1], [[1, 2]])
  with pytest.raises(ValueError, match="fraction"):
    cold_start_split(seqs, _catalog([1, 2]), fraction=1.0, seed=0)
  with pytest.raises(ValueError, match="need at least one cold and one warm"):
    cold_start_split(seqs, _catalog([1, 2]), fraction=0.1, seed=0)
  with pytest.raises(ValueError, match="by must be"):
    cold_start_split(seqs, _catalog([1, 2]), fraction=0.5, seed=0, by="latest")
  with pytest.raises(DataError, match="unknown item id 2"):
    cold_start_split(seqs, _catalog([1]), fraction=0.5, seed=0)


def test_time_split():
  split = time_split(_small(), 5)
  np.testing.assert_array_equal(split.before.user_ids, [10])
  assert _lists(split.before) == [[1, 2, 3, 4]]
  np.testing.assert_array_equal(split.after.user_ids, [20, 30])
  assert _lists(split.after) == [[5, 6], [7, 8, 9]]
  before, after = time_split(_small(), 3.5)
  assert _lists(before) == [[1, 2, 3]] and _lists(after) == [[4], [5, 6], [7, 8, 9]]
  np.testing.assert_array_equal(after.signals["rating"], [4, 5, 6, 7, 8, 9])
  with pytest.raises(DataError, match="needs timestamps"):
    time_split(Sequences.from_lists([1], [[1]]), 0)
