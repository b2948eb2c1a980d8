"""A light training loop for quick comparisons: no checkpoints, no evaluation hook.

Rows are drawn with replacement from a seeded generator, the step is one `nnx.jit` AdamW
update. For resumable runs with validation and checkpoints use `lrm.train.trainer.train`.
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np
import optax
from flax import nnx


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
  from tqdm.auto import tqdm
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
