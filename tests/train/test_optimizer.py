"""Schedules at hand-computed steps, the weight-decay mask, config errors."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.train import optimizer as opt_lib

LR = 1e-3


def _schedule(decay, **kw):
  args = {"learning_rate": LR, "warmup_steps": 10, "decay": decay, "total_steps": 110}
  args.update(kw)
  return opt_lib.make_schedule(**args)


def _at(schedule, step):
  return opt_lib.learning_rate_at(schedule, step)


@pytest.mark.parametrize("decay", opt_lib.DECAYS)
def test_warmup_is_linear_from_zero(decay):
  s = _schedule(decay)
  assert _at(s, 0) == 0.0
  assert _at(s, 5) == pytest.approx(0.5 * LR)
  assert _at(s, 10) == pytest.approx(LR)


def test_constant():
  s = _schedule("constant")
  assert [_at(s, t) for t in (10, 50, 110, 1000)] == pytest.approx([LR] * 4)


def test_cosine_reaches_end_fraction():
  s = _schedule("cosine", end_fraction=0.1)
  end = 0.1 * LR
  assert _at(s, 60) == pytest.approx(end + (LR - end) * 0.5)  # half way: cos = 0
  assert _at(s, 35) == pytest.approx(end + (LR - end) * 0.5 * (1 + math.cos(math.pi / 4)))
  assert _at(s, 110) == pytest.approx(end)
  assert _at(s, 500) == pytest.approx(end)


def test_linear_reaches_end_fraction():
  s = _schedule("linear", end_fraction=0.2)
  assert _at(s, 60) == pytest.approx(0.6 * LR)
  assert _at(s, 110) == pytest.approx(0.2 * LR)
  assert _at(s, 200) == pytest.approx(0.2 * LR)
  assert _at(_schedule("linear"), 110) == pytest.approx(0.0, abs=1e-12)


def test_inverse_sqrt():
  s = _schedule("inverse_sqrt")
  assert _at(s, 40) == pytest.approx(LR * math.sqrt(10 / 40))
  assert _at(s, 1000) == pytest.approx(LR * 0.1)


def test_no_warmup_starts_at_peak():
  assert _at(_schedule("cosine", warmup_steps=0), 0) == pytest.approx(LR)


def test_schedule_is_jittable():
  s = _schedule("inverse_sqrt")
  assert float(jax.jit(s)(jnp.asarray(40))) == pytest.approx(LR * 0.5)


class _Tiny(nnx.Module):
  def __init__(self, rngs):
    self.lin = nnx.Linear(3, 4, rngs=rngs)
    self.norm = nnx.LayerNorm(4, rngs=rngs)

  def __call__(self, x):
    return self.norm(self.lin(x))


def test_weight_decay_skips_vectors():
  model = _Tiny(nnx.Rngs(0))
  # Non-zero biases so decay on them would show.
  model.lin.bias[...] = jnp.ones((4,))
  model.norm.bias[...] = jnp.ones((4,))
  before = jax.tree.map(np.array, nnx.state(model, nnx.Param))
  tx = opt_lib.make_optimizer(learning_rate=0.1, warmup_steps=0, decay="constant",
                              total_steps=10, weight_decay=0.5)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  grads = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
  optimizer.update(model, grads)
  # Zero grads: Adam's step is 0, only decoupled decay moves a weight: w *= 1 - lr * wd.
  np.testing.assert_allclose(model.lin.kernel[...], before["lin"]["kernel"][...] * 0.95,
                             rtol=1e-6)
  np.testing.assert_array_equal(model.lin.bias[...], before["lin"]["bias"][...])
  np.testing.assert_array_equal(model.norm.scale[...], before["norm"]["scale"][...])
  np.testing.assert_array_equal(model.norm.bias[...], before["norm"]["bias"][...])


def _first_moment_norm(clip_norm):
  tx = opt_lib.make_optimizer(learning_rate=1.0, warmup_steps=0, decay="constant",
                              total_steps=1, weight_decay=0.0, clip_norm=clip_norm)
  params = {"w": jnp.zeros((2, 2))}
  grads = {"w": jnp.full((2, 2), 100.0)}  # global norm 200
  _, state = tx.update(grads, tx.init(params), params)
  adam_state = state[1][0] if clip_norm > 0 else state[0]
  return float(np.linalg.norm(adam_state.mu["w"]))


def test_clipping_bounds_the_gradient():
  # Adam's first moment after one step is (1 - b1) * the gradient it was given.
  assert _first_moment_norm(1.0) == pytest.approx(0.1 * 1.0, rel=1e-5)
  assert _first_moment_norm(0.0) == pytest.approx(0.1 * 200.0, rel=1e-5)


def _train_cfg(**kw):
  fields = {"learning_rate": LR, "warmup_steps": 10, "decay": "cosine", "num_steps": 110,
            "weight_decay": 0.01, "b1": 0.9, "b2": 0.98, "clip_norm": 1.0, "end_fraction": 0.0}
  fields.update(kw)  # Before ConfigDict: it refuses to retype a field (int -> float).
  return ml_collections.ConfigDict(fields)


def test_from_config_builds_and_steps():
  tx = opt_lib.optimizer_from_config(_train_cfg())
  params = {"w": jnp.ones((2, 2)), "b": jnp.ones((2,))}
  updates, _ = tx.update(jax.tree.map(jnp.ones_like, params), tx.init(params), params)
  assert jax.tree.structure(updates) == jax.tree.structure(params)


@pytest.mark.parametrize("field,value", [
    ("decay", "exponential"),
    ("learning_rate", 0.0),
    ("learning_rate", float("nan")),
    ("warmup_steps", -1),
    ("warmup_steps", 500),
    ("warmup_steps", 2.5),
    ("num_steps", 0),
    ("end_fraction", 1.5),
    ("weight_decay", -0.1),
    ("b1", 1.0),
    ("b2", -0.5),
])
def test_bad_config_names_the_field(field, value):
  with pytest.raises(ConfigError) as e:
    opt_lib.optimizer_from_config(_train_cfg(**{field: value}))
  assert e.value.field == f"train.{field}"
  assert f"train.{field}" in str(e.value)


def test_inverse_sqrt_needs_warmup():
  with pytest.raises(ConfigError) as e:
    opt_lib.make_schedule(learning_rate=LR, warmup_steps=0, decay="inverse_sqrt",
                          total_steps=10)
  assert e.value.field == "train.warmup_steps"


def test_missing_required_field():
  cfg = _train_cfg()
  del cfg["decay"]
  with pytest.raises(ConfigError) as e:
    opt_lib.optimizer_from_config(cfg)
  assert e.value.field == "train.decay"
