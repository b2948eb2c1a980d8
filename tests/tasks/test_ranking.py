"""Ranking examples: the cold split keeps cold items out of training, negatives avoid every
positive of their user, post-impression labels are masked on negatives, rooms vary by slice."""

from __future__ import annotations

import numpy as np
import pytest

from lrm.core.errors import ConfigError
from lrm.data.synthetic import WorldConfig, make_world
from lrm.tasks.ranking import cold_warm_split, room_examples, sample_negatives, topic_affinity


@pytest.fixture(scope="module")
def world():
  return make_world(WorldConfig(seed=1, num_users=120, num_items=400, num_rooms=30,
                                room_slices=12))


@pytest.fixture(scope="module")
def split(world):
  return cold_warm_split(world.sequences, world.catalog, cold_fraction=0.1, max_history=8,
                         num_negatives=3, eval_negatives=5, seed=0)


def _positives(world):
  rows = world.catalog.rows(world.sequences.items)
  seqs = world.sequences
  return {u: set(rows[seqs.offsets[u]:seqs.offsets[u + 1]]) for u in range(len(seqs))}


def test_cold_items_never_in_training(split, world):
  interacted = np.unique(world.catalog.rows(world.sequences.items))
  assert len(split.cold_rows) == round(0.1 * len(interacted))
  train = split.train
  assert not np.isin(train.candidate, split.cold_rows).any()
  assert not np.isin(train.history[train.history >= 0], split.cold_rows).any()
  assert not split.train.cold.any() and not split.warm.cold.any()
  pos = split.cold.labels["click"] > 0
  assert split.cold.cold.all()                # positives and negatives are cold items
  assert np.isin(split.cold.candidate[pos], split.cold_rows).all()
  assert not np.isin(split.cold.history[split.cold.history >= 0], split.cold_rows).any()


def test_negatives_are_never_a_positive_of_the_user(split, world):
  positives = _positives(world)
  for data in (split.train, split.warm, split.cold):
    neg = np.flatnonzero(data.labels["click"] == 0)
    assert all(data.candidate[i] not in positives[data.user[i]] for i in neg)
    assert (data.labels["click"] == 1).sum() * (len(data) // (data.labels["click"] == 1).sum()
                                                - 1) == len(neg)


def test_post_impression_labels_masked_on_negatives(split):
  data = split.train
  assert set(data.tasks) == {"click", "like", "order", "watch_time"}
  for task in ("like", "order", "watch_time"):
    np.testing.assert_array_equal(data.masks[task], data.labels["click"])
  assert data.masks["click"].all()


def test_histories_are_left_padded_and_before_the_target(split):
  h = split.warm.history
  assert h.shape[1] == 8
  valid = h >= 0
  assert (np.diff(valid.astype(int), axis=1) >= 0).all()   # padding only on the left
  assert valid[:, -1].all()


def test_sample_negatives_is_seeded_and_raises_when_impossible():
  positives = [np.array([0, 1]), np.array([2])]
  a = sample_negatives(positives, np.arange(4), 6, seed=3)
  np.testing.assert_array_equal(a, sample_negatives(positives, np.arange(4), 6, seed=3))
  assert not np.isin(a[0], [0, 1]).any() and not np.isin(a[1], [2]).any()
  with pytest.raises(Exception, match="every item"):
    sample_negatives([np.arange(3)], np.arange(3), 2, seed=0)
  with pytest.raises(ConfigError, match="num_negatives"):
    cold_warm_split(None, None, num_negatives=0)


def test_room_labels_follow_the_slice_topic(world):
  t = world.truth
  last = world.sequences.offsets[1:] - 1
  data = room_examples(world.sequences, world.catalog, leaf_path=t.leaf_path,
                       user_interest=t.event_interest[last],
                       room_slice_topics=t.room_slice_topics, num_examples=3000, seed=0)
  assert data.slice.min() >= 0 and data.slice.max() < 12
  a = topic_affinity(t.leaf_path, t.room_slice_topics[data.candidate, data.slice],
                     t.event_interest[last][data.user])
  follow = data.labels["follow"]
  assert follow[a == 1].mean() > follow[a == 0].mean() + 0.3
  assert np.corrcoef(a, data.labels["watch_time"])[0, 1] > 0.7
