"""Two-tower retrieval with trainable k-means cluster IDs (Kuaishou) and logQ correction.

Item tower: a projection of the item's content embedding, plus a trainable embedding of its
single-level k-means cluster ID (`lrm.sid.rq_kmeans.cluster_ids_fit`), plus optionally an
item-ID embedding; an MLP and L2 normalisation. The cluster embedding maps content space to
behaviour space and is shared by every item of the cluster, so a new item gets a trained
vector on day one; an item-ID row of a new item was never trained.
User tower: the masked mean of the history items' tower outputs, then an MLP, normalised.

Training: in-batch sampled softmax (each user's positive against the other rows' positives)
with logQ correction: logit_ij = s_ij / T - log q_j, where q_j is the probability that item j
is sampled as an in-batch negative (its share of training positives). Without it popular items
are over-penalised as negatives. Retrieval: exact top-k over all items with `jax.lax.top_k`.

Shape letters: b batch, h history, i items, e content dim, d width, k top-k.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Mapping

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.layers import DEFAULT_INIT, embedding, padded_rows, param, sharding_scope


@dataclasses.dataclass(frozen=True)
class TwoTowerConfig:
  """Two-tower options; validated on construction."""
  num_items: int
  content_dim: int
  num_clusters: int = 0          # 0 = no cluster-ID feature
  use_item_id: bool = False
  use_content: bool = True
  d: int = 64
  temperature: float = 0.05
  logq: bool = True

  def __post_init__(self):
    if self.num_items < 1 or self.content_dim < 1 or self.d < 1:
      raise ConfigError("two_tower", "num_items, content_dim and d must be >= 1")
    if self.num_clusters < 0:
      raise ConfigError("num_clusters", f"must be >= 0, got {self.num_clusters}")
    if not (self.use_content or self.use_item_id or self.num_clusters):
      raise ConfigError("two_tower", "the item tower needs content, cluster IDs or item IDs")
    if self.temperature <= 0:
      raise ConfigError("temperature", f"must be > 0, got {self.temperature}")


class TwoTower(nnx.Module):
  """Item and user towers (module docstring). Item features live in the model as constants."""

  def __init__(self, cfg: TwoTowerConfig, content: np.ndarray, clusters: np.ndarray | None,
               *, id_known: np.ndarray | None = None, rngs: nnx.Rngs):
    """`id_known`: bool [items], items whose ID row exists (had training interactions); the
    others get a zero ID vector, as a new ID's fresh zero-initialised row would (default: all)."""
    content = np.asarray(content, np.float32)
    if content.shape != (cfg.num_items, cfg.content_dim):
      raise ConfigError("content", f"shape {content.shape}, expected "
                        f"({cfg.num_items}, {cfg.content_dim})")
    if cfg.num_clusters and (clusters is None or np.shape(clusters) != (cfg.num_items,)):
      raise ConfigError("clusters", f"need one cluster id per item ({cfg.num_items})")
    self.cfg = cfg
    d = cfg.d
    dense = lambda a, b, names: nnx.Linear(a, b, kernel_init=param(DEFAULT_INIT, names),
                                           rngs=rngs)
    with sharding_scope():
      self.content = nnx.Variable(jnp.asarray(content))       # constant, not trained
      self.id_known = nnx.Variable(jnp.asarray(
          np.ones(cfg.num_items, bool) if id_known is None else np.asarray(id_known, bool)))
      self.clusters = nnx.Variable(jnp.asarray(
          np.zeros(cfg.num_items, np.int32) if clusters is None else clusters, jnp.int32))
      self.content_proj = dense(cfg.content_dim, d, (None, "embed")) if cfg.use_content else None
      self.cluster_emb = (embedding(padded_rows(cfg.num_clusters), d, dtype=jnp.float32,
                                    rngs=rngs) if cfg.num_clusters else None)
      self.id_emb = (embedding(padded_rows(cfg.num_items), d, dtype=jnp.float32, rngs=rngs)
                     if cfg.use_item_id else None)
      self.item_mlp = dense(d, d, ("embed", "mlp"))
      self.user_mlp = dense(d, d, ("embed", "mlp"))

  def items(self, rows: jax.Array | None = None) -> jax.Array:
    """Normalised item vectors. Shape: rows int [...] (None = every item) -> [..., d]."""
    rows = jnp.arange(self.cfg.num_items) if rows is None else rows
    v = jnp.zeros((*rows.shape, self.cfg.d), jnp.float32)
    if self.content_proj is not None:
      v = v + self.content_proj(self.content[...][rows])
    if self.cluster_emb is not None:
      v = v + self.cluster_emb(self.clusters[...][rows])
    if self.id_emb is not None:
      v = v + jnp.where(self.id_known[...][rows][..., None], self.id_emb(rows), 0.0)
    v = v + self.item_mlp(jax.nn.gelu(v))
    return _normalise(v)

  def users(self, history: jax.Array) -> jax.Array:
    """Shape: history int [b, h] (-1 pads) -> [b, d], normalised."""
    valid = (history >= 0)[..., None]
    h = jnp.where(valid, self.items(jnp.maximum(history, 0)), 0.0)
    u = h.sum(1) / jnp.maximum(valid.sum(1), 1)
    u = u + self.user_mlp(jax.nn.gelu(u))
    return _normalise(u)


def _normalise(v: jax.Array) -> jax.Array:
  """L2 normalisation with a gradient that stays finite at v = 0."""
  return v * jax.lax.rsqrt(jnp.sum(jnp.square(v), axis=-1, keepdims=True) + 1e-12)


def in_batch_logits(user: jax.Array, item: jax.Array, log_q: jax.Array | None,
                    temperature: float) -> jax.Array:
  """In-batch logits s_ij / T - log q_j (no correction when log_q is None).

  Shape: user [b, d], item [b, d], log_q [b] -> [b, b]; row i's positive is column i.
  """
  logits = user @ item.T / temperature
  return logits if log_q is None else logits - log_q[None, :]


def sampled_softmax_loss(user: jax.Array, item: jax.Array, log_q: jax.Array | None,
                         temperature: float) -> jax.Array:
  """Mean cross-entropy of each row's own positive among the in-batch items."""
  logits = in_batch_logits(user, item, log_q, temperature)
  return optax.softmax_cross_entropy_with_integer_labels(
      logits, jnp.arange(logits.shape[0])).mean()


def two_tower_loss(model: TwoTower, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict]:
  """batch: history [b, h], target [b] (catalog rows), log_q [b] (log sampling probability)."""
  cfg = model.cfg
  loss = sampled_softmax_loss(model.users(batch["history"]), model.items(batch["target"]),
                              batch["log_q"] if cfg.logq else None, cfg.temperature)
  return loss, {"loss": loss}


def log_sampling_probability(target_rows: np.ndarray, num_items: int) -> np.ndarray:
  """log q per training example: the log share of training positives its target has."""
  counts = np.bincount(target_rows, minlength=num_items).astype(np.float64)
  return np.log(counts[target_rows] / counts.sum()).astype(np.float32)


@functools.partial(jax.jit, static_argnums=(0, 3))
def _top_k(graphdef, state, history, k):
  model = nnx.merge(graphdef, state)
  scores = model.users(history) @ model.items().T
  return jax.lax.top_k(scores, k)[1]


def top_k(model: TwoTower, history: np.ndarray, k: int, *, batch_size: int = 512) -> np.ndarray:
  """Exact top-k catalog rows per user (scored on device). Shape: history [u, h] -> [u, k]."""
  if not 1 <= k <= model.cfg.num_items:
    raise ConfigError("k", f"must be in [1, {model.cfg.num_items}], got {k}")
  graphdef, state = nnx.split(model)
  out = []
  for start in range(0, len(history), batch_size):
    out.append(np.asarray(_top_k(graphdef, state, jnp.asarray(history[start:start + batch_size]),
                                 k)))
  return np.concatenate(out)


def cold_coverage(top: np.ndarray, cold_rows: np.ndarray) -> float:
  """Share of cold items that appear in at least one user's top-K."""
  cold_rows = np.asarray(cold_rows)
  if len(cold_rows) == 0:
    raise ConfigError("cold_rows", "no cold items")
  return float(np.isin(cold_rows, np.unique(top)).mean())


def recall_at_k(top: np.ndarray, targets: np.ndarray) -> float:
  """Share of users whose target row is in their top-K. Shape: top [u, k], targets [u]."""
  return float((np.asarray(top) == np.asarray(targets)[:, None]).any(axis=1).mean())
