"""The training loop: learning, resume after interruption, early stopping, best weights."""

import json

import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.train import trainer


class Tiny(nnx.Module):
  """Predicts y = (x + 1) mod 8 from a one-hot-like embedding; dropout exercises the RNG."""

  def __init__(self, rngs: nnx.Rngs):
    self.embed = nnx.Embed(8, 16, rngs=rngs)
    self.drop = nnx.Dropout(0.1, rngs=rngs)
    self.out = nnx.Linear(16, 8, rngs=rngs)

  def __call__(self, x):
    return self.out(self.drop(self.embed(x)))


def loss_fn(model, batch):
  logits = model(batch["x"])
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean()
  return loss, {"loss": loss, "accuracy": jnp.mean(jnp.argmax(logits, -1) == batch["y"])}


def arrays(n=256, seed=0):
  x = np.random.default_rng(seed).integers(0, 8, n).astype(np.int32)
  return {"x": x, "y": (x + 1) % 8}


def config(**kw):
  c = ml_collections.ConfigDict(dict(
      batch_size=16, num_steps=40, learning_rate=0.05, warmup_steps=2, decay="cosine",
      end_fraction=0.0, weight_decay=0.0, b1=0.9, b2=0.98, clip_norm=1.0, eval_every=10,
      log_every=5, checkpoint_every=10, patience=0, best_metric="valid/accuracy",
      best_mode="max", keep_last=2, seed=0))
  c.update(kw)
  return c


def accuracy_eval(model):
  x = jnp.arange(8)
  return {"valid/accuracy": float(jnp.mean(jnp.argmax(model(x), -1) == (x + 1) % 8))}


def make():
  return Tiny(nnx.Rngs(params=0, dropout=1))


def test_learns_and_logs(tmp_path):
  model = make()
  result = trainer.train(model, loss_fn, arrays(), config=config(), workdir=tmp_path,
                         evaluate_fn=accuracy_eval, progress=False)
  assert result.step == 40
  assert result.best_metrics["valid/accuracy"] == 1.0
  model.eval()
  assert accuracy_eval(model)["valid/accuracy"] == 1.0
  lines = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  assert [l["step"] for l in lines if "train/loss" in l] == list(range(5, 41, 5))
  assert [l["step"] for l in lines if "valid/accuracy" in l] == [10, 20, 30, 40]
  losses = [l["train/loss"] for l in lines if "train/loss" in l]
  assert losses[-1] < losses[0] / 2


def test_resume_continues_the_same_run(tmp_path):
  """A run killed at step 30 resumes from its step-20 checkpoint and then repeats, batch for
  batch and dropout mask for dropout mask, the losses of one uninterrupted run."""
  full = trainer.train(make(), loss_fn, arrays(), config=config(), workdir=tmp_path / "a",
                       evaluate_fn=accuracy_eval, progress=False)
  calls = []

  def crash_at_third_eval(model):
    calls.append(1)
    if len(calls) == 3:
      raise KeyboardInterrupt
    return accuracy_eval(model)

  with pytest.raises(KeyboardInterrupt):
    trainer.train(make(), loss_fn, arrays(), config=config(), workdir=tmp_path / "b",
                  evaluate_fn=crash_at_third_eval, progress=False)
  resumed_model = make()
  resumed = trainer.train(resumed_model, loss_fn, arrays(), config=config(),
                          workdir=tmp_path / "b", evaluate_fn=accuracy_eval, progress=False)
  assert resumed.step == full.step == 40
  read = lambda d: [l["train/loss"] for l in map(json.loads,
                                                  (d / "metrics.jsonl").read_text().splitlines())
                    if "train/loss" in l and l["step"] > 30]
  np.testing.assert_allclose(read(tmp_path / "b"), read(tmp_path / "a"), rtol=1e-5)


def test_early_stopping_and_best_weights(tmp_path):
  values = iter([0.5, 0.9, 0.4, 0.3, 0.2, 0.1])

  def evaluate(model):
    return {"valid/accuracy": next(values)}

  model = make()
  result = trainer.train(model, loss_fn, arrays(), config=config(num_steps=100, patience=2),
                         workdir=tmp_path, evaluate_fn=evaluate, progress=False)
  assert result.stopped_early and result.step == 40
  assert result.best_step == 20 and result.best_metrics == {"valid/accuracy": 0.9}


def test_bad_config_names_field(tmp_path):
  with pytest.raises(ConfigError, match="train.batch_size"):
    trainer.train(make(), loss_fn, arrays(8), config=config(), workdir=tmp_path,
                  progress=False)
  with pytest.raises(ConfigError, match="train.best_metric"):
    trainer.train(make(), loss_fn, arrays(), config=config(best_metric="valid/x"),
                  workdir=tmp_path / "c", evaluate_fn=accuracy_eval, progress=False)


def test_nan_loss_stops(tmp_path):
  def nan_loss(model, batch):
    loss, aux = loss_fn(model, batch)
    return loss * jnp.nan, {**aux, "loss": loss * jnp.nan}

  with pytest.raises(trainer.NonFiniteLossError, match="step 5"):
    trainer.train(make(), nan_loss, arrays(), config=config(), workdir=tmp_path, progress=False)


def test_light_mode_writes_nothing_and_keeps_the_best_weights(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  model = make()
  result = trainer.train(model, loss_fn, arrays(), config=config(num_steps=30), workdir=None,
                         evaluate_fn=accuracy_eval, progress=False)
  assert list(tmp_path.iterdir()) == []          # no checkpoints, no metric files
  assert result.best_step is not None and np.isfinite(result.train_loss)
  # The model ends holding the best evaluated weights.
  model.eval()
  assert accuracy_eval(model)["valid/accuracy"] == result.best_metrics["valid/accuracy"]


def test_hooks_run_every_n_steps_and_may_change_the_model():
  model = make()
  seen = []

  def freeze_bias(step, m):
    seen.append(step)
    m.out.bias[...] = jnp.full_like(m.out.bias[...], float(step))
    return {"bias": float(m.out.bias[...][0])}

  result = trainer.train(model, loss_fn, arrays(), config=config(num_steps=25), progress=False,
                         hooks=[trainer.Hook(10, freeze_bias)])
  assert seen == [10, 20, 25]                    # every 10 steps and after the last
  assert [(r["step"], r["bias"]) for r in result.history] == [(10, 10.0), (20, 20.0),
                                                               (25, 25.0)]
  assert all(np.isfinite(r["loss"]) for r in result.history)
  np.testing.assert_allclose(np.asarray(model.out.bias[...]), 25.0)   # the change was kept


def test_batches_and_a_continued_optimizer():
  model = make()
  optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=nnx.Param)
  data = arrays()

  def batches():
    for start in range(0, 10**6, 16):
      rows = np.arange(start, start + 16) % len(data["x"])
      yield {k: v[rows] for k, v in data.items()}

  loop = {"batch_size": 16, "num_steps": 20, "eval_every": 20, "log_every": 20,
          "checkpoint_every": 20}
  first = trainer.train(model, loss_fn, batches=batches(), config=loop, optimizer=optimizer,
                        progress=False)
  assert int(optimizer.step[...]) == 20          # the given optimizer's state moved on
  second = trainer.train(model, loss_fn, batches=batches(), config=loop, optimizer=optimizer,
                         progress=False)
  assert int(optimizer.step[...]) == 40
  assert second.train_loss < first.train_loss
  with pytest.raises(ConfigError, match="either train_arrays or batches"):
    trainer.train(model, loss_fn, data, batches=batches(), config=loop, progress=False)
  with pytest.raises(ConfigError, match="cannot be checkpointed"):
    trainer.train(model, loss_fn, batches=batches(), config=loop, workdir="unused",
                  progress=False)
