"""The one gradient update every fit shares.

`lrm/train/trainer.py` runs it inside its jitted state step; the fits of earlier stages in the
data flow (the RQ-VAE and SID-v2 tokenizers, the contrastive encoder), which train their model
in place before `train` exists in the order of stages, run it through `make_train_step`.
"""

from __future__ import annotations

from typing import Any, Callable

from flax import nnx


def apply_update(model: nnx.Module, optimizer: nnx.Optimizer, loss_fn: Callable, *args: Any,
                 wrt: Any = nnx.Param) -> tuple[Any, Any, Any]:
  """Gradients of `loss_fn(model, *args) -> (loss, aux)` with respect to the `wrt` variables,
  applied by `optimizer` in place; returns (loss, aux, grads)."""
  grad_fn = nnx.value_and_grad(loss_fn, argnums=nnx.DiffState(0, wrt), has_aux=True)
  (loss, aux), grads = grad_fn(model, *args)
  optimizer.update(model, grads)
  return loss, aux, grads


def make_train_step(loss_fn: Callable, *, wrt: Any = nnx.Param) -> Callable:
  """`step(model, optimizer, *args) -> (loss, aux)`: `apply_update` under `nnx.jit`. In a loop,
  `nnx.cached_partial(step, model, optimizer)` skips the per-call graph traversal."""

  @nnx.jit
  def step(model, optimizer, *args):
    loss, aux, _ = apply_update(model, optimizer, loss_fn, *args, wrt=wrt)
    return loss, aux

  return step
