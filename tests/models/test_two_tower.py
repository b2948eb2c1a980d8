"""Two-tower retrieval: logQ correction, exact top-k, cold coverage, unseen IDs."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.two_tower import (TwoTower, TwoTowerConfig, cold_coverage, in_batch_logits,
                                  log_sampling_probability, recall_at_k, sampled_softmax_loss,
                                  top_k)
from lrm.jobs.replay import train_two_tower


def test_logq_correction_hand_case():
  user = jnp.eye(2)
  item = jnp.array([[1.0, 0.0], [0.0, 1.0]])
  q = jnp.array([0.5, 0.25])
  logits = in_batch_logits(user, item, jnp.log(q), temperature=1.0)
  # s = identity; corrected: s_ij - log q_j.
  want = np.array([[1 - np.log(0.5), -np.log(0.25)], [-np.log(0.5), 1 - np.log(0.25)]])
  np.testing.assert_allclose(logits, want, rtol=1e-6)
  # Row 0's loss: -log softmax([1 + log2, log4])[0] = log(1 + e^(log4 - 1 - log2)).
  loss = sampled_softmax_loss(user[:1], item[:1], jnp.log(q[:1]), 1.0)
  assert float(loss) == pytest.approx(0.0, abs=1e-6)   # one column: nothing to compete with
  full = sampled_softmax_loss(user, item, jnp.log(q), 1.0)
  row0 = np.log1p(np.exp(np.log(4) - 1 - np.log(2)))
  row1 = np.log1p(np.exp(np.log(2) - 1 - np.log(4)))
  assert float(full) == pytest.approx((row0 + row1) / 2, rel=1e-5)
  # Without the correction the loss is symmetric.
  plain = sampled_softmax_loss(user, item, None, 1.0)
  assert float(plain) == pytest.approx(np.log1p(np.exp(-1.0)), rel=1e-5)


def test_log_sampling_probability():
  np.testing.assert_allclose(log_sampling_probability(np.array([0, 0, 1, 2]), 4),
                             np.log([0.5, 0.5, 0.25, 0.25]), rtol=1e-6)


def _model(**kw):
  rng = np.random.default_rng(0)
  content = rng.normal(size=(12, 5)).astype(np.float32)
  clusters = np.arange(12) % 3
  cfg = TwoTowerConfig(num_items=12, content_dim=5, num_clusters=3, d=8, **kw)
  return TwoTower(cfg, content, clusters, rngs=nnx.Rngs(0)), content, clusters


def test_top_k_is_exact_and_coverage_counts_cold_items():
  model, _, _ = _model()
  history = np.array([[0, 1, -1], [-1, -1, 5], [3, 4, 6]])
  top = top_k(model, history, 4)
  scores = np.asarray(model.users(jnp.asarray(history)) @ model.items().T)
  np.testing.assert_array_equal(np.sort(top, 1), np.sort(np.argsort(-scores, 1)[:, :4], 1))
  assert cold_coverage(np.array([[1, 2], [2, 9]]), np.array([2, 7, 9, 11])) == 0.5
  assert recall_at_k(np.array([[1, 2], [2, 9]]), np.array([2, 3])) == 0.5
  with pytest.raises(ConfigError, match="k"):
    top_k(model, history, 13)


def test_unknown_ids_get_no_id_vector_and_training_lowers_the_loss():
  rng = np.random.default_rng(0)
  cfg = TwoTowerConfig(num_items=12, content_dim=5, use_item_id=True, use_content=False, d=8)
  known = np.arange(12) < 6
  model = TwoTower(cfg, rng.normal(size=(12, 5)), None, id_known=known, rngs=nnx.Rngs(0))
  v = np.asarray(model.items())
  np.testing.assert_allclose(v[6], v[7])          # unseen IDs: all the same vector
  assert not np.allclose(v[0], v[1])
  history = rng.integers(0, 6, (64, 3))
  target = (history[:, 0] + 1) % 6
  first = train_two_tower(model, history, target, num_steps=1, batch_size=32,
                          learning_rate=1e-2, seed=0)
  last = train_two_tower(model, history, target, num_steps=100, batch_size=32,
                         learning_rate=1e-2, seed=0)
  assert last < first


def test_config_errors():
  with pytest.raises(ConfigError, match="temperature"):
    TwoTowerConfig(num_items=3, content_dim=2, temperature=0)
  with pytest.raises(ConfigError, match="clusters"):
    TwoTower(TwoTowerConfig(num_items=3, content_dim=2, num_clusters=2), np.zeros((3, 2)),
             None, rngs=nnx.Rngs(0))
