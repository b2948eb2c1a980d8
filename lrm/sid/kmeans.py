"""k-means in JAX: k-means++ or random init, Lloyd or mini-batch updates, balanced assignment,
empty-cluster repair, data-parallel over a mesh.

Everything heavy runs in one jitted program per fit (the whole Lloyd loop is a `lax.while_loop`,
no host round-trip per iteration), with static shapes, and is reproducible from the key.

Distances are `||x||^2 - 2 x.c + ||c||^2` in float32, computed in row chunks with a matmul
(never an [n, k, d] tensor); only `||c||^2 - 2 x.c` is needed for the argmin. bf16 is not used:
assignments must not flip on rounding.

Cosine metric: rows and centroids are L2-normalised (spherical k-means); the reported inertia
is then the squared L2 distance between unit vectors, `2 - 2 cos`.

Data parallel: with `mesh`, x is padded to a multiple of the data-parallel size (padding rows
are masked out of every sum) and sharded by rows over ("data", "fsdp"); each device computes its
rows' assignments and per-cluster sums / counts inside `shard_map`, then one `psum` all-reduces
them. Results equal the single-device fit up to float summation order.

Shape letters: n items (rows), d dim, k clusters (codebook size).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, PartitionSpec as P

from lrm.core.errors import ConfigError, DataError
from lrm.parallel.mesh import batch_sharding

METRICS = ("l2", "cosine")
INITS = ("kmeans++", "random")
# k-means++ runs on a random subsample of at most this many points per cluster.
KMEANSPP_POINTS_PER_CLUSTER = 64
# Target number of float32 entries of one [rows, k] score chunk (8 MiB: stays in cache; on a
# 2-core CPU, 8192-row chunks at k=256 ran the assignment at matmul speed, 64k rows 2.4x slower).
_CHUNK_ELEMENTS = 1 << 21
_EPS = 1e-12


@dataclasses.dataclass(frozen=True, eq=False)
class KMeansResult:
  """A fitted k-means.

  Attributes:
    centroids: float32 [k, d] (unit rows for the cosine metric).
    assignments: int32 [n], the nearest centroid of each training row (or the balanced
      assignment when fitted with `balanced=True`).
    inertia: sum over rows of the squared distance to the assigned centroid.
    iterations: Lloyd iterations (or mini-batch steps) run.
    inertia_history: float64 [iterations], inertia at the start of each iteration (for
      mini-batch: the batch inertia scaled to n rows).
  """
  centroids: np.ndarray
  assignments: np.ndarray
  inertia: float
  iterations: int
  inertia_history: np.ndarray

  @property
  def num_clusters(self) -> int:
    return int(self.centroids.shape[0])

  def cluster_sizes(self) -> np.ndarray:
    """int64 [k]: rows per cluster."""
    return np.bincount(self.assignments, minlength=self.num_clusters)


# ----------------------------------------------------------------------------- validation


def _check_x(x: Any, name: str = "x") -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2:
    raise DataError(f"{name} must be 2-d [n, d], got shape {x.shape}")
  if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
    raise DataError(f"{name} must be numeric, got dtype {x.dtype}")
  if x.shape[0] == 0 or x.shape[1] == 0:
    raise DataError(f"{name} is empty: shape {x.shape}")
  x = np.asarray(x, dtype=np.float32)
  if not np.isfinite(x).all():
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    raise DataError(f"{name} has non-finite values (NaN or inf) in {len(bad)} rows, "
                    f"first rows {bad[:5].tolist()}")
  return x


def _check_metric(metric: str) -> str:
  if metric not in METRICS:
    raise ConfigError("metric", f"must be one of {METRICS}, got {metric!r}")
  return metric


def _check_options(n: int, d: int, num_clusters: Any, iters: Any, batch_size: Any, init: Any,
                   tol: Any) -> None:
  if not isinstance(num_clusters, (int, np.integer)) or isinstance(num_clusters, bool) \
      or num_clusters < 1:
    raise ConfigError("num_clusters", f"must be a positive integer, got {num_clusters!r}")
  if num_clusters > n:
    raise ConfigError("num_clusters", f"{num_clusters} clusters for only {n} rows")
  if not isinstance(iters, (int, np.integer)) or isinstance(iters, bool) or iters < 0:
    raise ConfigError("iters", f"must be an integer >= 0, got {iters!r}")
  if batch_size is not None and (not isinstance(batch_size, (int, np.integer))
                                 or isinstance(batch_size, bool) or batch_size < 1):
    raise ConfigError("batch_size", f"must be None or a positive integer, got {batch_size!r}")
  if init not in INITS:
    raise ConfigError("init", f"must be one of {INITS}, got {init!r}")
  if tol is not None and not (isinstance(tol, (int, float)) and tol >= 0):
    raise ConfigError("tol", f"must be None or a number >= 0, got {tol!r}")


# ----------------------------------------------------------------------------- kernels


def _normalize(x: jax.Array) -> jax.Array:
  """Rows scaled to unit L2 norm (zero rows stay zero). Shape: x [n, d] -> [n, d]."""
  norm = jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True))
  return x / jnp.maximum(norm, _EPS)


def _chunk_rows(rows: int, k: int) -> int:
  """Rows per distance chunk: about `_CHUNK_ELEMENTS` entries of [rows, k], at most `rows`."""
  return int(max(1, min(rows, max(256, _CHUNK_ELEMENTS // max(k, 1)))))


def _nearest(x: jax.Array, c: jax.Array, chunk: int) -> tuple[jax.Array, jax.Array]:
  """Nearest centroid and squared distance, in row chunks (x's rows a multiple of `chunk`).

  Shape: x [n, d], c [k, d] -> assign int32 [n], dist float32 [n].
  """
  n, d = x.shape
  half_c_sq = 0.5 * jnp.sum(c * c, axis=-1)
  ids = jnp.arange(c.shape[0], dtype=jnp.int32)

  def one(xc):
    # Best = max of x.c - ||c||^2 / 2; argmax as "lowest index attaining the max" (two plain
    # reductions: several times faster on CPU than a variadic argmax reduce).
    scores = jnp.dot(xc, c.T, precision=jax.lax.Precision.HIGHEST) - half_c_sq[None, :]
    best = jnp.max(scores, axis=-1, keepdims=True)
    a = jnp.min(jnp.where(scores == best, ids[None, :], c.shape[0]), axis=-1)
    dist = jnp.maximum(jnp.sum(xc * xc, axis=-1) - 2.0 * best[:, 0], 0.0)
    return a, dist

  if chunk >= n:
    return one(x)
  a, dist = jax.lax.map(one, x.reshape(n // chunk, chunk, d))
  return a.reshape(n), dist.reshape(n)


def _cluster_stats(x: jax.Array, w: jax.Array, a: jax.Array, dist: jax.Array, k: int):
  """Per-cluster weighted sums and counts, and the weighted inertia.

  Shape: x [n, d], w [n] (1 real row, 0 padding), a int32 [n], dist [n]
    -> sums [k, d], counts [k], inertia [].
  """
  sums = jax.ops.segment_sum(x * w[:, None], a, num_segments=k)
  counts = jax.ops.segment_sum(w, a, num_segments=k)
  return sums, counts, jnp.sum(dist * w)


def _local_step(x, w, c, *, k: int, chunk: int):
  """One shard's part of a Lloyd step. Shape: x [m, d], w [m], c [k, d]."""
  a, dist = _nearest(x, c, chunk)
  sums, counts, inertia = _cluster_stats(x, w, a, dist, k)
  return sums, counts, inertia, a, dist


def _make_step(mesh: Mesh | None, *, k: int, chunk: int):
  """(x, w, c) -> (sums, counts, inertia, assign, dist); all-reduced over the mesh's rows."""
  local = functools.partial(_local_step, k=k, chunk=chunk)
  if mesh is None:
    return local
  axes = ("data", "fsdp")

  def sharded(x, w, c):
    sums, counts, inertia, a, dist = local(x, w, c)
    return (jax.lax.psum(sums, axes), jax.lax.psum(counts, axes), jax.lax.psum(inertia, axes),
            a, dist)

  return jax.shard_map(sharded, mesh=mesh, in_specs=(P(axes), P(axes), P()),
                       out_specs=(P(), P(), P(), P(axes), P(axes)), check_vma=False)


def _repair(c: jax.Array, counts: jax.Array, x: jax.Array, w: jax.Array, dist: jax.Array,
            metric: str) -> jax.Array:
  """Moves each empty centroid onto a high-error row, deterministically.

  The j-th empty cluster (in index order) takes the row with the j-th largest distance to its
  centroid (ties: lowest row index); padding rows are never picked.
  Shape: c [k, d], counts [k], x [n, d], w [n], dist [n] -> [k, d].
  """
  k = c.shape[0]
  empty = counts <= 0

  def fix(c):
    err = jnp.where(w > 0, dist, -1.0)
    _, top = jax.lax.top_k(err, min(k, err.shape[0]))
    rank = jnp.clip(jnp.cumsum(empty) - 1, 0, top.shape[0] - 1)
    moved = x[top[rank]]
    if metric == "cosine":
      moved = _normalize(moved)
    return jnp.where(empty[:, None], moved, c)

  return jax.lax.cond(jnp.any(empty), fix, lambda c: c, c)


def _update(c, sums, counts, metric):
  """New centroids: means of non-empty clusters (unit-normalised for cosine)."""
  new = jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], c)
  return _normalize(new) if metric == "cosine" else new


# ----------------------------------------------------------------------------- balanced


def _balanced_assign(cost: jax.Array, w: jax.Array, capacity: int) -> jax.Array:
  """Capacity-constrained assignment: each cluster takes at most `capacity` real rows.

  Method (greedy proposal rounds, deterministic): every unassigned row proposes to its cheapest
  cluster that still has room; each cluster accepts its cheapest proposers up to its remaining
  room (ties: lower row index), and accepted rows are final. A round either assigns everyone
  left or fills at least one cluster, so at most k rounds run. With k * capacity >= n, every row
  ends assigned. Padding rows (w == 0) are never assigned (they get cluster 0, weight 0).
  Shape: cost [n, k], w [n] -> int32 [n].
  """
  n, k = cost.shape
  big = jnp.asarray(jnp.inf, cost.dtype)
  rows = jnp.arange(n)

  def cond(state):
    _, assigned, _, r = state
    return jnp.logical_and(jnp.any(~assigned), r < k)

  def body(state):
    a, assigned, room, r = state
    masked = jnp.where(room[None, :] > 0, cost, big)
    prop = jnp.argmin(masked, axis=-1).astype(jnp.int32)
    pcost = jnp.take_along_axis(masked, prop[:, None], axis=-1)[:, 0]
    # Order the proposals by (cluster, cost, row); non-proposers go last.
    group = jnp.where(assigned, k, prop)
    order = jnp.lexsort((rows, pcost, group))
    g_sorted = group[order]
    first = jnp.searchsorted(g_sorted, g_sorted, side="left")
    rank_sorted = jnp.arange(n) - first
    rank = jnp.zeros(n, jnp.int32).at[order].set(rank_sorted.astype(jnp.int32))
    accept = (~assigned) & (rank < room[jnp.clip(prop, 0, k - 1)])
    a = jnp.where(accept, prop, a)
    taken = jax.ops.segment_sum(accept.astype(jnp.int32), prop, num_segments=k)
    return a, assigned | accept, room - taken, r + 1

  state = (jnp.zeros(n, jnp.int32), w <= 0, jnp.full((k,), capacity, jnp.int32), 0)
  a, _, _, _ = jax.lax.while_loop(cond, body, state)
  return a


def _balanced_step(x, w, c, *, k: int, capacity: int):
  """A Lloyd step with the balanced assignment (global: the [n, k] cost matrix is built)."""
  c_sq = jnp.sum(c * c, axis=-1)
  x_sq = jnp.sum(x * x, axis=-1)
  cost = jnp.maximum(x_sq[:, None] - 2.0 * jnp.dot(x, c.T, precision=jax.lax.Precision.HIGHEST)
                     + c_sq[None, :], 0.0)
  a = _balanced_assign(cost, w, capacity)
  dist = jnp.take_along_axis(cost, a[:, None], axis=-1)[:, 0]
  sums, counts, inertia = _cluster_stats(x, w, a, dist, k)
  return sums, counts, inertia, a, dist


# ----------------------------------------------------------------------------- init


def _kmeanspp(key: jax.Array, xs: jax.Array, k: int) -> jax.Array:
  """Greedy k-means++ seeding on the rows xs (as scikit-learn): each new centre is the best of
  2 + floor(ln k) candidates drawn with probability proportional to the squared distance to
  the nearest centre so far (the one that lowers the total potential most).

  Shape: xs [m, d] -> [k, d].
  """
  m = xs.shape[0]
  trials = 2 + int(math.log(k)) if k > 1 else 1
  k0, key = jax.random.split(key)
  first = xs[jax.random.randint(k0, (), 0, m)]
  c = jnp.zeros((k, xs.shape[1]), xs.dtype).at[0].set(first)
  x_sq = jnp.sum(xs * xs, axis=-1)

  def sq_dist(y):  # [t, d] -> [t, m]
    return jnp.maximum(jnp.sum(y * y, axis=-1)[:, None] + x_sq[None, :]
                       - 2.0 * jnp.dot(y, xs.T, precision=jax.lax.Precision.HIGHEST), 0.0)

  mind = sq_dist(first[None])[0]

  def body(i, state):
    c, mind = state
    total = jnp.sum(mind)
    p = jnp.where(total > 0, mind / jnp.maximum(total, _EPS), 1.0 / m)
    cand = jax.random.choice(jax.random.fold_in(key, i), m, (trials,), p=p)
    new_min = jnp.minimum(mind[None, :], sq_dist(xs[cand]))
    best = jnp.argmin(jnp.sum(new_min, axis=-1))
    return c.at[i].set(xs[cand[best]]), new_min[best]

  c, _ = jax.lax.fori_loop(1, k, body, (c, mind))
  return c


@functools.partial(jax.jit, static_argnames=("n", "k", "init", "metric"))
def _init_centroids(key, x, *, n: int, k: int, init: str, metric: str):
  """k-means++ on a subsample of min(n, 64 k) real rows, or k distinct random rows."""
  ks, kp = jax.random.split(key)
  if init == "random":
    idx = jax.random.choice(ks, n, (k,), replace=False)
    c = x[idx]
  else:
    m = min(n, KMEANSPP_POINTS_PER_CLUSTER * k)
    idx = jax.random.choice(ks, n, (m,), replace=False) if m < n else jnp.arange(n)
    c = _kmeanspp(kp, x[idx], k)
  return _normalize(c) if metric == "cosine" else c


# ----------------------------------------------------------------------------- loops


def _lloyd(x, w, c0, key, *, step, k: int, n: int, iters: int, tol: float, metric: str):
  """Full-batch Lloyd with empty-cluster repair, stopping early when the inertia stops falling.

  Stops after iteration t when inertia_{t-1} - inertia_t <= tol * inertia_{t-1} (tol < 0 never
  stops). Returns (centroids, iterations, history [iters]).
  """
  del key, n
  hist0 = jnp.full((max(iters, 1),), jnp.nan, jnp.float32)

  def cond(s):
    _, t, _, done = s
    return jnp.logical_and(t < iters, ~done)

  def body(s):
    c, t, hist, _ = s
    sums, counts, inertia, _, dist = step(x, w, c)
    new = _repair(_update(c, sums, counts, metric), counts, x, w, dist, metric)
    prev = hist[jnp.maximum(t - 1, 0)]
    done = jnp.logical_and(t > 0, prev - inertia <= tol * prev) if tol >= 0 else jnp.asarray(False)
    return new, t + 1, hist.at[t].set(inertia), done

  c, t, hist, _ = jax.lax.while_loop(cond, body, (c0, 0, hist0, jnp.asarray(False)))
  return c, t, hist


def _minibatch(x, w, c0, key, *, step, k: int, n: int, iters: int, tol: float, metric: str,
               batch_size: int):
  """Mini-batch k-means (Sculley 2010): per step, a batch of rows drawn uniformly with
  replacement; each centroid moves toward its batch mean with learning rate b_c / v_c, where v_c
  counts every row it has received so far. Runs all `iters` steps."""
  del tol
  hist0 = jnp.full((max(iters, 1),), jnp.nan, jnp.float32)

  def body(t, s):
    c, v, hist = s
    idx = jax.random.randint(jax.random.fold_in(key, t), (batch_size,), 0, n)
    xb = x[idx]
    sums, counts, inertia, _, _ = step(xb, jnp.ones((batch_size,), x.dtype), c)
    v = v + counts
    lr = jnp.where(v > 0, 1.0 / jnp.maximum(v, 1.0), 0.0)
    new = c + lr[:, None] * (sums - counts[:, None] * c)
    if metric == "cosine":
      new = jnp.where(counts[:, None] > 0, _normalize(new), c)
    return new, v, hist.at[t].set(inertia * (n / batch_size))

  c, _, hist = jax.lax.fori_loop(0, iters, body, (c0, jnp.zeros((k,), x.dtype), hist0))
  return c, jnp.asarray(iters), hist


@functools.partial(jax.jit, static_argnames=("mesh", "k", "n", "iters", "tol", "metric",
                                             "batch_size", "balanced", "chunk"))
def _fit_program(x, w, c0, key, *, mesh, k, n, iters, tol, metric, batch_size, balanced, chunk):
  """The whole fit: loop, final assignment, repair of clusters left empty, reassignment."""
  if balanced:
    capacity = -(-n // k)
    step = functools.partial(_balanced_step, k=k, capacity=capacity)
  else:
    step = _make_step(mesh, k=k, chunk=chunk)
  if batch_size is None:
    c, t, hist = _lloyd(x, w, c0, key, step=step, k=k, n=n, iters=iters, tol=tol, metric=metric)
  else:
    mb_step = functools.partial(_local_step, k=k, chunk=batch_size)
    c, t, hist = _minibatch(x, w, c0, key, step=mb_step, k=k, n=n, iters=iters, tol=tol,
                            metric=metric, batch_size=batch_size)
  _, counts, _, _, dist = step(x, w, c)
  c = _repair(c, counts, x, w, dist, metric)
  _, _, inertia, a, _ = step(x, w, c)
  return c, a, inertia, t, hist


# ----------------------------------------------------------------------------- public


def _prepare(x: np.ndarray, mesh: Mesh | None, k: int):
  """Pads rows (to the data-parallel size times a chunk multiple) and places x on devices.

  Returns (x [n_pad, d], w [n_pad], chunk).
  """
  n = x.shape[0]
  shards = 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]
  per = -(-n // shards)
  chunk = _chunk_rows(per, k)
  per = -(-per // chunk) * chunk
  n_pad = per * shards
  xp = np.zeros((n_pad, x.shape[1]), np.float32)
  xp[:n] = x
  wp = np.zeros((n_pad,), np.float32)
  wp[:n] = 1.0
  if mesh is None:
    return jnp.asarray(xp), jnp.asarray(wp), chunk
  return (jax.device_put(xp, batch_sharding(mesh, 2)), jax.device_put(wp, batch_sharding(mesh, 1)),
          chunk)


def kmeans_fit(x: Any, num_clusters: int, *, key: jax.Array, iters: int = 25,
               metric: str = "l2", batch_size: int | None = None, init: str = "kmeans++",
               init_centroids: Any = None, balanced: bool = False, mesh: Mesh | None = None,
               tol: float | None = 1e-6) -> KMeansResult:
  """Fits k-means to the rows of x.

  Args:
    x: the rows to cluster. Shape: [n, d] (cast to float32; NaN/inf rejected).
    num_clusters: k, 1 <= k <= n.
    key: a `jax.random` key; the fit is a pure function of (x, options, key).
    iters: maximum Lloyd iterations (full batch) or exact number of mini-batch steps.
    metric: "l2" (squared Euclidean) or "cosine" (spherical k-means on unit rows).
    batch_size: None for full-batch Lloyd; else mini-batch k-means with per-centroid
      count-based learning rates, `iters` batches of this many rows.
    init: "kmeans++" (greedy k-means++ on a random subsample of at most 64 k rows, for speed)
      or "random"
      (k distinct rows).
    init_centroids: warm start, float32 [k, d]; replaces `init`.
    balanced: capacity-constrained assignment, at most ceil(n / k) rows per cluster
      (see `_balanced_assign`; builds an [n, k] cost matrix, so memory grows as n k).
    mesh: a (data, fsdp, tensor) mesh: rows are sharded over data x fsdp, per-cluster sums are
      all-reduced. None: the default device.
    tol: stop when an iteration improves the inertia by at most `tol` times its previous
      value; None never stops early (exactly `iters` iterations).

  Shape: x [n, d] -> centroids [k, d], assignments [n].
  """
  x = _check_x(x)
  n, d = x.shape
  _check_metric(metric)
  _check_options(n, d, num_clusters, iters, batch_size, init, tol)
  if balanced and batch_size is not None:
    raise ConfigError("balanced", "balanced assignment needs full-batch Lloyd (batch_size=None)")
  k = int(num_clusters)
  if metric == "cosine":
    x = np.asarray(_normalize(jnp.asarray(x)))
  xp, wp, chunk = _prepare(x, mesh, k)
  k_init, k_fit = jax.random.split(key)
  if init_centroids is not None:
    c0 = _check_x(init_centroids, "init_centroids")
    if c0.shape != (k, d):
      raise ConfigError("init_centroids", f"must have shape {(k, d)}, got {c0.shape}")
    c0 = jnp.asarray(c0)
    if metric == "cosine":
      c0 = _normalize(c0)
  else:
    c0 = _init_centroids(k_init, xp, n=n, k=k, init=init, metric=metric)
  if batch_size is not None:
    batch_size = int(min(batch_size, n))
  c, a, inertia, t, hist = _fit_program(
      xp, wp, c0, k_fit, mesh=mesh, k=k, n=n, iters=int(iters),
      tol=-1.0 if tol is None else float(tol), metric=metric, batch_size=batch_size,
      balanced=bool(balanced), chunk=chunk)
  t = int(t)
  return KMeansResult(centroids=np.asarray(c, np.float32),
                      assignments=np.asarray(a, np.int32)[:n],
                      inertia=float(inertia), iterations=t,
                      inertia_history=np.asarray(hist, np.float64)[:t])


@functools.partial(jax.jit, static_argnames=("chunk",))
def _assign_program(x, c, *, chunk):
  return _nearest(x, c, chunk)


def kmeans_assign(x: Any, centroids: Any, *, metric: str = "l2") -> np.ndarray:
  """Nearest centroid of each row (chunked, jitted); ties go to the lowest centroid index.

  Shape: x [n, d], centroids [k, d] -> int32 [n].
  """
  return kmeans_assign_with_distance(x, centroids, metric=metric)[0]


def kmeans_assign_with_distance(x: Any, centroids: Any, *,
                                metric: str = "l2") -> tuple[np.ndarray, np.ndarray]:
  """Nearest centroid and its squared distance (between unit vectors for cosine).

  Shape: x [n, d], centroids [k, d] -> int32 [n], float32 [n].
  """
  x = _check_x(x)
  c = _check_x(centroids, "centroids")
  _check_metric(metric)
  if c.shape[1] != x.shape[1]:
    raise DataError(f"centroids have dim {c.shape[1]}, x has dim {x.shape[1]}")
  n = x.shape[0]
  xj, cj = jnp.asarray(x), jnp.asarray(c)
  if metric == "cosine":
    xj, cj = _normalize(xj), _normalize(cj)
  chunk = _chunk_rows(n, c.shape[0])
  n_pad = -(-n // chunk) * chunk
  if n_pad != n:
    xj = jnp.pad(xj, ((0, n_pad - n), (0, 0)))
  a, dist = _assign_program(xj, cj, chunk=chunk)
  return np.asarray(a[:n], np.int32), np.asarray(dist[:n], np.float32)
