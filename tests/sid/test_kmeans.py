"""k-means: recovery of planted clusters, repair, balance, mini-batch, determinism, mesh."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.parallel.mesh import make_mesh
from lrm.sid.kmeans import KMeansResult, kmeans_assign, kmeans_fit


def blobs(n=3001, k=8, d=16, scale=10.0, seed=0):
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(k, d)) * scale
  labels = rng.integers(0, k, n)
  return (centers[labels] + rng.normal(size=(n, d))).astype(np.float32), labels


def purity(pred, truth):
  m = np.zeros((pred.max() + 1, truth.max() + 1))
  np.add.at(m, (pred, truth), 1)
  return m.max(axis=1).sum() / len(pred)


def agreement(a, b):
  """Purity both ways (1.0 = the same partition up to relabelling)."""
  return min(purity(a, b), purity(b, a))


@pytest.fixture(scope="module")
def data():
  return blobs()


@pytest.fixture(scope="module")
def fitted(data):
  x, _ = data
  return kmeans_fit(x, 8, key=jax.random.key(0))


def test_recovers_planted_clusters_l2(data, fitted):
  x, labels = data
  assert isinstance(fitted, KMeansResult)
  assert fitted.centroids.shape == (8, 16) and fitted.centroids.dtype == np.float32
  assert fitted.assignments.shape == (len(x),) and fitted.assignments.dtype == np.int32
  assert agreement(fitted.assignments, labels) >= 0.95
  assert 1 <= fitted.iterations <= 25
  assert len(fitted.inertia_history) == fitted.iterations
  assert np.all(np.diff(fitted.inertia_history) <= 1e-3 * fitted.inertia_history[0])
  # Inertia and assignments agree with the returned centroids.
  np.testing.assert_array_equal(kmeans_assign(x, fitted.centroids), fitted.assignments)
  d = ((x - fitted.centroids[fitted.assignments]) ** 2).sum()
  assert fitted.inertia == pytest.approx(d, rel=1e-4)


def test_recovers_planted_clusters_cosine():
  rng = np.random.default_rng(1)
  dirs = rng.normal(size=(6, 16))
  labels = rng.integers(0, 6, 2000)
  # Planted directions at random magnitudes: only the angle carries the cluster.
  x = dirs[labels] * rng.uniform(0.5, 20.0, (2000, 1)) + 0.05 * rng.normal(size=(2000, 16)) * \
      rng.uniform(0.5, 20.0, (2000, 1))
  r = kmeans_fit(x, 6, key=jax.random.key(0), metric="cosine")
  assert agreement(r.assignments, labels) >= 0.95
  np.testing.assert_allclose(np.linalg.norm(r.centroids, axis=1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(kmeans_assign(x, r.centroids, metric="cosine"), r.assignments)


def test_random_init_and_same_key_same_result(data, fitted):
  x, labels = data
  again = kmeans_fit(x, 8, key=jax.random.key(0))
  np.testing.assert_array_equal(again.centroids, fitted.centroids)
  np.testing.assert_array_equal(again.assignments, fitted.assignments)
  r = kmeans_fit(x, 8, key=jax.random.key(3), init="random", iters=50)
  assert len(np.unique(r.assignments)) == 8


def test_empty_cluster_is_repaired(data):
  x, _ = data
  # One centroid far from every row: its cluster is empty after the first assignment.
  init = np.concatenate([x[:7], np.full((1, x.shape[1]), 1e4, np.float32)])
  r = kmeans_fit(x, 8, key=jax.random.key(0), init_centroids=init, iters=30)
  assert np.all(r.cluster_sizes() > 0)
  assert np.abs(r.centroids).max() < 100
  # Without iterations the final repair still fills it.
  r0 = kmeans_fit(x, 8, key=jax.random.key(0), init_centroids=init, iters=0)
  assert r0.iterations == 0 and np.all(r0.cluster_sizes() > 0)


def test_balanced_respects_capacity():
  rng = np.random.default_rng(2)
  # Very unequal planted clusters: plain k-means would give sizes far above n / k.
  x = np.concatenate([rng.normal(size=(900, 8)), rng.normal(size=(100, 8)) + 8.0,
                      rng.normal(size=(3, 8)) - 8.0]).astype(np.float32)
  r = kmeans_fit(x, 4, key=jax.random.key(0), balanced=True)
  cap = -(-len(x) // 4)
  sizes = r.cluster_sizes()
  assert sizes.max() <= cap and sizes.sum() == len(x)
  plain = kmeans_fit(x, 4, key=jax.random.key(0))
  assert plain.cluster_sizes().max() > cap


def test_minibatch_close_to_full_batch(data, fitted):
  x, labels = data
  r = kmeans_fit(x, 8, key=jax.random.key(0), batch_size=256, iters=60)
  assert r.iterations == 60
  assert r.inertia <= 1.05 * fitted.inertia
  assert agreement(r.assignments, labels) >= 0.95


def test_mesh_equals_single_device(data, fitted):
  x, _ = data
  mesh = make_mesh((4, 2, 1))  # 3001 rows: padded to a multiple of 8 with masked rows
  r = kmeans_fit(x, 8, key=jax.random.key(0), mesh=mesh)
  np.testing.assert_allclose(r.centroids, fitted.centroids, rtol=1e-4, atol=1e-4)
  np.testing.assert_array_equal(r.assignments, fitted.assignments)
  assert r.inertia == pytest.approx(fitted.inertia, rel=1e-5)
  assert r.iterations == fitted.iterations


def test_warm_start_converges_immediately(data, fitted):
  x, _ = data
  r = kmeans_fit(x, 8, key=jax.random.key(9), init_centroids=fitted.centroids)
  assert r.iterations <= 2
  np.testing.assert_allclose(r.centroids, fitted.centroids, rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(r.assignments, fitted.assignments)


def test_fixed_iterations_without_tol(data):
  x, _ = data
  r = kmeans_fit(x[:500], 4, key=jax.random.key(0), iters=7, tol=None)
  assert r.iterations == 7 and len(r.inertia_history) == 7


@pytest.mark.parametrize("kwargs, error, field", [
    (dict(num_clusters=0), ConfigError, "num_clusters"),
    (dict(num_clusters=11), ConfigError, "num_clusters"),
    (dict(metric="dot"), ConfigError, "metric"),
    (dict(init="kmeans||"), ConfigError, "init"),
    (dict(iters=-1), ConfigError, "iters"),
    (dict(batch_size=0), ConfigError, "batch_size"),
    (dict(init_centroids=np.zeros((3, 4))), ConfigError, "init_centroids"),
])
def test_bad_options(kwargs, error, field):
  x = np.random.default_rng(0).normal(size=(10, 4))
  args = dict(num_clusters=2)
  args.update(kwargs)
  with pytest.raises(error) as e:
    kmeans_fit(x, args.pop("num_clusters"), key=jax.random.key(0), **args)
  assert e.value.field == field


def test_bad_inputs():
  x = np.random.default_rng(0).normal(size=(10, 4))
  bad = x.copy()
  bad[3, 1] = np.nan
  with pytest.raises(DataError, match="non-finite"):
    kmeans_fit(bad, 2, key=jax.random.key(0))
  with pytest.raises(DataError, match="2-d"):
    kmeans_fit(x[0], 2, key=jax.random.key(0))
  with pytest.raises(DataError, match="dim"):
    kmeans_assign(x, np.zeros((2, 5)))
