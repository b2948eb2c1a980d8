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


# ------------------------------------------------------------------------------------------
# User features and interaction counts


def test_encode_user_features_missing_buckets_zip_and_vocab():
  from lrm.data.types import UserTable
  from lrm.tasks.ranking import encode_user_features
  ages = [18, 22, 25, 30, 35, 41, 50, 63, None, 25]
  table = UserTable(user_ids=np.arange(10), fields={
      "age": ages,
      "gender": ["M", "F", "M", None, "M", "F", "M", "", "M", "F"],
      "zip_code": ["85711", "01002", "T8H1N", "94043", None, "98101", "V3N4P", "1", "2",
                   "02139"],
      "job": ["a", "b", "c", "d", "a", "a", "b", "e", "f", None]})
  f = encode_user_features(table, num_buckets=4, max_vocab=3)
  assert f.names == ("age", "gender", "zip_code", "job")
  age, gender, zips, job = f.codes.T
  assert age[8] == 0 and gender[3] == gender[7] == 0 and zips[4] == 0 and job[9] == 0
  present = np.array([a is not None for a in ages])
  # Quantile buckets: monotone in age, every bucket used, about equally full.
  order = np.argsort([a for a in ages if a is not None], kind="stable")
  assert (np.diff(age[present][order]) >= 0).all()
  assert set(age[present]) == {1, 2, 3, 4} and f.sizes[0] == 5
  assert np.bincount(age[present]).max() <= 3
  # Gender by frequency: M (5) -> 1, F (3) -> 2.
  assert gender[0] == 1 and gender[1] == 2 and f.sizes[1] == 3
  # Zip areas: first digit; every non-digit code shares one value.
  assert zips[1] == zips[9] and zips[0] != zips[1] and zips[2] == zips[6]
  assert len({zips[0], zips[7], zips[8], zips[1], zips[2]}) == 5 and zips[3] == zips[5]
  assert f.sizes[2] == 7                      # 6 areas + missing, never capped by max_vocab
  # max_vocab=3: "a" and "b" keep codes, the rest share one rare code.
  assert job[0] == 1 and job[1] == 2 and len({job[2], job[3], job[7], job[8]}) == 1
  assert job[2] == 3 and f.sizes[3] == 4 and f.codes.max(0).tolist() == [4, 2, 6, 3]


def test_count_buckets_are_log2():
  from lrm.tasks.ranking import count_buckets
  assert count_buckets(np.array([0, 1, 2, 3, 4, 7, 8, 100])).tolist() == [0, 1, 2, 2, 3, 3, 4, 7]


def _brute_counts(world, rows, cold, codes, u, before, cand):
  """Events of user u before flat event `before` that are visible and share each prefix."""
  seqs = world.sequences
  prev = np.arange(seqs.offsets[u], before)
  prev = prev[~cold[rows[prev]]]
  hits = [(codes[rows[prev], :level + 1] == codes[cand, :level + 1]).all(1).sum()
          for level in range(codes.shape[1])]
  return hits + [(rows[prev] == cand).sum()]


def test_interaction_counts_match_a_brute_force_count(world):
  from lrm.tasks.ranking import encode_user_features
  from lrm.data.types import UserTable
  codes = np.random.default_rng(0).integers(0, 3, (len(world.catalog), 2))
  users = UserTable(user_ids=world.sequences.user_ids,
                    fields={"group": [str(u % 3) for u in range(len(world.sequences))]})
  feats = encode_user_features(users)
  split = cold_warm_split(world.sequences, world.catalog, cold_fraction=0.1, max_history=2,
                          num_negatives=3, eval_negatives=5, seed=0, count_codes=codes,
                          user_features=feats)
  seqs = world.sequences
  rows = world.catalog.rows(seqs.items)
  cold = np.zeros(len(world.catalog), bool)
  cold[split.cold_rows] = True
  u_of = np.repeat(np.arange(len(seqs)), seqs.lengths)
  checked = 0
  for data, want_cold in ((split.warm, False), (split.cold, True)):
    assert data.counts.shape == (len(data), 3)
    np.testing.assert_array_equal(data.user_features[:, 0], feats.codes[data.user, 0])
    for i in range(0, len(data), 3):
      u = data.user[i]
      ev = np.flatnonzero((u_of == u) & (cold[rows] == want_cold))[-1]  # the target event
      assert _brute_counts(world, rows, cold, codes, u, ev, data.candidate[i]) == \
          data.counts[i].tolist()
      checked += 1
  assert checked > 100
  # Cold events never count: a cold item's own count is 0 even where the user saw it before.
  assert (split.cold.counts[:, -1] == 0).all()
  # The counts see the whole visible history, not only the 2-item window.
  assert (split.warm.counts[:, 0] > 2).any()
  # The same-item count is positive only where the candidate is an earlier visible item.
  train = split.train
  assert (train.counts[train.labels["click"] == 0, -1] == 0).all()
  sub = train.take(np.arange(5))
  np.testing.assert_array_equal(sub.counts, train.counts[:5])
  np.testing.assert_array_equal(sub.user_features, train.user_features[:5])


def _expected_long(world, cold_rows, T, last_cold: bool):
  """Per user (in order), the last T warm rows before their last warm / last cold event."""
  seqs = world.sequences
  rows = world.catalog.rows(seqs.items)
  cold = np.isin(rows, cold_rows)
  out = {}
  for u in range(len(seqs)):
    r, c = rows[seqs.offsets[u]:seqs.offsets[u + 1]], cold[seqs.offsets[u]:seqs.offsets[u + 1]]
    kind = np.flatnonzero(c if last_cold else ~c)
    if len(kind):
      before = r[:kind[-1]][~c[:kind[-1]]]
      out[u] = before[-T:]
  return out


def test_long_history_is_the_last_visible_events_before_the_target(world):
  T, h = 24, 4
  split = cold_warm_split(world.sequences, world.catalog, cold_fraction=0.1, max_history=h,
                          num_negatives=2, eval_negatives=3, seed=0, long_history=T)
  for name, last_cold in (("warm", False), ("cold", True)):
    data = getattr(split, name)
    expected = _expected_long(world, split.cold_rows, T, last_cold)
    pos = np.flatnonzero(data.labels["click"] > 0)
    for i in pos:
      want = expected[data.user[i]]
      got = data.long_history[i]
      assert (got[:T - len(want)] == -1).all() and (got[T - len(want):] == want).all()
  train = split.train
  assert train.long_history.shape == (len(train), T)
  assert not np.isin(train.long_history, split.cold_rows).any()
  # The short window is the long history's tail; the long one reaches beyond it.
  assert (train.long_history[:, -h:] == train.history).all()
  assert ((train.long_history >= 0).sum(1) > h).any()
  # Positives and their negatives share one history; take() keeps it aligned.
  rows = np.arange(0, len(train), 7)
  assert (train.take(rows).long_history == train.long_history[rows]).all()


def test_long_history_off_by_default_and_bounded(world):
  split = cold_warm_split(world.sequences, world.catalog, max_history=4, num_negatives=1,
                          eval_negatives=2, seed=0)
  assert split.train.long_history is None and split.cold.long_history is None
  with pytest.raises(ConfigError, match="long_history"):
    cold_warm_split(world.sequences, world.catalog, long_history=513)
