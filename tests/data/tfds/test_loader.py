"""Grain over the ArrayRecord user records: per-process shards, padding, determinism, resume."""

from __future__ import annotations

import grain
import numpy as np
import pytest

from lrm.core.errors import ConfigError
from lrm.data.tfds import PadUser, build_tfds, shard_range, user_batches, user_source


@pytest.fixture
def users(tiny_layout, tmp_path):
  name, dataset = build_tfds(tmp_path / "tfds", "layout", path=tiny_layout, max_part_bytes=300)
  return user_source(name, tmp_path / "tfds"), dataset


def _user_ids(it) -> list[int]:
  return [int(u) for batch in it for u in batch["user_id"]]


def test_two_processes_read_disjoint_shards_that_cover_the_data(users):
  source, dataset = users
  seen = []
  for index in range(2):
    shard = grain.sharding.ShardOptions(shard_index=index, shard_count=2)
    seen.append(_user_ids(user_batches(source, batch_size=1, max_len=4, seed=3,
                                       shard_options=shard, num_epochs=1)))
  assert not set(seen[0]) & set(seen[1])
  assert sorted(seen[0] + seen[1]) == sorted(dataset.sequences.user_ids.tolist())
  assert [len(s) for s in seen] == [4, 3]  # 7 users: contiguous ranges, the first one larger


def test_dropping_the_remainder_gives_equal_shards(users):
  source, _ = users
  counts = [len(_user_ids(user_batches(
      source, batch_size=1, max_len=4, seed=0, num_epochs=1,
      shard_options=grain.sharding.ShardOptions(i, 2, drop_remainder=True)))) for i in range(2)]
  assert counts == [3, 3]
  assert shard_range(7, grain.sharding.ShardOptions(1, 2, drop_remainder=True)) == (3, 6)
  assert shard_range(7, grain.sharding.ShardOptions(1, 2)) == (4, 7)


def test_default_shard_is_this_jax_process(users):
  source, dataset = users
  ids = _user_ids(user_batches(source, batch_size=1, max_len=4, seed=0, num_epochs=1))
  assert sorted(ids) == sorted(dataset.sequences.user_ids.tolist())  # one process: everything


def test_same_seed_same_batches_and_a_resumed_iterator_continues(users):
  source, _ = users
  shard = grain.sharding.ShardOptions(0, 2)
  make = lambda: user_batches(source, batch_size=2, max_len=3, seed=7, shard_options=shard)
  a, b = make(), make()
  for _ in range(2):
    x, y = next(a), next(b)
    for key in x:
      np.testing.assert_array_equal(x[key], y[key])
  state = a.get_state()
  expected = [next(a) for _ in range(5)]  # 4 users, 2 per batch: crosses epoch boundaries
  resumed = make()
  resumed.set_state(state)
  for want in expected:
    got = next(resumed)
    assert sorted(got) == sorted(want)
    for key in want:
      np.testing.assert_array_equal(got[key], want[key], err_msg=key)


def test_batches_are_left_padded_with_the_newest_events_last(users):
  source, dataset = users
  batch = next(user_batches(source, batch_size=7, max_len=3, seed=0, shuffle=False,
                            shard_options=grain.sharding.ShardOptions(0, 1)))
  seqs = dataset.sequences
  assert batch["item_ids"].shape == (7, 3) and batch["timestamps"].shape == (7, 3)
  for u in range(7):
    events = seqs.user(u)[-3:]
    assert batch["length"][u] == len(events)
    np.testing.assert_array_equal(batch["item_ids"][u][3 - len(events):], events)
    assert (batch["item_ids"][u][:3 - len(events)] == -1).all()
  assert "attributes" not in batch


def test_bad_sizes_name_the_field(users):
  with pytest.raises(ConfigError, match="batch_size"):
    user_batches(users[0], batch_size=0, max_len=3, seed=0)


def test_pad_user_keeps_the_most_recent():
  pad = PadUser(max_len=2)
  out = pad({"user_id": 5, "length": 3, "item_ids": np.array([7, 8, 9]),
             "signal_rating": np.array([1, 2, 3], np.float32), "attributes": b"{}"})
  assert out["item_ids"].tolist() == [8, 9] and out["signal_rating"].tolist() == [2, 3]
  assert out["length"] == 2 and "attributes" not in out
