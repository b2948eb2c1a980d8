"""Checkpointer: round trips, best + latest retention, grain resume, resharding on restore."""

from __future__ import annotations

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from lrm.train.checkpoint import Checkpointer


def _model_and_optimizer(seed=0):
  model = nnx.Linear(3, 4, rngs=nnx.Rngs(seed))
  return model, nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)


def _abstract(state):
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), state)


def _assert_trees_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_model_and_optimizer(tmp_path):
  model, optimizer = _model_and_optimizer()
  # One real update, so the optimizer state (count, mu, nu) is not its initial value.
  grads = jax.tree.map(jnp.ones_like, nnx.state(model, nnx.Param))
  optimizer.update(model, grads)
  state = nnx.state((model, optimizer))
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.save(7, state, extra={"config": {"lr": 1e-3}, "sid_table": "abc"})
  # A new process' view: fresh objects, abstract state from eval_shape.
  fresh_model, fresh_opt = nnx.eval_shape(lambda: _model_and_optimizer(seed=1))
  abstract = nnx.state((fresh_model, fresh_opt))
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 7
    restored, extra = ckpt.restore(abstract)
  assert extra == {"config": {"lr": 1e-3}, "sid_table": "abc"}
  _assert_trees_equal(restored, state)
  # And it goes back into live modules.
  model2, opt2 = _model_and_optimizer(seed=1)
  nnx.update((model2, opt2), restored)
  np.testing.assert_array_equal(model2.kernel[...], model.kernel[...])
  assert int(opt2.step[...]) == 1


def _saves(ckpt, schedule):
  for step, metric in schedule:
    state = {"w": jnp.full((2, 3), float(step))}
    metrics = None if metric is None else {"recall@10": metric, "loss": 1.0}
    assert ckpt.save(step, state, metrics=metrics)


SCHEDULE = [(10, 0.5), (20, 0.9), (30, 0.3), (40, 0.2), (50, 0.1)]


def _step_dirs(path):
  return sorted(int(p.name) for p in path.iterdir() if p.name.isdigit())


def test_retention_keeps_best_and_latest(tmp_path):
  with Checkpointer(tmp_path, keep_last=2, best_metric="recall@10") as ckpt:
    _saves(ckpt, SCHEDULE)
    ckpt.wait()
    assert ckpt.best_step() == 20
    assert ckpt.latest_step() == 50
    assert ckpt.all_steps() == [20, 40, 50]
  assert _step_dirs(tmp_path) == [20, 40, 50]
  # Reopened: best is found from the metrics on disk.
  with Checkpointer(tmp_path, keep_last=2, best_metric="recall@10") as ckpt:
    assert ckpt.best_step() == 20
    state, _ = ckpt.restore({"w": jax.ShapeDtypeStruct((2, 3), jnp.float32)}, step="best")
  np.testing.assert_array_equal(state["w"], np.full((2, 3), 20.0))


def test_retention_min_mode_and_saves_without_metric(tmp_path):
  # Lower is better; steps 30 and 40 have no metric (or a NaN one) and are never best.
  schedule = [(10, 0.5), (20, 0.9), (30, None), (40, float("nan")), (50, 0.7)]
  with Checkpointer(tmp_path, keep_last=2, best_metric="recall@10", best_mode="min",
                    async_save=False) as ckpt:
    _saves(ckpt, schedule)
    assert ckpt.best_step() == 10
  assert _step_dirs(tmp_path) == [10, 40, 50]


def test_no_best_metric_keeps_latest_only(tmp_path):
  with Checkpointer(tmp_path, keep_last=2) as ckpt:
    _saves(ckpt, SCHEDULE)
    ckpt.wait()
    assert ckpt.best_step() is None
    with pytest.raises(FileNotFoundError, match="best"):
      ckpt.restore({"w": jax.ShapeDtypeStruct((2, 3), jnp.float32)}, step="best")
  assert _step_dirs(tmp_path) == [40, 50]


def test_restore_by_step_and_unknown_step(tmp_path):
  abstract = {"w": jax.ShapeDtypeStruct((2, 3), jnp.float32)}
  with Checkpointer(tmp_path, keep_last=5) as ckpt:
    _saves(ckpt, SCHEDULE[:3])
    state, extra = ckpt.restore(abstract, step=20)
    np.testing.assert_array_equal(state["w"], np.full((2, 3), 20.0))
    assert extra == {}
    with pytest.raises(FileNotFoundError, match=str(tmp_path)):
      ckpt.restore(abstract, step=25)


def test_restore_from_empty_directory(tmp_path):
  with Checkpointer(tmp_path / "run") as ckpt:
    assert ckpt.latest_step() is None
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "run")):
      ckpt.restore({"w": jax.ShapeDtypeStruct((2,), jnp.float32)})


def test_a_step_already_saved_is_skipped(tmp_path):
  with Checkpointer(tmp_path) as ckpt:
    assert ckpt.save(10, {"w": jnp.zeros(2)})
    assert not ckpt.save(10, {"w": jnp.ones(2)})
    assert not ckpt.save(10, {"w": jnp.ones(2)}, force=True)
    state, _ = ckpt.restore({"w": jax.ShapeDtypeStruct((2,), jnp.float32)})
  np.testing.assert_array_equal(state["w"], np.zeros(2))


def _iterator():
  return iter(grain.MapDataset.range(100).shuffle(seed=0).batch(4).to_iter_dataset())


def test_grain_iterator_resumes(tmp_path):
  it = _iterator()
  for _ in range(3):
    next(it)
  state = {"w": jnp.zeros(2)}
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(3, state, data_iterator=it)
    # The position saved is the one at save(), even though the save finishes later.
    expected = [next(it) for _ in range(2)]
  resumed = _iterator()
  with Checkpointer(tmp_path) as ckpt:
    ckpt.restore(_abstract(state), data_iterator=resumed)
  for want in expected:
    np.testing.assert_array_equal(next(resumed), want)


def test_restore_reshards(tmp_path):
  devices = np.array(jax.devices())
  assert devices.size == 8, "tests/conftest.py sets 8 host devices"
  x = jnp.arange(8 * 4, dtype=jnp.float32).reshape(8, 4)
  saved = jax.device_put(x, NamedSharding(Mesh(devices, ("data",)), P("data")))
  with Checkpointer(tmp_path) as ckpt:
    ckpt.save(1, {"x": saved})
  mesh = Mesh(devices.reshape(2, 4), ("data", "model"))
  targets = [NamedSharding(mesh, P("data", "model")), NamedSharding(mesh, P(None, "model")),
             NamedSharding(mesh, P())]
  with Checkpointer(tmp_path) as ckpt:
    for sharding in targets:
      abstract = {"x": jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding)}
      restored, _ = ckpt.restore(abstract)
      assert restored["x"].sharding.is_equivalent_to(sharding, x.ndim)
      np.testing.assert_array_equal(np.asarray(restored["x"]), np.asarray(x))
