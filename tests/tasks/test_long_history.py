"""Long-history examples: histories strictly before targets, left padding, time features,
the returning-interest split, unique item SIDs, and a short training run with the trainer."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from lrm.core.errors import ConfigError
from lrm.data.splits import leave_one_out
from lrm.data.types import Catalog, Sequences
from lrm.tasks.long_history import (NUM_TIME_BUCKETS, eval_examples, item_sids, returning_split,
                                    time_bucket, training_examples)


@pytest.fixture
def data():
  catalog = Catalog(item_ids=np.arange(10, 30))
  items = [[10, 11, 12, 13, 14, 15], [20, 21], [22, 23, 24, 25]]
  times = [[0, 1, 3, 7, 15, 1000], [5, 6], [0, 10, 20, 30]]
  seqs = Sequences.from_lists([1, 2, 3], items, timestamps=times,
                              signals={"rating": [[5, 4, 3, 2, 1, 5], [1, 1], [2, 2, 2, 2]]})
  return catalog, seqs


def test_histories_hold_exactly_the_events_before_the_target(data):
  catalog, seqs = data
  ex = training_examples(seqs, catalog, length=4, per_user=3)
  # User 0: targets are its last 3 events; user 1: one (n - 1); user 2: 3.
  assert ex["user"].tolist() == [0, 0, 0, 1, 2, 2, 2]
  assert (ex["target"] + 10).tolist() == [13, 14, 15, 21, 23, 24, 25]
  assert (ex["history"][0]).tolist() == [-1, 0, 1, 2]          # rows of items 10, 11, 12
  assert (ex["history"][2]).tolist() == [1, 2, 3, 4]           # the 4 events before item 15
  assert (ex["history"][3]).tolist() == [-1, -1, -1, 10]
  for h, t, u in zip(ex["history"], ex["target"], ex["user"]):
    seq = seqs.user(u) - 10
    end = int(np.flatnonzero(seq == t)[0])
    real = h[h >= 0]
    np.testing.assert_array_equal(real, seq[max(0, end - 4):end])   # never the target or later
    assert (h[:4 - len(real)] == -1).all()                          # padding on the left
  pad = ex["history"] < 0
  for key in ("gap", "age", "kind"):
    assert (ex[key][pad] == 0).all() and (ex[key][~pad] > 0).all()
  # Gaps: 7 -> 15 is 8 s; ages for the target at t=1000: the event at t=15 is 985 s old.
  assert ex["gap"][2, 3] == time_bucket(8) and ex["age"][2, 3] == time_bucket(985)
  assert ex["kind"][2].tolist() == [4, 3, 2, 1]                  # the ratings
  with pytest.raises(ConfigError, match="per_user"):
    training_examples(seqs, catalog, length=4, per_user=0)


def test_eval_examples_and_bucket_constants(data):
  from lrm.models import compression
  catalog, seqs = data
  split = leave_one_out(seqs, min_length=3)
  ex = eval_examples(split.test, catalog, length=8)
  assert (ex["target"] + 10).tolist() == [15, 25]
  assert (ex["history"][0][-5:] + 10).tolist() == [10, 11, 12, 13, 14]
  assert NUM_TIME_BUCKETS == compression.NUM_TIME_BUCKETS
  assert time_bucket(0) == 1 and time_bucket(1e30) == NUM_TIME_BUCKETS - 1


def test_returning_split_trains_some_last_events_and_tests_the_others():
  from lrm.data.synthetic import WorldConfig, make_world
  world = make_world(WorldConfig(num_users=40, num_items=400, long_history_users=12,
                                 long_history_min=400, long_history_max=800))
  truth, seqs = world.truth, world.sequences
  split = returning_split(seqs, truth.long_users, truth.returning_users, test_fraction=0.5)
  test_users = np.searchsorted(seqs.user_ids, split.test.user_ids)
  assert truth.long_users[test_users].all() and len(test_users) == 6
  assert split.test_returning.sum() == 3
  lengths = seqs.lengths
  np.testing.assert_array_equal(split.test.targets, seqs.items[seqs.offsets[test_users + 1] - 1])
  np.testing.assert_array_equal(split.test.histories.lengths, lengths[test_users] - 1)
  trained_long = np.setdiff1d(np.flatnonzero(truth.long_users), test_users)
  expected = lengths - 1
  expected[trained_long] += 1
  np.testing.assert_array_equal(split.train.lengths, expected)
  # The returning topic of a test user is absent from its history since the burst.
  r = test_users[split.test_returning][0]
  item_topic = dict(zip(world.catalog.item_ids.tolist(), truth.item_topic.tolist()))
  u = int(np.flatnonzero(test_users == r)[0])
  topics = np.array([item_topic[i] for i in split.test.histories.user(u)])
  assert item_topic[int(split.test.targets[u])] == truth.return_topic[r]
  assert (topics[int(truth.return_burst_end[r]):] != truth.return_topic[r]).all()


def test_item_sids_are_unique_code_tuples():
  rng = np.random.default_rng(0)
  emb = np.repeat(rng.normal(size=(30, 8)), 3, axis=0)     # triplicates force collisions
  codes, sizes = item_sids(emb, (4, 4), seed=0, iters=5)
  assert codes.shape == (90, 3) and len(sizes) == 3 and sizes[2] >= 3
  assert len(np.unique(codes, axis=0)) == 90
  assert (codes < np.array(sizes)).all()


def test_a_short_training_run_lowers_the_loss(tmp_path):
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from lrm.data.synthetic import WorldConfig, make_world
  from lrm.models.compression import (CompressionConfig, LongHistoryConfig,
                                      LongHistoryRecommender, long_history_loss)
  from lrm.train.trainer import train
  world = make_world(WorldConfig(num_users=60, num_items=200, branching=(3, 2, 2)))
  codes, sizes = item_sids(world.catalog.embeddings["visual"], (4, 4), seed=0, iters=5)
  ex = training_examples(world.sequences, world.catalog, length=32, per_user=4)
  ex.pop("user")
  cfg = LongHistoryConfig(codebook_sizes=sizes, encoder=CompressionConfig(
      d_model=16, num_heads=2, head_dim=8, mlp_dim=32, num_layers=1, dropout=0.0, fold=8,
      summaries=2, num_globals=2))
  model = LongHistoryRecommender(cfg, rngs=nnx.Rngs(0))
  loss_fn = functools.partial(long_history_loss, item_codes=jnp.asarray(codes))
  batch = {k: jnp.asarray(v[:64]) for k, v in ex.items()}
  before = float(jax.jit(lambda m: loss_fn(m, batch)[0])(model))
  result = train(model, loss_fn, ex, workdir=tmp_path, progress=False, config={
      "batch_size": 32, "num_steps": 40, "log_every": 40, "checkpoint_every": 1000,
      "learning_rate": 3e-3, "warmup_steps": 5, "decay": "cosine"})
  after = float(jax.jit(lambda m: loss_fn(m, batch)[0])(model))
  assert result.step == 40 and np.isfinite(after)
  assert after < before - 0.3, (before, after)
