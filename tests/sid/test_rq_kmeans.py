"""Residual k-means: error falls per level, assign = fit codes, planted topics, save/load."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.data.synthetic import WorldConfig, make_world
from lrm.sid import rq_kmeans as rq


def purity(pred, truth):
  m = np.zeros((pred.max() + 1, truth.max() + 1))
  np.add.at(m, (pred, truth), 1)
  return m.max(axis=1).sum() / len(pred)


@pytest.fixture(scope="module")
def world():
  return make_world(WorldConfig())


@pytest.fixture(scope="module")
def fitted(world):
  x = world.catalog.embeddings["visual"]
  return x, rq.rq_kmeans_fit(x, (8, 8, 8), key=jax.random.key(0))


def test_error_falls_each_level(fitted):
  x, model = fitted
  assert model.levels == 3 and model.dim == x.shape[1]
  assert model.codebook_sizes == (8, 8, 8)
  assert all(c.dtype == np.float32 for c in model.codebooks)
  err = rq.residual_errors(model, x)
  assert err.shape == (3,)
  assert np.all(np.diff(err) < 0) and err[0] < 1.0
  assert np.all(np.diff(model.inertia) < 0)


def test_assign_deterministic_and_equals_fit_codes(fitted):
  x, model = fitted
  codes = rq.rq_assign(model, x)
  assert codes.shape == (len(x), 3) and codes.dtype == np.int32
  np.testing.assert_array_equal(codes, model.codes)
  np.testing.assert_array_equal(rq.rq_assign(model, x), codes)
  recon = rq.rq_reconstruct(model, codes)
  assert recon.shape == x.shape and recon.dtype == np.float32
  rel = ((x - recon) ** 2).sum() / (x ** 2).sum()
  assert rel == pytest.approx(rq.residual_errors(model, x)[-1], rel=1e-4)


def test_level_one_recovers_planted_top_topics(world, fitted):
  _, model = fitted
  top = world.truth.leaf_path[world.truth.item_topic, 0]
  chance = np.bincount(top).max() / len(top)
  assert purity(model.codes[:, 0], top) >= max(0.8, chance + 0.3)


def test_multi_resolution_and_cosine(world):
  x = world.catalog.embeddings["visual"]
  model = rq.rq_kmeans_fit(x, (32, 16, 8), key=jax.random.key(1), metric="cosine", iters=10)
  assert model.codebook_sizes == (32, 16, 8)
  assert model.codes[:, 0].max() < 32 and model.codes[:, 2].max() < 8
  assert np.all(np.diff(rq.residual_errors(model, x)) < 0)
  np.testing.assert_array_equal(rq.rq_assign(model, x), model.codes)


def test_warm_start_and_cluster_ids(fitted):
  x, model = fitted
  again = rq.rq_kmeans_fit(x, (8, 8, 8), key=jax.random.key(5),
                           init_codebooks=list(model.codebooks))
  np.testing.assert_array_equal(again.codes, model.codes)
  ids = rq.cluster_ids_fit(x, 20, key=jax.random.key(0))
  assert ids.levels == 1 and ids.codes.shape == (len(x), 1)
  assert len(np.unique(ids.codes)) == 20


def test_save_load_round_trip(tmp_path, fitted):
  x, model = fitted
  rq.save(model, tmp_path / "rq")
  loaded = rq.load(tmp_path / "rq")
  assert loaded.codebook_sizes == model.codebook_sizes and loaded.metric == model.metric
  for a, b in zip(loaded.codebooks, model.codebooks):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(loaded.codes, model.codes)
  np.testing.assert_array_equal(rq.rq_assign(loaded, x[:50]), model.codes[:50])
  with pytest.raises(DataError, match="manifest"):
    rq.load(tmp_path / "missing")


def test_bad_inputs(fitted):
  x, model = fitted
  with pytest.raises(ConfigError) as e:
    rq.rq_kmeans_fit(x, (), key=jax.random.key(0))
  assert e.value.field == "codebook_sizes"
  with pytest.raises(ConfigError):
    rq.rq_kmeans_fit(x[:10], (4, 16), key=jax.random.key(0))
  with pytest.raises(ConfigError) as e:
    rq.rq_kmeans_fit(x, (4, 4), key=jax.random.key(0), init_codebooks=[model.codebooks[0]])
  assert e.value.field == "init_codebooks"
  with pytest.raises(DataError):
    rq.rq_assign(model, x[:, :10])
  with pytest.raises(DataError):
    rq.rq_reconstruct(model, np.full((2, 3), 99))
