"""A light training loop for quick comparisons: no checkpoints, no evaluation hook.

Rows are drawn with replacement from a seeded generator, the step is one `nnx.jit` AdamW
update. For resumable runs with validation and checkpoints use `lrm.train.trainer.train`.
`train_two_tower` fits `lrm.models.two_tower` with it (the model does not know its trainer).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from lrm.core.errors import ConfigError
from lrm.models import two_tower


def train_step(loss_fn: Callable) -> Callable:
  """One jitted AdamW update: `step(model, optimizer, batch) -> loss`, with
  `loss_fn(model, batch) -> (loss, aux)`."""

  @nnx.jit
  def step(model, optimizer, batch):
    (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model, batch)
    optimizer.update(model, grads)
    return loss

  return step


def fit_sampled(model: nnx.Module, loss_fn: Callable, arrays: Mapping[str, np.ndarray], *,
                num_steps: int, batch_size: int, learning_rate: float, weight_decay: float,
                seed: int, tail: int, desc: str | None = None) -> float:
  """Trains `model` in place on batches of `arrays` rows; returns the mean loss of the last
  `tail` steps. `loss_fn(model, batch) -> (loss, aux)`. With `desc`, a progress line (rate,
  ETA) at most every 30 s."""
  optimizer = nnx.Optimizer(model, optax.adamw(learning_rate, weight_decay=weight_decay),
                            wrt=nnx.Param)
  step = train_step(loss_fn)
  rng = np.random.default_rng(seed)
  n = len(next(iter(arrays.values())))
  losses = []
  for _ in tqdm(range(num_steps), desc=desc, disable=desc is None, mininterval=30):
    rows = rng.integers(0, n, batch_size)
    losses.append(step(model, optimizer, {k: v[rows] for k, v in arrays.items()}))
  return float(np.mean([float(x) for x in losses[-tail:]]))


def train_two_tower(model: two_tower.TwoTower, history: np.ndarray, target: np.ndarray, *,
                    num_steps: int, batch_size: int, learning_rate: float, seed: int,
                    desc: str | None = None) -> float:
  """A plain AdamW loop (batches with distinct targets matter less than speed here); returns
  the mean loss of the last 50 steps (`desc`: show progress under that name)."""
  if len(target) < batch_size:
    raise ConfigError("batch_size", f"{batch_size} > {len(target)} examples")
  log_q = two_tower.log_sampling_probability(target, model.cfg.num_items)
  arrays = {"history": history, "target": target, "log_q": log_q}
  return fit_sampled(model, two_tower.two_tower_loss, arrays,
                     num_steps=num_steps, batch_size=batch_size, learning_rate=learning_rate,
                     weight_decay=0.0, seed=seed, tail=50, desc=desc)
