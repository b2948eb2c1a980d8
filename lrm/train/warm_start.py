"""Carrying a trained model and its optimizer onto a grown vocabulary (continued pretraining).

When a catalog grows, token tables get rows appended at the end (new SID codes, a deeper
collision level); every other parameter keeps its shape. `graft` copies an old state into a
freshly built one: equal leaves are taken whole, tables that grew keep their old rows and the
new model's freshly initialised rows (zeros for the optimizer's moments, which is where a new
optimizer starts them). Step counters come from the new state, so the learning-rate schedule
warms up again in each round while Adam's moments carry over.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


def graft(old_state, new_state, *, keep_step_counts: bool = False):
  """`new_state` with every leaf replaced by `old_state`'s (rows appended along axis 0 kept).

  Both are trees of the same structure (e.g. `nnx.state((model, optimizer))` of the old and
  the new model). Returns the grafted tree and a summary: leaves copied, leaves grown
  (path -> (old rows, new rows)).

  Raises:
    ValueError: a leaf that shrank or changed in another axis (naming its path).
  """
  old_leaves = dict(jax.tree_util.tree_flatten_with_path(old_state)[0])
  grown = {}

  def one(path, new):
    name = jax.tree_util.keystr(path)
    if path not in old_leaves:
      raise ValueError(f"{name}: not in the old state (the model changed, not only grew)")
    old = old_leaves[path]
    if not hasattr(new, "shape"):
      return old
    if jnp.issubdtype(new.dtype, jnp.integer) and new.ndim == 0 and not keep_step_counts:
      return new
    if old.shape == new.shape:
      return jnp.asarray(old, new.dtype)
    if old.ndim != new.ndim or old.shape[1:] != new.shape[1:] or old.shape[0] > new.shape[0]:
      raise ValueError(f"{name}: shape {old.shape} cannot grow into {new.shape} "
                       "(only rows may be appended)")
    grown[name] = (int(old.shape[0]), int(new.shape[0]))
    return jnp.asarray(new).at[: old.shape[0]].set(jnp.asarray(old, new.dtype))

  out = jax.tree_util.tree_map_with_path(one, new_state)
  return out, {"leaves": len(old_leaves), "grown": grown}


def graft_into(model: nnx.Module, optimizer: nnx.Optimizer, old_model: nnx.Module,
               old_optimizer: nnx.Optimizer) -> dict:
  """Updates (model, optimizer) in place from the old pair; returns graft's summary."""
  keep = nnx.Not(nnx.RngState)
  new_state = nnx.state((model, optimizer), keep)
  old_state = nnx.state((old_model, old_optimizer), keep)
  # Sharded new leaves stay where they are: .at[].set keeps the new array's placement.
  state, summary = graft(old_state, new_state)
  nnx.update((model, optimizer), state)
  return summary


def appended_rows(summary: dict) -> int:
  """How many rows the grafted tables gained in all (for logs)."""
  return int(np.sum([new - old for old, new in summary["grown"].values()]) if summary["grown"]
             else 0)
