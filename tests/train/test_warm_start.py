"""Grafting a trained state onto grown vocabulary tables."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lrm.train.warm_start import appended_rows, graft, graft_into


class Tower(nnx.Module):
  def __init__(self, vocab: int, rngs: nnx.Rngs):
    self.embed = nnx.Embed(vocab, 4, rngs=rngs)
    self.out = nnx.Linear(4, 3, rngs=rngs)

  def __call__(self, x):
    return self.out(self.embed(x))


def trained(vocab, steps=3):
  model = Tower(vocab, nnx.Rngs(0))
  opt = nnx.Optimizer(model, optax.adam(0.1), wrt=nnx.Param)
  for _ in range(steps):
    grads = nnx.grad(lambda m: jnp.sum(m(jnp.arange(vocab)) ** 2))(model)
    opt.update(model, grads)
  return model, opt


def test_old_rows_and_moments_carry_new_rows_start_fresh():
  old_model, old_opt = trained(5)
  model = Tower(8, nnx.Rngs(1))
  fresh_rows = np.asarray(model.embed.embedding[...][5:])
  opt = nnx.Optimizer(model, optax.adam(0.1), wrt=nnx.Param)
  summary = graft_into(model, opt, old_model, old_opt)
  np.testing.assert_array_equal(model.embed.embedding[...][:5], old_model.embed.embedding[...])
  np.testing.assert_array_equal(model.embed.embedding[...][5:], fresh_rows)
  np.testing.assert_array_equal(model.out.kernel[...], old_model.out.kernel[...])
  mu_new = opt.opt_state[0].mu["embed"]["embedding"][...]
  mu_old = old_opt.opt_state[0].mu["embed"]["embedding"][...]
  np.testing.assert_array_equal(mu_new[:5], mu_old)
  assert not np.any(mu_new[5:])
  # Step counts restart (the schedule warms up again); the moments do not.
  assert int(opt.step[...]) == 0 and int(opt.opt_state[0].count[...]) == 0
  assert appended_rows(summary) == 3 * 3   # embedding, mu, nu: 3 rows each
  assert len(summary["grown"]) == 3


def test_counts_kept_on_request():
  old_model, old_opt = trained(5)
  new_model = Tower(5, nnx.Rngs(1))
  new_opt = nnx.Optimizer(new_model, optax.adam(0.1), wrt=nnx.Param)
  state, summary = graft(nnx.state((old_model, old_opt)), nnx.state((new_model, new_opt)),
                         keep_step_counts=True)
  assert summary["grown"] == {}
  nnx.update((new_model, new_opt), state)
  assert int(new_opt.step[...]) == 3


def test_only_appended_rows_are_allowed():
  old = {"w": jnp.ones((4, 3))}
  with pytest.raises(ValueError, match=r"\['w'\].*only rows"):
    graft(old, {"w": jnp.zeros((4, 5))})
  with pytest.raises(ValueError, match="cannot grow"):
    graft(old, {"w": jnp.zeros((2, 3))})
