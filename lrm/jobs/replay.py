"""A day-by-day replay: how fast new items gain impressions under a two-tower recommender.

Why: cold-start coverage (`lrm.models.two_tower.cold_coverage`, benchmarks/ranking.py) is one
snapshot, but a new item lives in a feedback loop: it gets clicks only once it is shown, and a
model that cannot score it before its first click (an item-ID tower) may never show it. The
replay closes that loop, so the towers can be compared by how soon new items reach users.

Protocol (`replay`), on the cold-start item split (`lrm.tasks.ranking.cold_warm_split`):
- start: a two-tower trained on the warm items' positives, as benchmarks/ranking.py trains it;
  the cold items are the *new* items, launched at round 0 with no interaction. Replay users are
  the users with a held-out last warm event and a warm event before it; their history is those
  earlier warm events (the last `max_history` feed the user tower, all are excluded from slates).
- each round r = 0, 1, ... (a "day"): `users_per_round` users (a seeded sample; 0 = all) each
  get a top-K slate over every catalog item not in their history (items without any
  interaction that are not new count as old). Scores are exact; ties are broken by one seeded
  random order per round shared by all users, because the ID-only tower gives every item
  without a trained ID the same vector: ties by catalog row would favour low rows, and a
  per-user order would be a hidden exploration bonus. Optionally the last `explore_slots` of
  the K go to uniformly random unseen items. Every entry is an impression.
- clicks are Bernoulli draws of the click model's probability (below). A click becomes a
  training positive (the user's history at slate time -> the clicked item) and joins the user's
  history (several clicks of one slate in slate order).
- the same model and AdamW state then train `update_steps` steps on batches of which
  `click_share` come from the round's clicks and the rest are replayed from every earlier
  positive (the warm training data and earlier rounds' clicks), with the logQ correction of that
  mixture (`mixture_log_q`). An item's `id_known` flag turns on at its first click and its ID row
  is reset to zero (`mark_known`): the fresh row a production ID table gives a new ID, trained
  from then on. Before its first click a new item has no ID vector at all, so in the ID-only
  tower every never-clicked item shares one vector and carries no learned signal.

Click models (`click_model`; "auto" = truth when the dataset is the synthetic world):
- `TruthClicks` (synthetic world): p = sigmoid(slope * (a - midpoint)), a = shared depth of the
  item's leaf topic and the user's current interest (`truth.event_interest` at their last event)
  over the tree depth: the affinity rule of the world's own watch time and of the live rooms'
  follows (`lrm.tasks.ranking.topic_affinity`). With slope 8, midpoint 0.6 (the follow rule) and
  a 3-level tree: 0.96 on the interest's leaf, 0.63 on a sibling leaf, 0.11 in the same
  category, 0.008 elsewhere.
- `HeldOutClicks` (any dataset): p = 1 for an item the user really interacts with beyond their
  replay history (their held-out last warm event and their events on new items), else 0.

Metrics per round (0-based; round 0 = launch day): impressions, share of them on new items,
share of new items shown at least once so far (`new_covered`) and clicked at least once, clicks
and CTR overall / on new / on old items, and Recall@`eval_k` of the serving model on the fixed
warm and cold evaluation positives (benchmarks/ranking.py's protocol: does warm quality hold,
do new items become retrievable). Summary: the first round with >= 10% / 50% of new items
shown (None if never) and the area under the `new_covered` curve (its mean over rounds, in
[0, 1]).

Progress: one log line per round (impressions/s served, update steps/s, coverage, clicks).
Stage use (`run`): the `replay` config section (defaults `replay_defaults()`, unknown fields
raise ConfigError naming `replay.<field>`) beside the pipeline config; results go to
run_dir/replay/results.json and a printed table.

Shape letters: u replay users, b a batch of users, h history, i items, k slate size, n training
positives, m new items.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import pathlib
import time
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from lrm.core import artifacts
from lrm.core.config import merged_section, pipeline_config
from lrm.core.errors import ConfigError
from lrm.core.report import print_table
from lrm.data.layout import read_dataset
from lrm.data.synthetic import read_world
from lrm.data.types import Dataset
from lrm.jobs.common import at_workdir, saved_results
from lrm.jobs.defaults import REPLAY_TOWERS as TOWERS, replay_defaults
from lrm.jobs.ranking import item_content
from lrm.jobs.stages import data_stage, validate
from lrm.models import two_tower as tt
from lrm.sid.rq_kmeans import cluster_ids_fit
from lrm.tasks.ranking import cold_warm_split, topic_affinity
from lrm.train.optimizer import optimizer_from_config
from lrm.train.trainer import light_section, train

# Item-tower variants (benchmarks/ranking.py's four); "clusters" takes `num_clusters`.
CLICK_MODELS = ("auto", "truth", "held_out")
THRESHOLDS = (0.1, 0.5)   # summary: first round with this share of new items shown


def replay_section(config) -> ml_collections.ConfigDict:
  """The `replay` section of `config` merged over the defaults, checked (`check_section`)."""
  out = merged_section(config, "replay", replay_defaults())
  check_section(out)
  return out


def check_section(section) -> None:
  """Value checks of a merged section; ConfigError names `replay.<field>`."""
  def bad(name, message):
    raise ConfigError(f"replay.{name}", f"{message}, got {section[name]!r}")
  for name in ("max_history", "num_clusters", "kmeans_iters", "d", "train_steps", "batch_size",
               "rounds", "slate_size", "eval_k"):
    if int(section[name]) < 1:
      bad(name, "must be >= 1")
  for name in ("users_per_round", "explore_slots", "update_steps", "max_train_events"):
    if int(section[name]) < 0:
      bad(name, "must be >= 0")
  if int(section.explore_slots) > int(section.slate_size):
    bad("explore_slots", f"must be <= slate_size ({section.slate_size})")
  if not 0.0 < float(section.cold_fraction) < 1.0:
    bad("cold_fraction", "must be in (0, 1)")
  if not 0.0 <= float(section.click_share) <= 1.0:
    bad("click_share", "must be in [0, 1]")
  for name in ("temperature", "learning_rate", "click_slope"):
    if not float(section[name]) > 0.0:
      bad(name, "must be > 0")
  if not math.isfinite(float(section.click_midpoint)):
    bad("click_midpoint", "must be finite")
  if section.click_model not in CLICK_MODELS:
    bad("click_model", f"must be one of {CLICK_MODELS}")
  variants = tuple(section.variants)
  if not variants or any(v not in TOWERS for v in variants):
    bad("variants", f"must be a non-empty list of {tuple(TOWERS)}")


# ------------------------------------------------------------------------------------------
# Data


@dataclasses.dataclass(frozen=True, eq=False)
class ReplayData:
  """What the replay needs from the cold-start split (catalog rows; -1 pads histories).

  Attributes:
    num_items: catalog size (slates range over every item).
    new_rows: int [m], the new (cold) items.
    train_history, train_target: int32 [n, h], [n]: the warm training positives.
    user: int [u], replay users' rows in the source Sequences.
    history: int32 [u, h], their last warm events before the held-out one, left-padded.
    seen: per replay user, every item of that history (sorted, not truncated to h).
    future: per replay user, the items they interact with beyond it (held-out clicks).
    warm_target: int32 [u], their held-out last warm item (warm Recall).
    cold_history, cold_target: int32 [c, h], [c]: the cold evaluation positives.
  """
  num_items: int
  new_rows: np.ndarray
  train_history: np.ndarray
  train_target: np.ndarray
  user: np.ndarray
  history: np.ndarray
  seen: tuple[np.ndarray, ...]
  future: tuple[np.ndarray, ...]
  warm_target: np.ndarray
  cold_history: np.ndarray
  cold_target: np.ndarray


def replay_data(dataset: Dataset, *, cold_fraction: float, max_history: int, seed: int,
                max_train_events: int | None = None) -> ReplayData:
  """The cold-start split's positives, replay users, their histories and held-out items."""
  split = cold_warm_split(dataset.sequences, dataset.catalog, cold_fraction=cold_fraction,
                          max_history=max_history, num_negatives=1, eval_negatives=1, seed=seed,
                          max_train_events=max_train_events)
  pos = split.train.labels["click"] > 0
  wpos = split.warm.labels["click"] > 0
  cpos = split.cold.labels["click"] > 0
  seqs = dataset.sequences
  rows = dataset.catalog.rows(seqs.items)
  cold = np.zeros(split.num_items, bool)
  cold[split.cold_rows] = True
  users = split.warm.user[wpos]
  seen, future = [], []
  for u in users:
    r = rows[seqs.offsets[u]:seqs.offsets[u + 1]]
    warm = np.flatnonzero(~cold[r])
    s = np.unique(r[warm[:-1]])       # warm events before the last warm event
    seen.append(s)
    future.append(np.setdiff1d(r, s))
  return ReplayData(num_items=split.num_items, new_rows=np.asarray(split.cold_rows),
                    train_history=split.train.history[pos], train_target=split.train.candidate[pos],
                    user=users, history=split.warm.history[wpos], seen=tuple(seen),
                    future=tuple(future), warm_target=split.warm.candidate[wpos],
                    cold_history=split.cold.history[cpos], cold_target=split.cold.candidate[cpos])


# ------------------------------------------------------------------------------------------
# Click models


class TruthClicks:
  """Clicks from the synthetic world's planted affinity (module docstring).

  `interest`: int [u], each replay user's current interest (a leaf topic); `item_topic`: int
  [i]; `leaf_path`: int [l, depth].
  """

  def __init__(self, leaf_path: np.ndarray, item_topic: np.ndarray, interest: np.ndarray, *,
               slope: float, midpoint: float):
    self.leaf_path = np.asarray(leaf_path)
    self.item_topic = np.asarray(item_topic)
    self.interest = np.asarray(interest)
    self.slope, self.midpoint = float(slope), float(midpoint)

  @classmethod
  def from_world(cls, truth, dataset: Dataset, users: np.ndarray, *, slope: float,
                 midpoint: float) -> "TruthClicks":
    """Interest of each user (rows of the dataset's Sequences) at their last event."""
    last = dataset.sequences.offsets[np.asarray(users) + 1] - 1
    return cls(truth.leaf_path, truth.item_topic, truth.event_interest[last], slope=slope,
               midpoint=midpoint)

  def affinity(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Shape: users int [b], items int [b, k] -> float [b, k] in [0, 1]."""
    k = items.shape[1]
    a = topic_affinity(self.leaf_path, self.item_topic[items.reshape(-1)],
                       np.repeat(self.interest[users], k))
    return a.reshape(items.shape)

  def probability(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Shape: users int [b] (replay user indices), items int [b, k] -> float [b, k]."""
    return 1.0 / (1.0 + np.exp(-self.slope * (self.affinity(users, items) - self.midpoint)))


class HeldOutClicks:
  """Clicks on real data: an item the user really interacts with later (ReplayData.future)."""

  def __init__(self, future: Sequence[np.ndarray]):
    self.future = [np.asarray(f) for f in future]

  def probability(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """Shape: users int [b], items int [b, k] -> float [b, k], 1 on a held-out item."""
    return np.stack([np.isin(items[j], self.future[u]) for j, u in enumerate(users)]
                    ).astype(np.float64)


def click_model(section, data: ReplayData, dataset: Dataset, truth=None):
  """The configured click model (`auto`: the world's truth when given, else held-out)."""
  kind = section.click_model
  if kind == "auto":
    kind = "truth" if truth is not None else "held_out"
  if kind == "truth":
    if truth is None:
      raise ConfigError("replay.click_model", "'truth' needs the synthetic world's truth")
    return TruthClicks.from_world(truth, dataset, data.user, slope=float(section.click_slope),
                                  midpoint=float(section.click_midpoint))
  return HeldOutClicks(data.future)


# ------------------------------------------------------------------------------------------
# Serving: slates, exploration, clicks


@functools.partial(jax.jit, static_argnums=(0, 5))
def _slate_top_k(graphdef, state, history, exclude, order, k):
  """Top-k of the users' scores over the items in `order`, excluded items never; -1 where
  fewer than k items are left."""
  model = nnx.merge(graphdef, state)
  scores = model.users(history) @ model.items().T
  scores = jnp.where(exclude, -jnp.inf, scores)[:, order]
  values, idx = jax.lax.top_k(scores, k)
  return jnp.where(jnp.isfinite(values), order[idx], -1)


@functools.partial(jax.jit, static_argnums=0)
def _scores(graphdef, state, history):
  model = nnx.merge(graphdef, state)
  return model.users(history) @ model.items().T


def score_items(model: tt.TwoTower, history: np.ndarray) -> np.ndarray:
  """Every item's score for each user (one compiled call). Shape: history [b, h] -> [b, i]."""
  graphdef, state = nnx.split(model)
  return np.asarray(_scores(graphdef, state, jnp.asarray(history)))


def exclusion_mask(seen: Sequence[np.ndarray], num_items: int, rows: int) -> np.ndarray:
  """bool [rows, i]: row j marks seen[j] (rows past len(seen) stay empty padding)."""
  mask = np.zeros((rows, num_items), bool)
  lengths = [len(s) for s in seen]
  if sum(lengths):
    mask[np.repeat(np.arange(len(seen)), lengths), np.concatenate(seen).astype(np.int64)] = True
  return mask


def slates(model: tt.TwoTower, history: np.ndarray, seen: Sequence[np.ndarray], k: int, *,
           order: np.ndarray, batch_size: int = 256) -> np.ndarray:
  """Each user's top-k unseen items; ties go to the item earlier in `order` (a permutation).

  Batches are padded to `batch_size` rows so every round reuses one compiled function.
  Shape: history int [b, h] -> int [b, k] (-1 where fewer than k items are unseen).
  """
  if not 1 <= k <= model.cfg.num_items:
    raise ConfigError("replay.slate_size", f"must be in [1, {model.cfg.num_items}], got {k}")
  graphdef, state = nnx.split(model)
  order = jnp.asarray(order, jnp.int32)
  out = []
  for start in range(0, len(history), batch_size):
    h = history[start:start + batch_size]
    pad = batch_size - len(h)
    h = np.concatenate([h, np.full((pad, h.shape[1]), -1, h.dtype)]) if pad else h
    mask = exclusion_mask(seen[start:start + batch_size], model.cfg.num_items, batch_size)
    top = _slate_top_k(graphdef, state, jnp.asarray(h), jnp.asarray(mask), order, k)
    out.append(np.asarray(top)[:batch_size - pad])
  return np.concatenate(out) if out else np.zeros((0, k), np.int64)


def explore(slate: np.ndarray, seen: Sequence[np.ndarray], num_slots: int, num_items: int,
            rng: np.random.Generator) -> np.ndarray:
  """The slates with their last `num_slots` entries replaced by distinct uniformly random items
  that are neither seen nor kept in the slate (-1 when none is left). Shape: [b, k]."""
  if num_slots == 0:
    return slate
  out = slate.copy()
  keep = slate.shape[1] - num_slots
  for j in range(len(slate)):
    banned = np.union1d(seen[j], out[j, :keep])
    draw = rng.integers(0, num_items, 4 * num_slots + 8)
    draw = draw[~np.isin(draw, banned)]
    draw = draw[np.sort(np.unique(draw, return_index=True)[1])]   # distinct, in draw order
    if len(draw) < num_slots:
      allowed = np.setdiff1d(np.arange(num_items), banned)
      draw = rng.permutation(allowed)
    picked = draw[:num_slots]
    out[j, keep:] = -1
    out[j, keep:keep + len(picked)] = picked
  return out


def draw_clicks(probability: np.ndarray, slate: np.ndarray,
                rng: np.random.Generator) -> np.ndarray:
  """bool [b, k]: Bernoulli(probability), never on an empty (-1) slate entry."""
  p = np.clip(np.where(slate >= 0, probability, 0.0), 0.0, 1.0)
  return rng.random(p.shape) < p


# ------------------------------------------------------------------------------------------
# Counting


def count_impressions(slate: np.ndarray, num_items: int) -> np.ndarray:
  """int64 [i]: how often each item appears in the slates (-1 entries ignored)."""
  s = np.asarray(slate).reshape(-1)
  return np.bincount(s[s >= 0], minlength=num_items).astype(np.int64)


def round_metrics(slate: np.ndarray, clicked: np.ndarray, is_new: np.ndarray,
                  shown_before: np.ndarray, clicked_before: np.ndarray
                  ) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
  """One round's counts, and the per-item impression and click totals after it.

  Shape: slate int [b, k], clicked bool [b, k], is_new bool [i], *_before int [i].
  """
  n = len(is_new)
  shown_now = count_impressions(slate, n)
  clicks_now = count_impressions(np.where(clicked, slate, -1), n)
  shown, clicks = shown_before + shown_now, clicked_before + clicks_now
  imp, new_imp = int(shown_now.sum()), int(shown_now[is_new].sum())
  clk, new_clk = int(clicks_now.sum()), int(clicks_now[is_new].sum())
  ratio = lambda a, b: a / b if b else None
  metrics = {
      "impressions": imp, "new_impressions": new_imp,
      "new_impression_share": ratio(new_imp, imp),
      "new_covered": float((shown[is_new] > 0).mean()),
      "new_clicked": float((clicks[is_new] > 0).mean()),
      "clicks": clk, "new_clicks": new_clk, "ctr": ratio(clk, imp),
      "new_ctr": ratio(new_clk, new_imp), "old_ctr": ratio(clk - new_clk, imp - new_imp)}
  return metrics, shown, clicks


def first_round_reaching(curve: Sequence[float], threshold: float) -> int | None:
  """The first (0-based) round whose value is >= threshold; None if none is."""
  hits = [r for r, v in enumerate(curve) if v >= threshold]
  return hits[0] if hits else None


def curve_area(curve: Sequence[float]) -> float:
  """Area under a per-round share curve, normalised to [0, 1]: its mean over rounds."""
  return float(np.mean(curve)) if len(curve) else 0.0


def summarize(rounds: Sequence[Mapping[str, Any]], end: Mapping[str, float]) -> dict[str, Any]:
  """Thresholds, curve area and totals of a replay; `end` = the evaluation after the last
  update."""
  curve = [r["new_covered"] for r in rounds]
  imp = sum(r["impressions"] for r in rounds)
  new_imp = sum(r["new_impressions"] for r in rounds)
  clk = sum(r["clicks"] for r in rounds)
  new_clk = sum(r["new_clicks"] for r in rounds)
  out = {f"round_{round(100 * t)}pct": first_round_reaching(curve, t) for t in THRESHOLDS}
  out.update({
      "coverage_auc": curve_area(curve), "final_new_covered": curve[-1] if curve else 0.0,
      "final_new_clicked": rounds[-1]["new_clicked"] if rounds else 0.0,
      "impressions": imp, "new_impression_share": new_imp / imp if imp else None,
      "ctr": clk / imp if imp else None, "new_ctr": new_clk / new_imp if new_imp else None,
      "warm_recall_start": rounds[0]["warm_recall"] if rounds else None,
      "cold_recall_start": rounds[0]["cold_recall"] if rounds else None,
      "warm_recall_end": end["warm_recall"], "cold_recall_end": end["cold_recall"]})
  return out


# ------------------------------------------------------------------------------------------
# Training


def build_tower(name: str, section, content: np.ndarray, clusters: np.ndarray,
                known: np.ndarray, *, seed: int) -> tt.TwoTower:
  """One of TOWERS; `known`: bool [i], items with a training interaction (ID rows exist)."""
  kw = dict(TOWERS[name])
  num_clusters = int(section.num_clusters) if kw.pop("clusters", False) else 0
  cfg = tt.TwoTowerConfig(num_items=len(content), content_dim=content.shape[1],
                          num_clusters=num_clusters, d=int(section.d),
                          temperature=float(section.temperature), **kw)
  return tt.TwoTower(cfg, content, clusters if num_clusters else None, id_known=known,
                     rngs=nnx.Rngs(seed))


def make_optimizer(model: tt.TwoTower, learning_rate: float) -> nnx.Optimizer:
  """Plain AdamW without decay at a constant rate (`light_section`'s); kept and continued
  through the replay."""
  tx = optimizer_from_config(light_section(num_steps=1, batch_size=1,
                                           learning_rate=learning_rate))
  return nnx.Optimizer(model, tx, wrt=nnx.Param)


def train_two_tower(model: tt.TwoTower, history: np.ndarray, target: np.ndarray, *,
                    num_steps: int, batch_size: int, learning_rate: float, seed: int,
                    desc: str | None = None) -> float:
  """A light trainer run on (history, target) positives with the sampled-softmax correction;
  returns the last 50 steps' mean loss (`desc`: show progress under that name)."""
  if len(target) < batch_size:
    raise ConfigError("batch_size", f"{batch_size} > {len(target)} examples")
  arrays = {"history": history, "target": np.asarray(target, np.int32),
            "log_q": tt.log_sampling_probability(target, model.cfg.num_items)}
  result = train(model, tt.two_tower_loss, arrays,
                 config=light_section(num_steps=num_steps, batch_size=batch_size,
                                      learning_rate=learning_rate, seed=seed, log_every=50),
                 progress=desc or False)
  return result.train_loss


def mixture_log_q(pool_target: np.ndarray, new_target: np.ndarray, new_share: float,
                  num_items: int) -> np.ndarray:
  """log q per item when a batch row is a new positive with probability `new_share`, else a
  pool row (both uniform with replacement): q_j = s c_new(j) / N_new + (1 - s) c_pool(j) /
  N_pool. Items never sampled get log q = -inf (they never occur as targets). Shape: -> [i]."""
  q = (1.0 - new_share) * np.bincount(pool_target, minlength=num_items) / len(pool_target)
  if new_share:
    q = q + new_share * np.bincount(new_target, minlength=num_items) / len(new_target)
  with np.errstate(divide="ignore"):
    return np.log(q).astype(np.float32)


def _mixture_batches(pool: tuple[np.ndarray, np.ndarray],
                     new: tuple[np.ndarray, np.ndarray] | None, n_new: int, batch_size: int,
                     log_q: np.ndarray, rng: np.random.Generator):
  """Batches of `n_new` new positives and pool rows for the rest, both drawn uniformly with
  replacement (what `mixture_log_q` corrects for)."""
  pool_h, pool_t = pool
  while True:
    p = rng.integers(0, len(pool_t), batch_size - n_new)
    h, t = pool_h[p], pool_t[p]
    if n_new:
      j = rng.integers(0, len(new[1]), n_new)
      h, t = np.concatenate([h, new[0][j]]), np.concatenate([t, new[1][j]])
    yield {"history": h, "target": t.astype(np.int32), "log_q": log_q[t]}


def fit_mixture(model: tt.TwoTower, optimizer: nnx.Optimizer, pool: tuple[np.ndarray, np.ndarray],
                new: tuple[np.ndarray, np.ndarray] | None, *, steps: int, batch_size: int,
                new_share: float, rng: np.random.Generator) -> float:
  """`steps` steps of a light trainer run that continues `optimizer`, on batches of
  round(new_share * batch) new positives and pool rows for the rest; returns the mean loss
  (nan for no steps)."""
  if steps == 0:
    return float("nan")
  n_new = int(round(new_share * batch_size)) if new is not None and len(new[1]) else 0
  share = n_new / batch_size
  log_q = mixture_log_q(pool[1], new[1] if n_new else pool[1][:0], share, model.cfg.num_items)
  loop = {"batch_size": batch_size, "num_steps": steps, "eval_every": steps,
          "log_every": steps, "checkpoint_every": steps}
  result = train(model, tt.two_tower_loss, config=loop, optimizer=optimizer, progress=False,
                 batches=_mixture_batches(pool, new, n_new, batch_size, log_q, rng))
  return result.train_loss


def mark_known(model: tt.TwoTower, rows: np.ndarray) -> np.ndarray:
  """Turns on `id_known` for `rows` and resets the ID rows of the ones that were unknown to zero
  (a new ID's fresh row); returns those rows. Without an ID tower only the flag changes."""
  known = np.asarray(model.id_known[...])
  fresh = np.unique(np.asarray(rows, np.int64))
  fresh = fresh[~known[fresh]]
  if len(fresh):
    # Whole-array writes (an array index trips flax 0.12's Variable.__setitem__).
    model.id_known[...] = model.id_known[...].at[fresh].set(True)
    if model.id_emb is not None:
      emb = model.id_emb.embedding
      emb[...] = emb[...].at[fresh].set(0.0)
  return fresh


# ------------------------------------------------------------------------------------------
# The replay


# One random stream per purpose (`_rng(seed, stream, round)`).
_USERS, _TIES, _EXPLORE, _CLICKS, _TRAIN = range(1, 6)


def _rng(seed: int, stream: int, r: int) -> np.random.Generator:
  return np.random.default_rng([seed, stream, r])


def held_out_recall(model: tt.TwoTower, data: ReplayData, k: int) -> dict[str, float]:
  """Recall@k on the fixed warm and cold evaluation positives (no history exclusion)."""
  out = {"warm_recall": tt.recall_at_k(tt.top_k(model, data.history, k), data.warm_target)}
  out["cold_recall"] = (tt.recall_at_k(tt.top_k(model, data.cold_history, k), data.cold_target)
                        if len(data.cold_target) else float("nan"))
  return out


def replay(model: tt.TwoTower, optimizer: nnx.Optimizer, data: ReplayData, clicks, section, *,
           seed: int, name: str = "", on_round: Callable[[dict], None] | None = None
           ) -> dict[str, Any]:
  """The replay of the module docstring on a trained model (changed in place).

  `clicks` has `probability(users, items)`; returns {"rounds": [per-round metrics], "end":
  evaluation after the last update, "summary": summarize(...)}. Every random choice comes from
  `seed`, the round number and one stream per purpose (users, tie order, exploration, clicks,
  training batches), so changing one option leaves the other draws as they were.
  """
  num_items, h = data.num_items, data.history.shape[1]
  k, slots = int(section.slate_size), int(section.explore_slots)
  eval_k = min(int(section.eval_k), num_items)
  history = data.history.copy()
  seen = list(data.seen)
  pool_h, pool_t = data.train_history, data.train_target
  is_new = np.zeros(num_items, bool)
  is_new[data.new_rows] = True
  shown = np.zeros(num_items, np.int64)
  clicked = np.zeros(num_items, np.int64)
  num_users = len(history)
  per_round = int(section.users_per_round)
  per_round = num_users if per_round == 0 else min(per_round, num_users)
  batch = min(per_round, 256)
  rounds = []
  for r in range(int(section.rounds)):
    start = time.perf_counter()
    users = np.sort(_rng(seed, _USERS, r).choice(num_users, per_round, replace=False))
    metrics = {"round": r, "users": int(per_round), **held_out_recall(model, data, eval_k)}
    serve_start = time.perf_counter()
    slate = slates(model, history[users], [seen[u] for u in users], k,
                   order=_rng(seed, _TIES, r).permutation(num_items), batch_size=batch)
    slate = explore(slate, [seen[u] for u in users], slots, num_items, _rng(seed, _EXPLORE, r))
    click = draw_clicks(clicks.probability(users, np.maximum(slate, 0)), slate,
                        _rng(seed, _CLICKS, r))
    counts, shown, clicked = round_metrics(slate, click, is_new, shown, clicked)
    metrics.update(counts)
    serve_s = time.perf_counter() - serve_start
    # Clicks -> positives (history at slate time), histories, ID rows.
    ui, kj = np.nonzero(click)
    new = (history[users[ui]], slate[ui, kj].astype(np.int32))
    for j in np.unique(ui):
      u, items = users[j], slate[j][click[j]]
      history[u] = np.concatenate([history[u], items])[-h:]
      seen[u] = np.union1d(seen[u], items)
    metrics["ids_started"] = int(len(mark_known(model, new[1])))
    train_start = time.perf_counter()
    loss = fit_mixture(model, optimizer, (pool_h, pool_t), new,
                       steps=int(section.update_steps), batch_size=int(section.batch_size),
                       new_share=float(section.click_share), rng=_rng(seed, _TRAIN, r))
    metrics["loss"] = None if math.isnan(loss) else loss     # None: no update steps
    pool_h, pool_t = np.concatenate([pool_h, new[0]]), np.concatenate([pool_t, new[1]])
    train_s = time.perf_counter() - train_start
    metrics["wall_s"] = time.perf_counter() - start
    rounds.append(metrics)
    logging.info(
        "replay %s round %d/%d: %d users, %d impressions (%.0f/s), new items shown %.1f%% "
        "(share of impressions %.2f%%), clicks %d (new %d), %d steps (%.1f steps/s), "
        "warm R@%d %.3f, cold R@%d %.3f", name, r + 1, int(section.rounds), per_round,
        counts["impressions"], counts["impressions"] / max(serve_s, 1e-9),
        100 * counts["new_covered"], 100 * (counts["new_impression_share"] or 0.0),
        counts["clicks"], counts["new_clicks"], int(section.update_steps),
        int(section.update_steps) / max(train_s, 1e-9), eval_k, metrics["warm_recall"],
        eval_k, metrics["cold_recall"])
    if on_round is not None:
      on_round(metrics)
  end = held_out_recall(model, data, eval_k)
  return {"rounds": rounds, "end": end, "summary": summarize(rounds, end)}


def item_clusters(content: np.ndarray, num_clusters: int, *, seed: int, iters: int) -> np.ndarray:
  """Single-level k-means cluster IDs of the content (`cluster_ids_fit`). Shape: -> int [i]."""
  return cluster_ids_fit(content, num_clusters, key=jax.random.key(seed),
                         iters=iters).codes[:, 0]


def replay_variants(section, dataset: Dataset, *, truth=None, seed: int) -> dict[str, Any]:
  """Trains each configured tower on the warm positives and replays it (same data, clicks and
  seeds for every tower)."""
  check_section(section)
  data = replay_data(dataset, cold_fraction=float(section.cold_fraction),
                     max_history=int(section.max_history), seed=seed,
                     max_train_events=int(section.max_train_events) or None)
  clicks = click_model(section, data, dataset, truth)
  content = item_content(dataset.catalog)
  clusters = item_clusters(content, int(section.num_clusters), seed=seed,
                           iters=int(section.kmeans_iters))
  hist = data.train_history
  known = np.isin(np.arange(data.num_items), np.r_[data.train_target, hist[hist >= 0]])
  if len(data.train_target) < int(section.batch_size):
    raise ConfigError("replay.batch_size", f"{section.batch_size} > {len(data.train_target)} "
                      "training positives")
  out = {"dataset": dataset.name, "click_model": type(clicks).__name__,
         "counts": {"items": data.num_items, "new_items": int(len(data.new_rows)),
                    "train_positives": int(len(data.train_target)),
                    "replay_users": int(len(data.user)), "cold_eval": int(len(data.cold_target))},
         "variants": {}}
  for name in section.variants:
    start = time.perf_counter()
    model = build_tower(name, section, content, clusters, known, seed=seed)
    optimizer = make_optimizer(model, float(section.learning_rate))
    loss = fit_mixture(model, optimizer, (data.train_history, data.train_target), None,
                       steps=int(section.train_steps), batch_size=int(section.batch_size),
                       new_share=0.0, rng=np.random.default_rng([seed, 0]))
    train_s = time.perf_counter() - start
    logging.info("replay %s: trained %d steps in %.1f s (loss %.4f)", name,
                 int(section.train_steps), train_s, loss)
    result = replay(model, optimizer, data, clicks, section, seed=seed, name=name)
    out["variants"][name] = {"train_loss": loss, "train_s": train_s, **result,
                             "wall_s": time.perf_counter() - start}
  return out


def print_results(results: Mapping[str, Any]) -> None:
  """One row per tower: how fast new items gain impressions, and what happened to quality."""
  fmt = lambda v: "never" if v is None else v
  rows = []
  for name, r in results["variants"].items():
    s = r["summary"]
    rows.append([name, fmt(s["round_10pct"]), fmt(s["round_50pct"]), s["coverage_auc"],
                 s["final_new_covered"], s["final_new_clicked"], s["new_impression_share"] or 0.0,
                 s["new_ctr"] if s["new_ctr"] is not None else "-", s["ctr"] or 0.0,
                 f"{s['warm_recall_start']:.3f} -> {s['warm_recall_end']:.3f}",
                 f"{s['cold_recall_start']:.3f} -> {s['cold_recall_end']:.3f}"])
  print_table(["tower", "10% shown", "50% shown", "coverage AUC", "new shown", "new clicked",
               "new imp. share", "new CTR", "CTR", "warm R@K", "cold R@K"], rows)


def run(config, workdir=None) -> dict[str, Any]:
  """The data stage (lrm.jobs.stages), then the replay in `workdir` (default: config.run_dir);
  writes run_dir/replay/results.json.

  On the synthetic world the click model reads the world's truth (written beside the data).
  """
  section = replay_section(at_workdir(config, workdir))
  base = pipeline_config(config)
  validate(base)
  run_dir = pathlib.Path(base.run_dir)
  data_dir = data_stage(base, run_dir)
  truth = None
  if base.data.source == "synthetic":
    world = read_world(data_dir)
    dataset, truth = world.dataset, world.truth
  else:
    dataset = read_dataset(data_dir)
  results = {"section": section.to_dict(),
             **replay_variants(section, dataset, truth=truth, seed=int(base.seed))}
  out = run_dir / "replay"
  out.mkdir(parents=True, exist_ok=True)
  artifacts.atomic_write_text(out / "results.json", json.dumps(results, indent=1,
                                                                default=_json_default))
  print_results(results)
  return results


def evaluate(config, workdir=None) -> dict[str, Any]:
  """The replay is its own evaluation: prints the results `run` wrote."""
  run_dir = pathlib.Path(at_workdir(config, workdir).run_dir)
  results = saved_results(run_dir / "replay" / "results.json", "lrm replay")
  print_results(results)
  return results


def _json_default(obj: Any) -> Any:
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, (tuple, np.ndarray)):
    return list(obj)
  raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
