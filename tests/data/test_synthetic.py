"""The synthetic world: reproducible, consistent, and its planted structure is recoverable."""

from __future__ import annotations

import json
import re
import time

import ml_collections
import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.data import synthetic
from lrm.data.synthetic import WorldConfig, make_world, read_world, snapshots, write_world


@pytest.fixture(scope="module")
def world() -> synthetic.World:
  return make_world(WorldConfig())


@pytest.fixture(scope="module")
def long_world() -> synthetic.World:
  """Ordinary users plus 40 long histories (1k-4k events) and a few live rooms."""
  return make_world(WorldConfig(seed=3, num_users=300, long_history_users=40,
                                long_history_min=1000, long_history_max=4000, num_rooms=300))


def _within_user(sequences) -> np.ndarray:
  """bool [n - 1]: event e and e + 1 belong to the same user."""
  same = np.ones(max(sequences.num_events - 1, 0), bool)
  ends = sequences.offsets[1:-1] - 1
  same[ends[(ends >= 0) & (ends < len(same))]] = False
  return same


def _event_topics(world) -> np.ndarray:
  return world.truth.item_topic[world.catalog.rows(world.sequences.items)]


def _nn_same_label(x: np.ndarray, labels: np.ndarray) -> float:
  """Share of rows whose cosine nearest neighbour (not itself) has the same label."""
  x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  sim = x @ x.T
  np.fill_diagonal(sim, -np.inf)
  return float((labels[sim.argmax(axis=1)] == labels).mean())


def _bag_of_words(texts: list[str]) -> np.ndarray:
  """Binary bag of words weighted by idf."""
  vocab: dict[str, int] = {}
  rows, cols = [], []
  for r, text in enumerate(texts):
    for token in set(re.findall(r"[a-z0-9]+", text.lower())):
      rows.append(r)
      cols.append(vocab.setdefault(token, len(vocab)))
  m = np.zeros((len(texts), len(vocab)))
  m[rows, cols] = 1.0
  return m * np.log(len(texts) / m.sum(axis=0))


def _assert_worlds_equal(a: synthetic.World, b: synthetic.World) -> None:
  assert a.config == b.config
  ca, cb = a.catalog, b.catalog
  np.testing.assert_array_equal(ca.item_ids, cb.item_ids)
  assert ca.fields == cb.fields
  np.testing.assert_array_equal(ca.timestamps, cb.timestamps)
  assert ca.embeddings.keys() == cb.embeddings.keys()
  for m in ca.embeddings:
    np.testing.assert_array_equal(ca.embeddings[m], cb.embeddings[m])
  sa, sb = a.sequences, b.sequences
  for name in ("user_ids", "offsets", "items", "timestamps", "event_types"):
    np.testing.assert_array_equal(getattr(sa, name), getattr(sb, name))
  assert sa.event_type_names == sb.event_type_names
  assert sa.signals.keys() == sb.signals.keys()
  for k in sa.signals:
    np.testing.assert_array_equal(sa.signals[k], sb.signals[k])
  ta, tb = a.truth.to_arrays(), b.truth.to_arrays()
  assert ta.keys() == tb.keys()
  for k in ta:
    assert ta[k].dtype == tb[k].dtype, k
    np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


# ------------------------------------------------------------------------------------------
# Reproducibility and config


def test_same_seed_same_world_and_other_seed_differs(world):
  _assert_worlds_equal(world, make_world(WorldConfig()))
  other = make_world(WorldConfig(seed=1))
  assert other.catalog.fields["title"] != world.catalog.fields["title"]
  assert not np.array_equal(other.truth.item_topic, world.truth.item_topic)
  assert not np.array_equal(other.sequences.items[:100], world.sequences.items[:100])


def test_components_have_their_own_random_streams(world):
  # More users: the catalog is untouched.
  more_users = make_world(WorldConfig(num_users=1500))
  assert more_users.catalog.fields == world.catalog.fields
  np.testing.assert_array_equal(more_users.catalog.embeddings["visual"],
                                world.catalog.embeddings["visual"])
  # Another exploration rate: the interest chain is untouched, the items drawn are not.
  explore = make_world(WorldConfig(explore_prob=0.3))
  np.testing.assert_array_equal(explore.truth.event_interest, world.truth.event_interest)
  assert explore.truth.event_explore.mean() > 2 * world.truth.event_explore.mean()
  # Rooms: users and items untouched.
  rooms = make_world(WorldConfig(num_rooms=10))
  np.testing.assert_array_equal(rooms.sequences.items, world.sequences.items)


@pytest.mark.parametrize("field,value", [
    ("seed", -1), ("branching", (6, 0, 4)), ("branching", ()), ("branching", "644"),
    ("latent_dim", 1), ("num_items", 100), ("item_spread", -0.1), ("title_noise", 1.5),
    ("modalities", {"visual": 0}), ("modalities", {"bad name": 8}), ("modality_rank", 64),
    ("num_users", 0), ("min_length", 0), ("mean_length", 2.0), ("max_length", 10),
    ("interests_per_user", 0), ("stay_prob", -0.1), ("explore_prob", "0.1"),
    ("duration_days", 0.0), ("long_history_users", 5000), ("long_history_max", 10),
    ("room_slices", 0), ("num_rooms", 2.5), ("seed", True),
])
def test_config_errors_name_the_field(field, value):
  with pytest.raises(ConfigError) as e:
    WorldConfig(**{field: value})
  assert e.value.field == field
  assert field in str(e.value)


def test_config_cross_field_checks():
  with pytest.raises(ConfigError) as e:
    WorldConfig(sibling_move_prob=0.7, return_move_prob=0.5)
  assert e.value.field == "return_move_prob"
  with pytest.raises(ConfigError) as e:
    WorldConfig(long_history_users=10, long_history_min=100, return_burst=32)
  assert e.value.field == "return_burst"


def test_config_dict_round_trip_and_prefixed_errors():
  config = WorldConfig(seed=7, branching=(3, 2), modalities=(("image", 8),), num_items=40)
  as_dict = config.to_dict()
  assert as_dict["branching"] == [3, 2] and as_dict["modalities"] == {"image": 8}
  assert json.loads(json.dumps(as_dict)) == as_dict
  assert WorldConfig.from_dict(as_dict) == config
  assert WorldConfig.from_dict(ml_collections.ConfigDict(as_dict)) == config
  with pytest.raises(ConfigError) as e:
    WorldConfig.from_dict({"num_itemz": 5}, where="data.world")
  assert e.value.field == "data.world.num_itemz"
  with pytest.raises(ConfigError) as e:
    WorldConfig.from_dict({"num_users": -3}, where="data.world")
  assert e.value.field == "data.world.num_users"
  assert "must be >= 1" in str(e.value)


# ------------------------------------------------------------------------------------------
# Consistency


def test_shapes_ids_and_events_are_consistent(world):
  config, catalog, seqs, truth = world.config, world.catalog, world.sequences, world.truth
  assert world.dataset.name == "synthetic"
  assert len(catalog) == config.num_items and len(seqs) == config.num_users
  assert len(np.unique(catalog.item_ids)) == len(catalog)
  assert len(np.unique(seqs.user_ids)) == len(seqs)
  seqs.check_items(catalog)
  assert seqs.lengths.min() >= config.min_length
  assert seqs.lengths.max() <= config.max_length
  assert abs(seqs.lengths.mean() - config.mean_length) < 2.0
  within = _within_user(seqs)
  assert (np.diff(seqs.timestamps)[within] > 0).all()
  assert not (seqs.items[1:] == seqs.items[:-1])[within].any()
  # Events only pick items that already exist.
  assert (catalog.timestamps[catalog.rows(seqs.items)] <= seqs.timestamps).all()
  n = seqs.num_events
  for name in ("event_interest", "event_topic", "event_explore"):
    assert getattr(truth, name).shape == (n,)
  np.testing.assert_array_equal(truth.event_topic, _event_topics(world))
  assert seqs.event_type_names == ("view", "like", "order")
  assert set(np.unique(seqs.event_types)) == {0, 1, 2}
  wt = seqs.signals["watch_time"]
  assert wt.min() >= 0 and wt.max() <= 1
  gmv = seqs.signals["gmv"]
  assert ((gmv > 0) == (seqs.event_types == 2)).all()
  for m, dim in config.modalities:
    assert catalog.embeddings[m].shape == (config.num_items, dim)


def test_topic_tree_and_catalog_fields(world):
  truth, catalog = world.truth, world.catalog
  assert len(truth.leaf_node) == 96 and len(truth.topic_names) == 6 + 24 + 96
  assert len(set(truth.topic_names.tolist())) == len(truth.topic_names)
  # Parent pointers agree with the paths, and children are closer to their parent than to
  # other nodes of the parent's level (child = parent + smaller offset).
  for level in (1, 2):
    nodes = truth.leaf_path[:, level]
    np.testing.assert_array_equal(truth.topic_parent[nodes], truth.leaf_path[:, level - 1])
  assert (truth.topic_depth[truth.leaf_node] == 2).all()
  mids = np.flatnonzero(truth.topic_depth == 1)
  tops = np.flatnonzero(truth.topic_depth == 0)
  c = truth.topic_centroids
  dist = np.linalg.norm(c[mids][:, None] - c[tops][None], axis=2)
  assert (tops[dist.argmin(axis=1)] == truth.topic_parent[mids]).mean() > 0.9
  assert truth.topic_names[0] == "Outdoor" and truth.leaf_names[0] == "Tents"
  # Categories are the leaf's path names (a few items list only a prefix).
  paths = truth.topic_names[truth.leaf_path[truth.item_topic]].tolist()
  cats = catalog.fields["categories"]
  full = np.array([c == p for c, p in zip(cats, paths)])
  assert all(p[:len(c)] == c for c, p in zip(cats, paths))
  assert 0.9 < full.mean() < 1.0
  # Brands: leaf brands stay in their leaf; shared brands span sibling leaves only.
  brand_leaf_parent = truth.leaf_parent[truth.item_topic]
  node_of_brand = truth.brand_node[truth.item_brand]
  leaf_brand = np.isin(node_of_brand, truth.leaf_node)
  assert (node_of_brand[leaf_brand] == truth.leaf_node[truth.item_topic][leaf_brand]).all()
  assert (node_of_brand[~leaf_brand] == brand_leaf_parent[~leaf_brand]).all()
  assert 0.2 < (~leaf_brand).mean() < 0.4
  assert catalog.fields["brand"] == truth.brand_names[truth.item_brand].tolist()
  # The catalog grows: ids follow creation times, some items appear after the first event.
  assert (np.diff(catalog.timestamps) >= 0).all()
  late = (catalog.timestamps > world.config.start_time).mean()
  assert 0.25 < late < 0.5


# ------------------------------------------------------------------------------------------
# Planted structure is recoverable


def test_consecutive_events_share_topics(world):
  topics = _event_topics(world)
  within = _within_user(world.sequences)
  consecutive = (topics[1:] == topics[:-1])[within].mean()
  rng = np.random.default_rng(0)
  a, b = rng.integers(len(topics), size=(2, 50_000))
  random_pairs = (topics[a] == topics[b]).mean()
  assert consecutive > 0.5
  assert consecutive > 10 * random_pairs


def test_embeddings_cluster_by_topic_and_fusion_helps(world):
  labels = world.truth.item_topic
  embs = world.catalog.embeddings
  single = {m: _nn_same_label(e, labels) for m, e in embs.items()}
  fused = _nn_same_label(np.concatenate(
      [e / np.linalg.norm(e, axis=1, keepdims=True) for e in embs.values()], axis=1), labels)
  chance = ((np.bincount(labels) / len(labels)) ** 2).sum()
  assert min(single.values()) > 0.8 > 10 * chance, single
  assert fused > max(single.values()) + 0.01, (fused, single)
  # Modalities are different views, not copies.
  assert not np.allclose(embs["visual"][:, :32], embs["audio"])


def test_titles_carry_topic_words(world):
  titles = world.catalog.fields["title"]
  labels = world.truth.item_topic
  acc = _nn_same_label(_bag_of_words(titles), labels)
  chance = ((np.bincount(labels) / len(labels)) ** 2).sum()
  assert 0.7 < acc < 0.99, acc  # recoverable, but not trivially perfect
  assert acc > 10 * chance
  named = np.mean([name in t for name, t in zip(world.truth.leaf_names[labels], titles)])
  assert 0.4 < named < 0.7
  assert len(set(titles)) > 0.99 * len(titles)


def test_interests_drift_mostly_to_siblings(world):
  seqs, truth = world.sequences, world.truth
  interest = truth.event_interest
  start, end = interest[seqs.offsets[:-1]], interest[seqs.offsets[1:] - 1]
  assert (start != end).mean() > 0.5
  within = _within_user(seqs)
  changed = (interest[1:] != interest[:-1]) & within
  parent, top = truth.leaf_parent, truth.leaf_path[:, 0]
  sibling = (parent[interest[1:]] == parent[interest[:-1]])[changed].mean()
  distant = (top[interest[1:]] != top[interest[:-1]])[changed].mean()
  assert sibling > 0.5 and sibling > 1.5 * distant, (sibling, distant)
  # Exploration happens at about its rate, and long-term interests come back.
  assert abs(truth.event_explore.mean() - world.config.explore_prob) < 0.02
  user = np.repeat(np.arange(len(seqs)), seqs.lengths)
  in_interests = (truth.user_interests[user] == interest[:, None]).any(axis=1)
  assert in_interests.mean() > 0.4


def test_watch_time_and_event_types_follow_interest(world):
  seqs, truth = world.sequences, world.truth
  on = truth.event_topic == truth.event_interest
  wt = seqs.signals["watch_time"]
  assert wt[on].mean() - wt[~on].mean() > 0.3
  # Likes and orders are far more frequent on-interest (multi-task heads have a signal).
  for kind in (1, 2):
    events = seqs.event_types == kind
    assert events[on].mean() > 5 * events[~on].mean() > 0


# ------------------------------------------------------------------------------------------
# Long histories, rooms


def test_long_histories_plant_returning_interests(long_world):
  config, seqs, truth = long_world.config, long_world.sequences, long_world.truth
  lengths = seqs.lengths
  assert truth.long_users.sum() == 40
  assert (lengths[truth.long_users] >= 1000).all() and (lengths[truth.long_users] <= 4000).all()
  assert lengths[truth.long_users].max() > 2 * lengths[truth.long_users].min()
  assert (lengths[~truth.long_users] <= config.max_length).all()
  users = truth.returning_users
  assert len(users) == 20 and truth.long_users[users].all()
  topics = _event_topics(long_world)
  seen_full, seen_recent = [], []
  for u in users:
    t = topics[seqs.offsets[u]:seqs.offsets[u + 1]]
    r, n = truth.return_topic[u], len(t)
    start, end = truth.return_burst_start[u], truth.return_burst_end[u]
    assert truth.return_target_event[u] == seqs.offsets[u + 1] - 1
    assert t[-1] == r                                   # the target returns ...
    assert end <= config.return_early_fraction * n      # ... after an early burst ...
    np.testing.assert_array_equal(np.flatnonzero(t == r)[:-1], np.arange(start, end))
    history = t[:-1]
    seen_full.append(r in history)
    seen_recent.append(r in history[-n // 2:])          # ... absent from the recent half
    # Not one of the user's long-term interests, nor a sibling of one.
    parents = truth.leaf_parent[truth.user_interests[u]]
    assert truth.leaf_parent[r] not in parents
  assert all(seen_full) and not any(seen_recent)
  # Controls: other long users have no planted target.
  others = truth.long_users & (truth.return_topic < 0)
  assert others.sum() == 20 and (truth.return_target_event[others] == -1).all()


def test_long_history_world_is_fast():
  config = WorldConfig(num_users=100, long_history_users=100, long_history_min=32768,
                       long_history_max=32768)
  t0 = time.perf_counter()
  world = make_world(config)
  elapsed = time.perf_counter() - t0
  assert world.sequences.num_events == 100 * 32768
  assert len(world.truth.returning_users) == 50
  assert elapsed < 8.0, elapsed


def test_default_world_is_fast():
  t0 = time.perf_counter()
  make_world(WorldConfig(seed=11))
  assert time.perf_counter() - t0 < 2.0


def test_live_rooms_have_a_dominant_topic(long_world):
  truth, config = long_world.truth, long_world.config
  slices = truth.room_slice_topics
  assert slices.shape == (config.num_rooms, config.room_slices)
  dominant = truth.room_dominant_topic
  share = (slices == dominant[:, None]).mean()
  assert 0.6 < share < 0.95  # mostly dominant, with excursions
  num_leaves = len(truth.leaf_node)
  majority = np.array([np.bincount(row, minlength=num_leaves).argmax() for row in slices])
  assert (majority == dominant).mean() >= 0.97
  # Per-level majority: the top-level category of most slices is the dominant's.
  top = truth.leaf_path[:, 0]
  top_majority = np.array([np.bincount(row).argmax() for row in top[slices]])
  assert (top_majority == top[dominant]).mean() >= 0.97
  away = slices != dominant[:, None]
  sibling = truth.leaf_parent[slices] == truth.leaf_parent[dominant][:, None]
  assert sibling[away].mean() > 0.3  # sibling excursions far above chance (3/95)
  # Slice content embeddings follow the slice's topic: nearest leaf centroid in the view.
  for m, emb in truth.room_slice_embeddings.items():
    assert emb.shape == (config.num_rooms, config.room_slices, dict(config.modalities)[m])
  items_visual = long_world.catalog.embeddings["visual"]
  item_topic = long_world.truth.item_topic
  centroids = np.stack([items_visual[item_topic == k].mean(0) for k in range(num_leaves)])
  flat = truth.room_slice_embeddings["visual"].reshape(-1, centroids.shape[1])
  nearest = np.argmin(((flat[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
  assert (nearest == slices.reshape(-1)).mean() > 0.7


# ------------------------------------------------------------------------------------------
# Snapshots and files


def test_snapshots_grow_monotonically(world):
  times = np.quantile(world.sequences.timestamps, [0.2, 0.5, 0.8]).tolist() + [np.inf]
  snaps = snapshots(world, times)
  counts = [(len(s.catalog), len(s.sequences), s.sequences.num_events) for s in snaps]
  for a, b in zip(counts, counts[1:]):
    assert all(x < y for x, y in zip(a, b)), counts
  for t, snap in zip(times, snaps):
    snap.sequences.check_items(snap.catalog)
    assert (snap.catalog.timestamps < t).all() and (snap.sequences.timestamps < t).all()
    assert snap.sequences.lengths.min() >= 1
    assert snap.meta["snapshot_time"] == t
  for a, b in zip(snaps, snaps[1:]):
    assert np.isin(a.catalog.item_ids, b.catalog.item_ids).all()
    assert np.isin(a.sequences.user_ids, b.sequences.user_ids).all()
  last = snaps[-1]
  assert len(last.catalog) == len(world.catalog)
  np.testing.assert_array_equal(last.sequences.items, world.sequences.items)


def test_write_read_round_trip(long_world, tmp_path):
  small = make_world(WorldConfig(num_users=50, num_items=300, long_history_users=4,
                                 long_history_min=500, long_history_max=800, num_rooms=3))
  write_world(small, tmp_path / "w")
  names = {p.relative_to(tmp_path / "w").as_posix() for p in (tmp_path / "w").rglob("*")}
  assert {"sequences.txt", "items.jsonl", "events.npz", "embeddings/visual.npy",
          "embeddings/audio.npy", "truth.npz", "world.json", "manifest.json"} <= names
  manifest = json.loads((tmp_path / "w" / "manifest.json").read_text())
  assert manifest["stage"] == "world" and manifest["counts"]["returning_users"] == 2
  back = read_world(tmp_path / "w")
  _assert_worlds_equal(small, back)
  assert back.dataset.name == "synthetic" and back.dataset.meta == small.dataset.meta
  first = (tmp_path / "w" / "sequences.txt").read_text().splitlines()[0].split()
  assert first == [str(x) for x in [1, *small.sequences.user(0).tolist()]]
  # Writing again over it works; a world whose manifest is gone is refused.
  write_world(small, tmp_path / "w")
  (tmp_path / "w" / "manifest.json").unlink()
  with pytest.raises(DataError):
    read_world(tmp_path / "w")


def test_other_tree_shapes_work():
  # Wider and deeper than the curated taxonomy: generated names, still unique.
  world = make_world(WorldConfig(branching=(9, 2, 2, 3), num_items=600, num_users=100,
                                 interests_per_user=2, modalities=(("image", 16),)))
  names = world.truth.topic_names
  assert len(names) == 9 + 18 + 36 + 108 and len(set(names.tolist())) == len(names)
  assert all(len(c) <= 4 for c in world.catalog.fields["categories"])
  assert set(world.catalog.embeddings) == {"image"}
  flat = make_world(WorldConfig(branching=(12,), num_items=100, num_users=20))
  assert flat.truth.leaf_path.shape == (12, 1)
  world.sequences.check_items(world.catalog)
