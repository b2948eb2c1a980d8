"""The built-in synthetic world: a catalog and users with planted structure to recover.

Everything is drawn from `WorldConfig.seed`, one derived random stream per component (topics,
items, brands, titles, each modality, users, long histories, events, times, signals, rooms), so
changing one option leaves the other components as they were.

What is planted (and exposed on `World.truth`):
- a topic tree (default 6 x 4 x 4 = 96 leaf topics) with readable names; each node has a
  centroid in a latent space, a child being its parent plus a smaller offset;
- items: a leaf topic (Zipf popularity over topics and within a topic), a latent vector
  (centroid + item offset), a brand (leaf-specific, some shared by sibling leaves), a title of
  topic words + brand + generic words + an attribute (with noise), the category path, a price,
  a creation time (the catalog grows), and modality embeddings that are noisy low-rank linear
  views of the latent vector (so each modality alone loses something and fusion helps);
- users: a drifting interest over leaf topics (a Markov chain: stay, move to a sibling leaf,
  go back to one of a few long-term interests, or jump anywhere), occasional exploration,
  popularity-biased item choice among items that exist at the event's time, no immediate
  repeats, session-structured timestamps, event types and signals (`watch_time` is higher
  on-interest, `gmv` is the price of ordered items);
- optionally long histories (1k-32k events) where some users show an interest early, never
  again until their very last event (the "returning interest" target);
- optionally live rooms whose content topic changes per time slice around a dominant topic.

Usage:
  world = make_world(WorldConfig(seed=0))           # ~0.05 s for the default world
  world.dataset                                     # lrm.data.types.Dataset, name "synthetic"
  world.truth.item_topic, world.truth.returning_users
  write_world(world, "out/world"); read_world("out/world")
  snapshots(world, [t1, t2])                        # the growing catalog, for continued training

Shape letters: i items, u users, n events, l leaf topics, t topic nodes (all levels), d latent
dim, m a modality's dim, r rooms, s slices.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import pathlib
import re
import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from lrm.core import artifacts
from lrm.core.errors import ConfigError, DataError
from lrm.data import _words, layout
from lrm.data.types import Catalog, Dataset, Sequences

DATASET_NAME = "synthetic"
EVENT_TYPE_NAMES = ("view", "like", "order")
SIGNAL_NAMES = ("watch_time", "gmv")
TRUTH_FILE = "truth.npz"
CONFIG_FILE = "world.json"
STAGE = "world"

_DAY_S = 86400.0
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")
# Each leaf gets this many title words, each ancestor fewer; a title uses two leaf words.
_LEAF_VOCAB, _ANCESTOR_VOCAB, _LEAF_WORDS_PER_TITLE = 4, 3, 2
# Items every topic holds from the start: with two, "no immediate repeat" always has a choice.
_INITIAL_PER_TOPIC = 2

# One random stream per component (see module docstring).
(_S_TREE, _S_NAMES, _S_ITEMS, _S_BRANDS, _S_TITLES, _S_MODALITY, _S_USERS, _S_LONG, _S_EVENTS,
 _S_TIMES, _S_SIGNALS, _S_ROOMS) = range(1, 13)


def _rng(seed: int, stream: int, *extra: int) -> np.random.Generator:
  return np.random.default_rng([seed, stream, *extra])


# ------------------------------------------------------------------------------------------
# Config


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """Options of the synthetic world; validated on construction (ConfigError names the field)."""
  # Everything is drawn from this seed (one derived stream per component).
  seed: int = 0

  # --- topics
  # Children per node, top level first: (6, 4, 4) = 6 categories, 24 subcategories, 96 leaves.
  branching: tuple[int, ...] = (6, 4, 4)
  # Dimension of the latent space of topic centroids and item vectors.
  latent_dim: int = 32
  # Norm (about) of a top-level centroid; the latent space's unit.
  topic_spread: float = 1.0
  # Each level's offset from its parent is this times the level above's (child = parent + less).
  topic_spread_decay: float = 0.5
  # Zipf exponent of leaf-topic popularity (0 = all topics equally popular).
  topic_popularity_exponent: float = 1.0

  # --- items
  num_items: int = 2000
  # Zipf exponent of item popularity within a topic.
  item_popularity_exponent: float = 1.0
  # Norm (about) of an item's offset from its leaf centroid.
  item_spread: float = 0.25
  # Share of items that exist before the first event; the others appear during the world's time.
  initial_item_fraction: float = 0.6
  # Brands specific to one leaf topic.
  brands_per_leaf: int = 3
  # Brands shared by the sibling leaves under one parent (0: none).
  shared_brands_per_parent: int = 2
  # Probability that an item carries one of its parent's shared brands.
  shared_brand_prob: float = 0.3
  # Probability that each topic word of a title is replaced by a random word.
  title_noise: float = 0.25
  # Probability that a title names its leaf topic ("... Tents").
  title_name_prob: float = 0.5
  # Probability that an item lists only a prefix of its category path.
  category_truncate_prob: float = 0.05
  # Planted content embeddings: (name, dim) per modality, in `catalog.embeddings`.
  modalities: tuple[tuple[str, int], ...] = (("visual", 64), ("audio", 32))
  # Each modality sees a random rank-`modality_rank` view of the latent vector.
  modality_rank: int = 16
  # Norm (about) of the isotropic noise added to each modality view.
  modality_noise: float = 0.2

  # --- users
  num_users: int = 1000
  # Mean, minimum and maximum history length of ordinary users (geometric above the minimum).
  mean_length: float = 20.0
  min_length: int = 5
  max_length: int = 200
  # Long-term interests per user (leaf topics, drawn by popularity).
  interests_per_user: int = 3
  # Per event, probability that the interest stays on its topic.
  stay_prob: float = 0.8
  # When it moves: probability of a sibling leaf, of a return to a long-term interest;
  # the rest is a jump to any topic (by popularity).
  sibling_move_prob: float = 0.6
  return_move_prob: float = 0.25
  # Per event, probability that the item comes from a random topic instead of the interest.
  explore_prob: float = 0.1

  # --- time
  # Time of the first possible event (unix seconds) and the world's length in days.
  start_time: float = 1.6e9
  duration_days: float = 365.0
  # Mean gap between events of one session, probability of a new session, mean gap between
  # sessions (seconds). Long histories are compressed to fit the world's duration.
  session_gap_s: float = 120.0
  new_session_prob: float = 0.15
  session_break_s: float = 86400.0

  # --- long histories
  # Users (the last rows) with long histories, log-uniform between the two lengths.
  long_history_users: int = 0
  long_history_min: int = 1000
  long_history_max: int = 32768
  # Share of long-history users with a returning interest: a topic seen in a burst of
  # `return_burst` events within the first `return_early_fraction` of the history, absent
  # after, and back as the very last event.
  returning_fraction: float = 0.5
  return_burst: int = 32
  return_early_fraction: float = 0.1

  # --- live rooms (time-varying items)
  num_rooms: int = 0
  # Content slices per room.
  room_slices: int = 48
  # Per slice: probability of leaving the dominant topic, and of coming back when away.
  room_excursion_prob: float = 0.1
  room_excursion_end_prob: float = 0.4
  # Probability that an excursion goes to a sibling of the dominant topic (else anywhere).
  room_sibling_prob: float = 0.5
  # Norm (about) of a room's own offset from its topic centroids (its style).
  room_spread: float = 0.1

  def __post_init__(self):
    for f in dataclasses.fields(self):
      object.__setattr__(self, f.name, _coerce(f.name, getattr(self, f.name), f.default))
    self._validate()

  def _validate(self) -> None:
    req = _require
    req(self.seed >= 0, "seed", "must be >= 0")
    req(1 <= len(self.branching) <= 6, "branching", "must have 1 to 6 levels")
    req(all(b >= 1 for b in self.branching), "branching", "every level needs >= 1 child")
    leaves = math.prod(self.branching)
    req(leaves >= 2, "branching", "needs at least 2 leaf topics")
    req(leaves <= 100_000, "branching", f"{leaves} leaf topics is more than 100,000")
    req(self.latent_dim >= 2, "latent_dim", "must be >= 2")
    req(self.topic_spread > 0, "topic_spread", "must be > 0")
    req(0 < self.topic_spread_decay <= 1, "topic_spread_decay", "must be in (0, 1]")
    req(self.topic_popularity_exponent >= 0, "topic_popularity_exponent", "must be >= 0")
    req(self.num_items >= _INITIAL_PER_TOPIC * leaves, "num_items",
        f"must be >= {_INITIAL_PER_TOPIC} per leaf topic ({_INITIAL_PER_TOPIC * leaves})")
    req(self.item_popularity_exponent >= 0, "item_popularity_exponent", "must be >= 0")
    req(self.item_spread >= 0, "item_spread", "must be >= 0")
    for name in ("initial_item_fraction", "shared_brand_prob", "title_noise", "title_name_prob",
                 "category_truncate_prob", "stay_prob", "sibling_move_prob", "return_move_prob",
                 "explore_prob", "new_session_prob", "returning_fraction", "room_excursion_prob",
                 "room_excursion_end_prob", "room_sibling_prob"):
      req(0 <= getattr(self, name) <= 1, name, "must be a probability in [0, 1]")
    req(self.brands_per_leaf >= 1, "brands_per_leaf", "must be >= 1")
    req(self.shared_brands_per_parent >= 0, "shared_brands_per_parent", "must be >= 0")
    names = [m for m, _ in self.modalities]
    req(len(set(names)) == len(names), "modalities", f"duplicate modality names {names}")
    for m, dim in self.modalities:
      req(bool(_SAFE_NAME.match(m)), "modalities", f"name {m!r} must match {_SAFE_NAME.pattern}")
      req(dim >= 1, "modalities", f"'{m}' must have dim >= 1, got {dim}")
    req(1 <= self.modality_rank <= self.latent_dim, "modality_rank", "must be in [1, latent_dim]")
    req(self.modality_noise >= 0, "modality_noise", "must be >= 0")
    req(self.num_users >= 1, "num_users", "must be >= 1")
    req(self.min_length >= 1, "min_length", "must be >= 1")
    req(self.mean_length >= self.min_length, "mean_length", "must be >= min_length")
    req(self.max_length >= self.mean_length, "max_length", "must be >= mean_length")
    req(1 <= self.interests_per_user <= leaves, "interests_per_user",
        f"must be in [1, {leaves}] (the number of leaf topics)")
    req(self.sibling_move_prob + self.return_move_prob <= 1, "return_move_prob",
        "sibling_move_prob + return_move_prob must be <= 1")
    req(math.isfinite(self.start_time), "start_time", "must be finite")
    req(self.duration_days > 0, "duration_days", "must be > 0")
    req(self.session_gap_s > 0, "session_gap_s", "must be > 0")
    req(self.session_break_s > 0, "session_break_s", "must be > 0")
    req(0 <= self.long_history_users <= self.num_users, "long_history_users",
        "must be in [0, num_users]")
    req(self.long_history_min >= max(self.min_length, 2), "long_history_min",
        "must be >= min_length and >= 2")
    req(self.long_history_max >= self.long_history_min, "long_history_max",
        "must be >= long_history_min")
    req(self.return_burst >= 1, "return_burst", "must be >= 1")
    req(0 < self.return_early_fraction < 1, "return_early_fraction", "must be in (0, 1)")
    if self.long_history_users and self.returning_fraction:
      early = int(self.return_early_fraction * self.long_history_min)
      req(self.return_burst <= early, "return_burst",
          f"must fit in the early part of the shortest long history "
          f"(return_early_fraction * long_history_min = {early})")
      groups = self.branching[-2] * math.prod(self.branching[:-2]) if len(self.branching) > 1 \
          else leaves
      req(groups > self.interests_per_user, "interests_per_user",
          f"returning interests need a parent topic outside the user's interests: must be < "
          f"{groups} (parents of leaf topics)")
    req(self.num_rooms >= 0, "num_rooms", "must be >= 0")
    req(self.room_slices >= 1, "room_slices", "must be >= 1")
    req(self.room_spread >= 0, "room_spread", "must be >= 0")

  @property
  def num_leaves(self) -> int:
    return math.prod(self.branching)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any] | Any, *, where: str = "") -> "WorldConfig":
    """From a mapping or an ml_collections ConfigDict; `where` prefixes field names in errors."""
    if hasattr(values, "to_dict"):
      values = values.to_dict()
    prefix = f"{where}." if where else ""
    if not isinstance(values, Mapping):
      raise ConfigError(where or "world", f"expected a mapping, got {type(values).__name__}")
    known = {f.name for f in dataclasses.fields(cls)}
    for key in values:
      if key not in known:
        raise ConfigError(prefix + str(key), f"unknown field; known fields: {sorted(known)}")
    try:
      return cls(**values)
    except ConfigError as e:
      if not prefix:
        raise
      message = str(e)[len(f"config field '{e.field}': "):]
      raise ConfigError(prefix + e.field, message) from None

  def to_dict(self) -> dict[str, Any]:
    """JSON-friendly: `branching` as a list, `modalities` as {name: dim}."""
    out = dataclasses.asdict(self)
    out["branching"] = list(self.branching)
    out["modalities"] = dict(self.modalities)
    return out


def _require(ok: bool, field: str, message: str) -> None:
  if not ok:
    raise ConfigError(field, message)


def _coerce(name: str, value: Any, default: Any) -> Any:
  """Checks a field's type against its default's and normalises it (lists to tuples, ...)."""
  if isinstance(default, bool):
    _require(isinstance(value, (bool, np.bool_)), name, f"must be a bool, got {value!r}")
    return bool(value)
  if isinstance(default, int):
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
    _require(ok, name, f"must be an integer, got {value!r}")
    return int(value)
  if isinstance(default, float):
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    _require(ok, name, f"must be a number, got {value!r}")
    value = float(value)
    _require(not math.isnan(value), name, "must not be NaN")
    return value
  if name == "branching":
    ok = isinstance(value, (list, tuple)) and all(
        isinstance(b, (int, np.integer)) and not isinstance(b, bool) for b in value)
    _require(ok, name, f"must be a list of integers, got {value!r}")
    return tuple(int(b) for b in value)
  if name == "modalities":
    pairs = list(value.items()) if isinstance(value, Mapping) else value
    ok = isinstance(pairs, (list, tuple)) and all(
        isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
        and isinstance(p[1], (int, np.integer)) and not isinstance(p[1], bool) for p in pairs)
    _require(ok, name, f"must map modality names to integer dims, got {value!r}")
    return tuple((str(m), int(d)) for m, d in pairs)
  return value


# ------------------------------------------------------------------------------------------
# World and its planted truth


@dataclasses.dataclass(frozen=True, eq=False)
class Truth:
  """What the world planted; rows follow the dataset (catalog order, user rows, flat events).

  Topic nodes are numbered level by level (top level first); leaf topic `l` is node
  `leaf_node[l]`. Item and event topics are leaf indices in [0, l).
  """
  # Topic tree.
  topic_parent: np.ndarray        # int32 [t], -1 for top-level nodes
  topic_depth: np.ndarray         # int32 [t], 0 = top level
  topic_names: np.ndarray         # str [t], unique
  topic_centroids: np.ndarray     # float32 [t, d]
  leaf_node: np.ndarray           # int32 [l], node id of each leaf
  leaf_path: np.ndarray           # int32 [l, depth], node ids from the top level to the leaf
  topic_popularity: np.ndarray    # float64 [l], sums to 1
  # Items (catalog order).
  item_topic: np.ndarray          # int32 [i], leaf topic
  item_latent: np.ndarray         # float32 [i, d]
  item_popularity: np.ndarray     # float64 [i], within-topic weight (Zipf)
  item_quality: np.ndarray        # float32 [i], nudges watch time
  item_brand: np.ndarray          # int32 [i], index into brand_names
  brand_names: np.ndarray         # str [b]
  brand_node: np.ndarray          # int32 [b], topic node a brand belongs to (leaf or parent)
  # Users and events (flat event order).
  user_interests: np.ndarray      # int32 [u, k], long-term interests (leaf topics)
  event_interest: np.ndarray      # int32 [n], the user's interest topic at the event
  event_topic: np.ndarray         # int32 [n], the topic the item was drawn from
  event_explore: np.ndarray       # bool [n], drawn by exploration, not from the interest
  long_users: np.ndarray          # bool [u], has a long history
  return_topic: np.ndarray        # int32 [u], returning-interest topic, -1 if none
  return_burst_start: np.ndarray  # int64 [u], position (in the user's history) of the early
  return_burst_end: np.ndarray    #   burst [start, end) of return_topic; -1 if none
  return_target_event: np.ndarray  # int64 [u], flat index of the returning event, -1 if none
  # Live rooms.
  room_dominant_topic: np.ndarray  # int32 [r]
  room_slice_topics: np.ndarray   # int32 [r, s]
  room_slice_latent: np.ndarray   # float32 [r, s, d]
  room_slice_embeddings: Mapping[str, np.ndarray]  # modality -> float32 [r, s, m]

  @property
  def leaf_names(self) -> np.ndarray:
    return self.topic_names[self.leaf_node]

  @property
  def leaf_parent(self) -> np.ndarray:
    """int32 [l]: the parent node of each leaf (the leaf itself in a one-level tree)."""
    return self.leaf_path[:, -2] if self.leaf_path.shape[1] > 1 else self.leaf_node

  @property
  def returning_users(self) -> np.ndarray:
    """User rows with a returning interest."""
    return np.flatnonzero(self.return_topic >= 0)

  def to_arrays(self) -> dict[str, np.ndarray]:
    out = {}
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if isinstance(value, Mapping):
        out.update({f"{f.name}.{k}": v for k, v in value.items()})
      else:
        out[f.name] = value
    return out

  @classmethod
  def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> "Truth":
    kw: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
      if f.name == "room_slice_embeddings":
        prefix = f.name + "."
        kw[f.name] = {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
      elif f.name not in arrays:
        raise DataError(f"truth has no array '{f.name}'")
      else:
        kw[f.name] = arrays[f.name]
    return cls(**kw)


@dataclasses.dataclass(frozen=True, eq=False)
class World:
  """A generated world: its config, the observable dataset (name "synthetic") and the truth."""
  config: WorldConfig
  dataset: Dataset
  truth: Truth

  @property
  def catalog(self) -> Catalog:
    return self.dataset.catalog

  @property
  def sequences(self) -> Sequences:
    return self.dataset.sequences


def make_world(config: WorldConfig | None = None) -> World:
  """Generates the world described by `config` (default: the small CPU-sized world)."""
  config = config or WorldConfig()
  tree = _make_tree(config)
  items = _make_items(config, tree)
  brands = _make_brands(config, tree, items["topic"])
  titles, categories = _make_titles(config, tree, items["topic"], brands)
  projections = _modality_projections(config)
  embeddings = {m: _view(items["latent"], projections[m], config.modality_noise,
                         _rng(config.seed, _S_MODALITY, _name_key(m), 1))
                for m, _ in config.modalities}
  users = _make_users(config, tree)
  events = _simulate_events(config, tree, users)
  returns = _plant_returns(config, tree, users, events)
  times = _event_times(config, users)
  rows = _sample_items(config, items, events["topic"], times, users["offsets"])
  signals = _event_signals(config, tree, items, rows, events["interest"])
  rooms = _make_rooms(config, tree, projections)

  num_items = len(items["topic"])
  item_ids = np.arange(1, num_items + 1, dtype=np.int64)
  catalog = Catalog(
      item_ids=item_ids,
      fields={"title": titles, "brand": brands["names"][brands["item_brand"]].tolist(),
              "categories": categories, "price": items["price"].tolist()},
      embeddings=embeddings, timestamps=items["created"])
  sequences = Sequences(
      user_ids=np.arange(1, config.num_users + 1, dtype=np.int64), offsets=users["offsets"],
      items=item_ids[rows], timestamps=times, event_types=signals["event_types"],
      event_type_names=EVENT_TYPE_NAMES,
      signals={"watch_time": signals["watch_time"], "gmv": signals["gmv"]})
  dataset = Dataset(name=DATASET_NAME, catalog=catalog, sequences=sequences,
                    meta={"generator": __name__, "world": config.to_dict()})
  truth = Truth(
      topic_parent=tree["parent"], topic_depth=tree["depth"], topic_names=tree["names"],
      topic_centroids=tree["centroids"].astype(np.float32), leaf_node=tree["leaf_node"],
      leaf_path=tree["leaf_path"], topic_popularity=tree["popularity"],
      item_topic=items["topic"].astype(np.int32), item_latent=items["latent"].astype(np.float32),
      item_popularity=items["popularity"], item_quality=items["quality"].astype(np.float32),
      item_brand=brands["item_brand"].astype(np.int32), brand_names=brands["names"],
      brand_node=brands["node"].astype(np.int32),
      user_interests=users["interests"].astype(np.int32),
      event_interest=events["interest"].astype(np.int32),
      event_topic=events["topic"].astype(np.int32), event_explore=events["explore"],
      long_users=users["long"], **returns, **rooms)
  return World(config=config, dataset=dataset, truth=truth)


# ------------------------------------------------------------------------------------------
# Topics


def _make_tree(config: WorldConfig) -> dict[str, np.ndarray]:
  """A regular topic tree: parents, depths, names, centroids (child = parent + smaller offset)."""
  branching, d = config.branching, config.latent_dim
  sizes = np.cumprod(branching)                      # nodes per level
  level_start = np.concatenate([[0], np.cumsum(sizes)])
  num_nodes, depth = int(level_start[-1]), len(branching)
  parent = np.full(num_nodes, -1, np.int64)
  node_depth = np.zeros(num_nodes, np.int64)
  for level in range(depth):
    nodes = np.arange(sizes[level])
    node_depth[level_start[level] + nodes] = level
    if level:
      parent[level_start[level] + nodes] = level_start[level - 1] + nodes // branching[level]
  num_leaves = int(sizes[-1])
  leaves = np.arange(num_leaves)
  leaf_node = level_start[depth - 1] + leaves
  below = [math.prod(branching[j + 1:]) for j in range(depth)]  # leaves under a level-j node
  leaf_path = np.stack([level_start[j] + leaves // below[j] for j in range(depth)], axis=1)

  rng = _rng(config.seed, _S_TREE)
  centroids = np.zeros((num_nodes, d))
  for level in range(depth):
    lo, hi = level_start[level], level_start[level + 1]
    scale = config.topic_spread * config.topic_spread_decay ** level / math.sqrt(d)
    base = centroids[parent[lo:hi]] if level else 0.0
    centroids[lo:hi] = base + rng.normal(size=(hi - lo, d)) * scale
  popularity = _zipf_weights(num_leaves, config.topic_popularity_exponent, rng)
  return {"parent": parent.astype(np.int32), "depth": node_depth.astype(np.int32),
          "names": _topic_names(branching, _rng(config.seed, _S_NAMES)),
          "centroids": centroids, "leaf_node": leaf_node.astype(np.int32),
          "leaf_path": leaf_path.astype(np.int32), "popularity": popularity,
          "level_start": level_start}


def _zipf_weights(n: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
  """Zipf weights (sum 1) over n things in a random order of ranks."""
  ranks = rng.permutation(n)
  w = (ranks + 1.0) ** -exponent
  return w / w.sum()


def _topic_names(branching: Sequence[int], rng: np.random.Generator) -> np.ndarray:
  """Node names, level by level: the curated taxonomy where it reaches, generated beyond."""
  curated = [_curated_name(path) for path in _child_paths(branching)]
  used = {n for n in curated if n is not None}
  pairs = [f"{a} {b}" for a in _words.FALLBACK_ADJECTIVES for b in _words.FALLBACK_NOUNS]
  pairs = [pairs[i] for i in rng.permutation(len(pairs))]
  fallback = (name for k in range(1, 1 << 30)
              for name in (pairs if k == 1 else (f"{p} {k}" for p in pairs))
              if name not in used)
  return np.array([n if n is not None else next(fallback) for n in curated], dtype=str)


def _child_paths(branching: Sequence[int]) -> list[tuple[int, ...]]:
  """Child-index path of every node, level by level ((0,), (1,), ..., (0, 0), (0, 1), ...)."""
  paths: list[tuple[int, ...]] = []
  level = [()]
  for b in branching:
    level = [p + (c,) for p in level for c in range(b)]
    paths.extend(level)
  return paths


def _curated_name(path: tuple[int, ...]) -> str | None:
  children: Any = _words.TAXONOMY
  name = None
  for c in path:
    if children is None or c >= len(children):
      return None
    entry = children[c]
    name, children = (entry, None) if isinstance(entry, str) else entry
  return name


# ------------------------------------------------------------------------------------------
# Items


def _make_items(config: WorldConfig, tree: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Topic, popularity, creation time, latent vector, quality and price per item.

  Items are returned in catalog order: by creation time, so item ids grow with time.
  """
  rng = _rng(config.seed, _S_ITEMS)
  n, num_leaves, d = config.num_items, len(tree["leaf_node"]), config.latent_dim
  extra = rng.multinomial(n - _INITIAL_PER_TOPIC * num_leaves, tree["popularity"])
  topic = np.repeat(np.arange(num_leaves), _INITIAL_PER_TOPIC + extra)
  popularity_rank = _rank_within(topic, rng.random(n))
  popularity = (popularity_rank + 1.0) ** -config.item_popularity_exponent
  initial = (_rank_within(topic, rng.random(n)) < _INITIAL_PER_TOPIC) | (
      rng.random(n) < config.initial_item_fraction)
  horizon = config.duration_days * _DAY_S
  # Initial items were created during the half year before the start, others during the world.
  created = np.where(initial, config.start_time - rng.random(n) * horizon / 2,
                     config.start_time + rng.random(n) * horizon)
  latent = (tree["centroids"][tree["leaf_node"][topic]]
            + rng.normal(size=(n, d)) * config.item_spread / math.sqrt(d))
  quality = rng.normal(size=n)
  leaf_log_price = rng.normal(3.0, 0.8, size=num_leaves)
  price = np.round(np.exp(leaf_log_price[topic] + rng.normal(0.0, 0.3, size=n)), 2)
  order = np.argsort(created, kind="stable")
  return {"topic": topic[order], "popularity": popularity[order], "created": created[order],
          "latent": latent[order], "quality": quality[order], "price": price[order]}


def _rank_within(groups: np.ndarray, keys: np.ndarray) -> np.ndarray:
  """Rank (0-based) of each element by `keys` within its group."""
  order = np.lexsort((keys, groups))
  sorted_groups = groups[order]
  starts = np.searchsorted(sorted_groups, sorted_groups, side="left")
  rank = np.empty(len(groups), np.int64)
  rank[order] = np.arange(len(groups)) - starts
  return rank


def _make_brands(config: WorldConfig, tree: Mapping[str, np.ndarray],
                 topic: np.ndarray) -> dict[str, np.ndarray]:
  """Brands: a few per leaf, a few shared by each parent's leaves; one per item (skewed)."""
  rng = _rng(config.seed, _S_BRANDS)
  num_leaves, n = len(tree["leaf_node"]), len(topic)
  per_leaf = config.brands_per_leaf
  has_parents = tree["leaf_path"].shape[1] > 1
  per_parent = config.shared_brands_per_parent if has_parents else 0
  parent_of_leaf = tree["leaf_path"][:, -2] if has_parents else tree["leaf_node"]
  parents = np.unique(parent_of_leaf) if per_parent else np.zeros(0, np.int64)
  num_brands = num_leaves * per_leaf + len(parents) * per_parent
  node = np.concatenate([np.repeat(tree["leaf_node"], per_leaf), np.repeat(parents, per_parent)])
  # Within a group of brands, the first is the most common (u**2 skews towards 0).
  leaf_brand = topic * per_leaf + (rng.random(n) ** 2 * per_leaf).astype(np.int64)
  item_brand = leaf_brand
  if per_parent:
    parent_row = np.searchsorted(parents, parent_of_leaf[topic])
    shared = (num_leaves * per_leaf + parent_row * per_parent
              + (rng.random(n) ** 2 * per_parent).astype(np.int64))
    item_brand = np.where(rng.random(n) < config.shared_brand_prob, shared, leaf_brand)
  return {"names": _brand_names(num_brands, rng), "node": node, "item_brand": item_brand}


def _brand_names(count: int, rng: np.random.Generator) -> np.ndarray:
  """`count` unique made-up brand names ("Norvex", "Kalora", ...)."""
  w = _words
  two = [a + c for a in w.BRAND_ONSETS for c in w.BRAND_CODAS]
  three = [a + b + c for a in w.BRAND_ONSETS for b in w.BRAND_MIDDLES for c in w.BRAND_CODAS]
  pool = list(dict.fromkeys(two + three))
  pool = [pool[i] for i in rng.permutation(len(pool))]
  names = [pool[k % len(pool)] + ("" if k < len(pool) else f" {k // len(pool) + 1}")
           for k in range(count)]
  return np.array(names, dtype=str)


def _make_titles(config: WorldConfig, tree: Mapping[str, np.ndarray], topic: np.ndarray,
                 brands: Mapping[str, np.ndarray]) -> tuple[list[str], list[list[str]]]:
  """Titles (brand + topic words + generic words + an attribute) and category paths.

  Each leaf has a small vocabulary, and so has each ancestor (siblings share their parent's
  words); a title takes two leaf words and one word per ancestor level, each replaced by a
  random word with probability `title_noise`, and names its leaf with `title_name_prob`.
  """
  rng = _rng(config.seed, _S_TITLES)
  w = _words
  pool = np.array([s.capitalize() for s in w.DESCRIPTORS])
  n, depth = len(topic), tree["leaf_path"].shape[1]
  level_start = tree["level_start"]
  sizes = np.diff(level_start)
  # Vocabulary slots: leaves first, then ancestor levels from the parent up; the pool is
  # handed out in random order and only reused once spent.
  vocab_sizes = [_LEAF_VOCAB] + [_ANCESTOR_VOCAB] * (depth - 1)
  level_of_vocab = [depth - 1] + list(range(depth - 2, -1, -1))
  total = sum(int(sizes[lv]) * k for lv, k in zip(level_of_vocab, vocab_sizes))
  draws = np.concatenate([rng.permutation(len(pool)) for _ in range(-(-total // len(pool)))])
  slots, used = [], 0
  for lv, k in zip(level_of_vocab, vocab_sizes):
    vocab = draws[used:used + sizes[lv] * k].reshape(sizes[lv], k)
    used += sizes[lv] * k
    node_row = tree["leaf_path"][topic, lv] - level_start[lv]  # [n] row of the item's ancestor
    if lv == depth - 1:
      pick = np.argsort(rng.random((n, k)), axis=1)[:, :_LEAF_WORDS_PER_TITLE]
      slots += [vocab[node_row, pick[:, j]] for j in range(_LEAF_WORDS_PER_TITLE)]
    else:
      word = vocab[node_row, rng.integers(k, size=n)]
      # The parent's word always appears; higher levels' half of the time.
      present = np.ones(n, bool) if lv == depth - 2 else rng.random(n) < 0.5
      slots.append(np.where(present, word, -1))
  words = np.stack(slots, axis=1)
  noisy = (rng.random(words.shape) < config.title_noise) & (words >= 0)
  words = np.where(noisy, rng.integers(len(pool), size=words.shape), words)
  # Topic words in random order.
  keys = np.where(words >= 0, rng.random(words.shape), 2.0)
  words = np.take_along_axis(words, np.argsort(keys, axis=1), axis=1)

  leaf_names = tree["names"][tree["leaf_node"]]
  with_name = rng.random(n) < config.title_name_prob
  generic = rng.integers(len(w.GENERIC_WORDS), size=(n, 2))
  second_generic = rng.random(n) < 0.3
  attr_kind = rng.integers(4, size=n)
  color = rng.integers(len(w.COLORS), size=n)
  pack = rng.integers(2, 13, size=n)
  size = rng.integers(len(w.SIZES), size=n)
  model = rng.integers(100, 1000, size=n)
  letter = rng.integers(26, size=n)
  brand_names = brands["names"][brands["item_brand"]]

  titles = []
  for i in range(n):
    parts = [str(brand_names[i]), w.GENERIC_WORDS[generic[i, 0]]]
    if second_generic[i] and generic[i, 1] != generic[i, 0]:
      parts.append(w.GENERIC_WORDS[generic[i, 1]])
    parts += [str(pool[x]) for x in words[i] if x >= 0]
    if with_name[i]:
      parts.append(str(leaf_names[topic[i]]))
    kind = attr_kind[i]
    attribute = (w.COLORS[color[i]] if kind == 0 else f"Pack of {pack[i]}" if kind == 1
                 else f"Size {w.SIZES[size[i]]}" if kind == 2
                 else f"Model {chr(65 + letter[i])}{model[i]}")
    titles.append(" ".join(parts) + ", " + attribute)

  path_names = tree["names"][tree["leaf_path"]]  # [l, depth]
  keep = np.full(n, depth)
  if depth > 1:
    truncate = rng.random(n) < config.category_truncate_prob
    keep = np.where(truncate, rng.integers(1, depth, size=n), depth)
  categories = [path_names[topic[i], :keep[i]].tolist() for i in range(n)]
  return titles, categories


def _name_key(name: str) -> int:
  """A stable integer per modality name, so each modality's stream ignores the others."""
  return zlib.crc32(name.encode("utf-8"))


def _modality_projections(config: WorldConfig) -> dict[str, np.ndarray]:
  """Per modality, a random rank-r linear map [d, m] that preserves norms on average."""
  d, r = config.latent_dim, config.modality_rank
  out = {}
  for name, m in config.modalities:
    rng = _rng(config.seed, _S_MODALITY, _name_key(name), 0)
    basis, _ = np.linalg.qr(rng.normal(size=(d, r)))          # [d, r] orthonormal
    lift = rng.normal(size=(r, m)) * math.sqrt(d / (r * m))  # E|x @ basis @ lift|^2 = |x|^2
    out[name] = basis @ lift
  return out


def _view(latent: np.ndarray, projection: np.ndarray, noise: float,
          rng: np.random.Generator) -> np.ndarray:
  """A noisy linear view: latent [..., d] -> float32 [..., m]."""
  m = projection.shape[1]
  out = latent @ projection + rng.normal(size=latent.shape[:-1] + (m,)) * noise / math.sqrt(m)
  return out.astype(np.float32)


# ------------------------------------------------------------------------------------------
# Users and events


def _make_users(config: WorldConfig, tree: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """History lengths (ordinary users first, long-history users last) and long-term interests."""
  rng = _rng(config.seed, _S_USERS)
  num_long = config.long_history_users
  num_short = config.num_users - num_long
  excess = config.mean_length - config.min_length
  short = config.min_length + rng.geometric(1.0 / (excess + 1.0), size=num_short) - 1
  short = np.minimum(short, config.max_length)
  long_rng = _rng(config.seed, _S_LONG, 0)
  lo, hi = math.log(config.long_history_min), math.log(config.long_history_max)
  long = np.exp(lo + long_rng.random(num_long) * (hi - lo))
  long = np.clip(np.round(long), config.long_history_min, config.long_history_max)
  lengths = np.concatenate([short, long]).astype(np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  # Long-term interests: k distinct leaves by popularity (Gumbel top-k), strongest first.
  keys = np.log(tree["popularity"])[None, :] + rng.gumbel(size=(config.num_users,
                                                                  len(tree["popularity"])))
  k = config.interests_per_user
  top = np.argpartition(-keys, k - 1, axis=1)[:, :k]
  top = np.take_along_axis(top, np.argsort(-np.take_along_axis(keys, top, 1), axis=1), 1)
  is_long = np.arange(config.num_users) >= num_short
  return {"lengths": lengths, "offsets": offsets, "interests": top, "long": is_long}


def _sample_topics(popularity: np.ndarray, u: np.ndarray) -> np.ndarray:
  """Leaf topics by popularity, one per uniform in `u`."""
  cdf = np.cumsum(popularity)
  return np.minimum(np.searchsorted(cdf, u * cdf[-1], side="right"), len(popularity) - 1)


def _simulate_events(config: WorldConfig, tree: Mapping[str, np.ndarray],
                     users: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The interest chain and exploration, for all users at once.

  The interest is a Markov chain over leaves: per event it stays (stay_prob) or moves: to a
  sibling leaf, back to a long-term interest, or anywhere (by popularity). A history starts
  on a long-term interest. Vectorised: a "fresh" event (start, return or jump) fixes the
  topic; sibling moves after it keep its parent and add a non-zero step (mod branching) to the
  leaf's position among its siblings, so a cumulative sum gives every topic.
  """
  # Separate streams for the chain, jumps and exploration: changing explore_prob, say,
  # leaves the interest chain as it was.
  rng = _rng(config.seed, _S_EVENTS, 0)
  jump_rng, explore_rng = _rng(config.seed, _S_EVENTS, 2), _rng(config.seed, _S_EVENTS, 3)
  offsets, interests = users["offsets"], users["interests"]
  n = int(offsets[-1])
  user = np.repeat(np.arange(len(offsets) - 1), np.diff(offsets))
  first = np.zeros(n, bool)
  first[offsets[:-1][np.diff(offsets) > 0]] = True

  move = (rng.random(n) >= config.stay_prob) & ~first
  kind = rng.random(n)
  sibling = move & (kind < config.sibling_move_prob)
  back = move & ~sibling & (kind < config.sibling_move_prob + config.return_move_prob)
  jump = move & ~sibling & ~back
  fresh = first | back | jump
  fresh_topic = np.zeros(n, np.int64)
  to_interest = np.flatnonzero(first | back)
  fresh_topic[to_interest] = interests[user[to_interest],
                                       rng.integers(interests.shape[1], size=len(to_interest))]
  to_jump = np.flatnonzero(jump)
  fresh_topic[to_jump] = _sample_topics(tree["popularity"], jump_rng.random(len(to_jump)))

  b = config.branching[-1]
  step = np.where(sibling, 1 + (rng.random(n) * (b - 1)).astype(np.int64), 0)
  anchor = np.maximum.accumulate(np.where(fresh, np.arange(n), 0))
  csum = np.cumsum(step)
  shift = csum - csum[anchor]
  base = fresh_topic[anchor]
  interest = (base // b) * b + (base % b + shift) % b

  explore = explore_rng.random(n) < config.explore_prob
  topic = interest.copy()
  topic[explore] = _sample_topics(tree["popularity"], explore_rng.random(int(explore.sum())))
  return {"interest": interest, "topic": topic, "explore": explore, "user": user}


def _plant_returns(config: WorldConfig, tree: Mapping[str, np.ndarray],
                   users: Mapping[str, np.ndarray],
                   events: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """Returning interests in long histories (edits `events` in place).

  For the chosen users, a topic R whose parent is none of their interests' parents gets an
  early burst of events and is the topic of the last event; everywhere else it is replaced by
  the user's first interest, so R is seen only in the burst and at the end.
  """
  rng = _rng(config.seed, _S_LONG, 1)
  num_users = config.num_users
  offsets, lengths = users["offsets"], users["lengths"]
  out = {"return_topic": np.full(num_users, -1, np.int32),
         "return_burst_start": np.full(num_users, -1, np.int64),
         "return_burst_end": np.full(num_users, -1, np.int64),
         "return_target_event": np.full(num_users, -1, np.int64)}
  long_rows = np.flatnonzero(users["long"])
  count = int(round(config.returning_fraction * len(long_rows)))
  if not count:
    return out
  rows = np.sort(rng.choice(long_rows, size=count, replace=False))
  leaf_group = tree["leaf_path"][:, -2] if tree["leaf_path"].shape[1] > 1 else tree["leaf_node"]
  interest_groups = leaf_group[users["interests"][rows]]          # [count, k]
  banned = (leaf_group[None, :, None] == interest_groups[:, None, :]).any(axis=2)
  keys = np.log(tree["popularity"])[None, :] + rng.gumbel(size=banned.shape)
  target = np.argmax(np.where(banned, -np.inf, keys), axis=1)
  early = np.floor(config.return_early_fraction * lengths[rows]).astype(np.int64)
  start = (rng.random(count) * (early - config.return_burst + 1)).astype(np.int64)
  end = start + config.return_burst
  last = offsets[rows + 1] - 1

  # Per event of the chosen users: its user's R, burst bounds and position.
  user_r = np.full(num_users, -1, np.int64)
  user_r[rows] = target
  user_start = np.zeros(num_users, np.int64)
  user_end = np.zeros(num_users, np.int64)
  user_start[rows], user_end[rows] = start, end
  u = events["user"]
  pos = np.arange(len(u)) - offsets[u]
  r = user_r[u]
  chosen = r >= 0
  in_burst = chosen & (pos >= user_start[u]) & (pos < user_end[u])
  is_last = chosen & (pos == lengths[u] - 1)
  elsewhere = chosen & ~in_burst & ~is_last
  substitute = users["interests"][u, 0]
  for key in ("interest", "topic"):
    a = events[key]
    a[elsewhere & (a == r)] = substitute[elsewhere & (a == r)]
    a[in_burst | is_last] = r[in_burst | is_last]
  events["explore"][in_burst | is_last] = False
  out["return_topic"][rows] = target
  out["return_burst_start"][rows] = start
  out["return_burst_end"][rows] = end
  out["return_target_event"][rows] = last
  return out


def _event_times(config: WorldConfig, users: Mapping[str, np.ndarray]) -> np.ndarray:
  """Increasing timestamps per user: short gaps within sessions, long ones between.

  Each user starts at a random time (long histories near the start) and a history that
  would run past the world's end is compressed to fit it.
  """
  rng = _rng(config.seed, _S_TIMES)
  offsets, lengths = users["offsets"], users["lengths"]
  n, horizon = int(offsets[-1]), config.duration_days * _DAY_S
  new_session = rng.random(n) < config.new_session_prob
  gaps = 1.0 + np.where(new_session, rng.exponential(config.session_break_s, n),
                        rng.exponential(config.session_gap_s, n))
  gaps[offsets[:-1][lengths > 0]] = 0.0
  csum = np.cumsum(gaps)
  before = np.concatenate([[0.0], csum])[offsets[:-1]]  # cumulative gap before each user
  elapsed = csum - np.repeat(before, lengths)             # time since the user's first event
  span = np.concatenate([[0.0], csum])[offsets[1:]] - before
  start_share = np.where(users["long"], 0.02, 0.5)
  start = rng.random(len(lengths)) * start_share * horizon
  scale = np.minimum(1.0, (horizon - start) / np.maximum(span, 1e-9))
  return config.start_time + np.repeat(start, lengths) + np.repeat(scale, lengths) * elapsed


def _sample_items(config: WorldConfig, items: Mapping[str, np.ndarray], topic: np.ndarray,
                  times: np.ndarray, offsets: np.ndarray) -> np.ndarray:
  """Catalog rows per event: popularity-weighted among the items of the event's topic that
  exist at the event's time, never the same item twice in a row."""
  rng = _rng(config.seed, _S_EVENTS, 1)
  n = len(topic)
  created = items["created"]
  c0, cspan = created.min(), created.max() - created.min() + 1.0
  by_topic = np.lexsort((created, items["topic"]))         # rows sorted by (topic, created)
  key = items["topic"][by_topic] * cspan + (created[by_topic] - c0)
  topic_start = np.searchsorted(items["topic"][by_topic], np.arange(topic.max(initial=0) + 1))
  lo = topic_start[topic]
  # Items of the topic that exist at the event's time (clipped: events after the last creation).
  hi = np.searchsorted(key, topic * cspan + np.minimum(times - c0, cspan - 0.5), side="right")
  cum = np.concatenate([[0.0], np.cumsum(items["popularity"][by_topic])])

  def draw(idx: np.ndarray) -> np.ndarray:
    target = cum[lo[idx]] + rng.random(len(idx)) * (cum[hi[idx]] - cum[lo[idx]])
    return np.clip(np.searchsorted(cum, target, side="right") - 1, lo[idx], hi[idx] - 1)

  pos = draw(np.arange(n))
  not_first = np.ones(n, bool)
  not_first[offsets[:-1][np.diff(offsets) > 0]] = False
  for attempt in range(10_000):
    clash = np.flatnonzero((pos[1:] == pos[:-1]) & not_first[1:]) + 1
    if not len(clash):
      break
    if attempt < 3:  # redraw by popularity first ...
      pos[clash] = draw(clash)
    else:  # ... then any other item of the topic (the previous one exists, so n_avail >= 2)
      avail = hi[clash] - lo[clash]
      prev = pos[clash - 1] - lo[clash]
      step = 1 + (rng.random(len(clash)) * (avail - 1)).astype(np.int64)
      pos[clash] = lo[clash] + (prev + step) % avail
  else:
    raise RuntimeError("could not remove immediate repeats")  # unreachable in practice
  return by_topic[pos]


def _event_signals(config: WorldConfig, tree: Mapping[str, np.ndarray],
                   items: Mapping[str, np.ndarray], rows: np.ndarray,
                   interest: np.ndarray) -> dict[str, np.ndarray]:
  """watch_time (higher when the item's topic is close to the interest), event types, gmv."""
  rng = _rng(config.seed, _S_SIGNALS)
  n = len(rows)
  path = tree["leaf_path"]
  # Shared depth of the item's and the interest's paths (node ids are unique per level).
  affinity = (path[items["topic"][rows]] == path[interest]).sum(axis=1) / path.shape[1]
  watch = 0.15 + 0.6 * affinity + 0.05 * items["quality"][rows] + rng.normal(0, 0.1, n)
  watch = np.clip(watch, 0.0, 1.0)
  p_like = 0.5 / (1.0 + np.exp(-8.0 * (watch - 0.7)))
  p_order = 0.2 * p_like
  u = rng.random(n)
  types = np.where(u < p_order, 2, np.where(u < p_order + p_like, 1, 0)).astype(np.int32)
  gmv = np.where(types == 2, items["price"][rows], 0.0)
  return {"watch_time": watch.astype(np.float32), "event_types": types,
          "gmv": gmv.astype(np.float32)}


# ------------------------------------------------------------------------------------------
# Live rooms


def _make_rooms(config: WorldConfig, tree: Mapping[str, np.ndarray],
                projections: Mapping[str, np.ndarray]) -> dict[str, Any]:
  """Rooms whose slice topics stay on a dominant topic, with excursions (sibling or anywhere).

  Excursions are runs: from the dominant topic one starts with room_excursion_prob per slice,
  and ends with room_excursion_end_prob. Slice content = topic centroid + the room's own
  offset + slice noise, seen through the same modality views as items.
  """
  rng = _rng(config.seed, _S_ROOMS)
  r, s, d = config.num_rooms, config.room_slices, config.latent_dim
  num_leaves, b = len(tree["leaf_node"]), config.branching[-1]
  dominant = _sample_topics(tree["popularity"], rng.random(r))
  topics = np.empty((r, s), np.int64)
  away = np.zeros(r, bool)
  current = dominant.copy()
  for t in range(s):  # a loop over slices, vectorised over rooms
    leave = ~away & (rng.random(r) < config.room_excursion_prob)
    come_back = away & (rng.random(r) < config.room_excursion_end_prob)
    to_sibling = rng.random(r) < config.room_sibling_prob
    sibling = (dominant // b) * b + (dominant % b + 1 + (rng.random(r) * max(b - 1, 1))
                                     .astype(np.int64)) % b
    anywhere = (dominant + 1 + (rng.random(r) * (num_leaves - 1)).astype(np.int64)) % num_leaves
    excursion = np.where(to_sibling & (b > 1), sibling, anywhere)
    current = np.where(leave, excursion, np.where(come_back, dominant, current))
    away = (away & ~come_back) | leave
    topics[:, t] = current
  room_offset = rng.normal(size=(r, 1, d)) * config.room_spread / math.sqrt(d)
  latent = (tree["centroids"][tree["leaf_node"][topics]] + room_offset
            + rng.normal(size=(r, s, d)) * config.item_spread / math.sqrt(d))
  embeddings = {m: _view(latent, projections[m], config.modality_noise,
                         _rng(config.seed, _S_ROOMS, _name_key(m)))
                for m, _ in config.modalities}
  return {"room_dominant_topic": dominant.astype(np.int32),
          "room_slice_topics": topics.astype(np.int32),
          "room_slice_latent": latent.astype(np.float32),
          "room_slice_embeddings": embeddings}


# ------------------------------------------------------------------------------------------
# Snapshots and files


def snapshots(world: World | Dataset, times: Sequence[float]) -> list[Dataset]:
  """Per time: the items created and the events strictly before it (users with no event yet
  are left out). Every event's item is in its snapshot's catalog, since an event only picks
  items that already exist."""
  dataset = world.dataset if isinstance(world, World) else world
  catalog, sequences = dataset.catalog, dataset.sequences
  if catalog.timestamps is None or sequences.timestamps is None:
    raise DataError("snapshots need item and event timestamps")
  out = []
  for t in times:
    t = float(t)
    seqs = sequences.select_events(sequences.timestamps < t)
    seqs = seqs.take_users(np.flatnonzero(seqs.lengths > 0))
    out.append(Dataset(name=dataset.name,
                       catalog=catalog.take(np.flatnonzero(catalog.timestamps < t)),
                       sequences=seqs, meta={**dataset.meta, "snapshot_time": t}))
  return out


_MANIFEST_BASE = ("stage", "created", "command", "versions", "commit", "config", "counts")


def write_world(world: World, path: str | os.PathLike) -> None:
  """Writes the dataset in the standard layout (lrm.data.layout) plus truth.npz and world.json;
  manifest.json (stage "world") goes last."""
  directory = pathlib.Path(path)
  directory.mkdir(parents=True, exist_ok=True)
  # Any earlier manifest goes first, so a crash mid-write never leaves a complete-looking world.
  (directory / artifacts.MANIFEST).unlink(missing_ok=True)
  config = world.config.to_dict()
  with artifacts.atomic_path(directory / TRUTH_FILE) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **world.truth.to_arrays())
  artifacts.atomic_write_json(directory / CONFIG_FILE, config)
  layout.write_dataset(directory, world.dataset, config=config)
  # Keep what the dataset manifest says (name, files, meta) and add the world's part.
  extra = {k: v for k, v in artifacts.read_manifest(directory).items() if k not in _MANIFEST_BASE}
  extra["files"] = sorted([*extra.get("files", []), TRUTH_FILE, CONFIG_FILE])
  truth = world.truth
  counts = {"users": len(world.sequences), "items": len(world.catalog),
            "interactions": int(world.sequences.num_events),
            "leaf_topics": int(len(truth.leaf_node)), "long_users": int(truth.long_users.sum()),
            "returning_users": int(len(truth.returning_users)),
            "rooms": int(len(truth.room_dominant_topic))}
  artifacts.write_manifest(directory, stage=STAGE, config=config, counts=counts, **extra)


def read_world(path: str | os.PathLike) -> World:
  """Reads what write_world wrote (DataError if it is missing or incomplete)."""
  directory = pathlib.Path(path)
  manifest = artifacts.read_manifest(directory)
  if manifest.get("stage") != STAGE:
    raise DataError(f"manifest stage is {manifest.get('stage')!r}, not {STAGE!r}: not a "
                    f"synthetic world, or write_world did not finish", path=directory)
  dataset = layout.read_dataset(directory)
  try:
    config = WorldConfig.from_dict(json.loads((directory / CONFIG_FILE).read_text()))
  except (OSError, json.JSONDecodeError) as e:
    raise DataError(f"cannot read {CONFIG_FILE}: {e}", path=directory) from None
  try:
    with np.load(directory / TRUTH_FILE, allow_pickle=False) as z:
      truth = Truth.from_arrays({k: z[k] for k in z.files})
  except OSError as e:
    raise DataError(f"cannot read {TRUTH_FILE}: {e}", path=directory) from None
  return World(config=config, dataset=dataset, truth=truth)
