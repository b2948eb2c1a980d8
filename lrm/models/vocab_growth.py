"""Vocabulary growth for continued pretraining: a bigger embedding (and head) for new SID tokens,
keeping everything learned so far, optimizer moments included.

When the catalog grows, the SID vocabulary may grow too (bigger codebooks, a new level). The
continued model must start exactly where the old one stopped: every kept token's embedding and
head row is copied bit for bit (possibly to a new id: `old_to_new`), every other parameter is
copied, and the AdamW state is carried over (mu / nu rows of kept tokens moved with them, zeros
for new rows, the step count kept), so the next update is the one the old run would have made.

A new SID token starts from its prefix siblings: the mean of the kept rows of the same level
under the same parent prefix (they are the codes it is most likely to mean something like),
else the mean of its level's kept rows, else of all kept rows; plus small noise (scaled by the
kept rows' per-dimension spread) so that new tokens are distinguishable. A token id is a
(level, code) pair, shared by every prefix that uses the code: the caller names one parent per
token (e.g. the prefix of the first item that uses it), as an integer key.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import numpy as np
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.lm import LM, lm_from_params
from lrm.parallel.rules import sharding_context

# Parameters with a vocabulary axis, as paths in `nnx.to_pure_dict(nnx.state(model))`, and
# that axis.
VOCAB_PARAMS = {("embed", "embedding"): 0, ("lm_head",): 1}


def sid_levels(vocab_size: int, sid_start: int, codebook_sizes: Sequence[int]) -> np.ndarray:
  """Each token's SID level, -1 for text / special / padding tokens. Shape: int32 [v]."""
  levels = np.full(vocab_size, -1, np.int32)
  start = sid_start
  for c, k in enumerate(codebook_sizes):
    levels[start:start + k] = c
    start += k
  return levels


def _check_mapping(old_to_new: np.ndarray, old_rows: int, new_rows: int) -> np.ndarray:
  old_to_new = np.asarray(old_to_new, np.int64)
  if old_to_new.shape != (old_rows,):
    raise ConfigError("old_to_new", f"needs one entry per old token ({old_rows}), got shape "
                      f"{old_to_new.shape}")
  kept = old_to_new[old_to_new >= 0]
  if (old_to_new < -1).any() or (kept >= new_rows).any():
    raise ConfigError("old_to_new", f"entries must be -1 (dropped) or in [0, {new_rows})")
  if len(np.unique(kept)) != len(kept):
    raise ConfigError("old_to_new", "two old tokens map to the same new id")
  return old_to_new


def new_row_bases(rows: np.ndarray, is_kept: np.ndarray, levels: np.ndarray,
                  parents: np.ndarray) -> np.ndarray:
  """The starting point of every new row (before noise): the mean of its kept prefix siblings
  (same level, same parent key >= 0), else of its level's kept rows, else of all kept rows.

  Shape: rows [v, d] (kept rows in place), is_kept bool [v], levels int [v] (-1: not a SID
    token), parents int [v] (-1: unknown) -> [v, d] (kept rows unchanged).
  """
  out = rows.astype(np.float64)
  fresh = np.flatnonzero(~is_kept)
  out[fresh] = rows[is_kept].mean(axis=0)
  for level in np.unique(levels[fresh][levels[fresh] >= 0]):
    same_level = is_kept & (levels == level)
    if same_level.any():
      out[fresh[levels[fresh] == level]] = rows[same_level].mean(axis=0)
  # Sibling means per (level, parent) key of the kept SID rows, in one pass.
  donors = np.flatnonzero(is_kept & (levels >= 0) & (parents >= 0))
  takers = fresh[(levels[fresh] >= 0) & (parents[fresh] >= 0)]
  if len(donors) and len(takers):
    keys, inverse = np.unique(np.stack([levels[donors], parents[donors]], 1), axis=0,
                              return_inverse=True)
    inverse = inverse.reshape(-1)
    sums = np.zeros((len(keys), rows.shape[1]))
    np.add.at(sums, inverse, rows[donors])
    means = sums / np.bincount(inverse, minlength=len(keys))[:, None]
    lookup = {tuple(k): i for i, k in enumerate(keys.tolist())}
    for t in takers:
      i = lookup.get((int(levels[t]), int(parents[t])))
      if i is not None:
        out[t] = means[i]
  return out


def grow_rows(old: np.ndarray, old_to_new: np.ndarray, new_rows: int, levels: np.ndarray,
              parents: np.ndarray, *, noise_scale: float, rng: np.random.Generator
              ) -> np.ndarray:
  """A vocabulary table [old_rows, d] grown to [new_rows, d] (see the module docstring)."""
  old = np.asarray(old, np.float32)
  kept_old = np.flatnonzero(old_to_new >= 0)
  is_kept = np.zeros(new_rows, bool)
  is_kept[old_to_new[kept_old]] = True
  rows = np.zeros((new_rows, old.shape[1]), np.float32)
  rows[old_to_new[kept_old]] = old[kept_old]
  base = new_row_bases(rows, is_kept, levels, parents)
  spread = rows[is_kept].std(axis=0)
  noise = rng.standard_normal(base.shape) * spread * noise_scale
  out = np.where(is_kept[:, None], rows, (base + noise).astype(np.float32))
  out[is_kept] = rows[is_kept]                           # bit-exact copies of kept rows
  return out


def _key_names(path) -> tuple:
  return tuple(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))) for k in path)


def _vocab_axis(names: tuple) -> int | None:
  """The vocabulary axis of a parameter or optimizer-state leaf (its path ends with the
  parameter's path, then `value`), else None."""
  names = names[:-1] if names and names[-1] == "value" else names
  for suffix, axis in VOCAB_PARAMS.items():
    if names[-len(suffix):] == suffix:
      return axis
  return None


def _remap_moment(old: np.ndarray, axis: int, old_to_new: np.ndarray,
                  new_rows: int) -> np.ndarray:
  """Optimizer moments of kept rows moved to their new ids, zeros for new rows."""
  old = np.moveaxis(np.asarray(old), axis, 0)
  out = np.zeros((new_rows,) + old.shape[1:], old.dtype)
  kept = np.flatnonzero(old_to_new >= 0)
  out[old_to_new[kept]] = old[kept]
  return np.moveaxis(out, 0, axis)


def grow_vocab(model: LM, optimizer: nnx.Optimizer | None, *, old_to_new: Any,
               new_vocab_size: int, sid_start: int, codebook_sizes: Sequence[int],
               parents: Any | None = None, noise_scale: float = 0.1, seed: int = 0,
               mesh: jax.sharding.Mesh | None = None) -> tuple[LM, nnx.Optimizer | None]:
  """The model (and its optimizer) over a bigger vocabulary.

  Args:
    model: the trained LM.
    optimizer: its `nnx.Optimizer` (lrm/train/optimizer.py's AdamW chain, any optax state
      whose per-parameter leaves mirror the parameters), or None.
    old_to_new: int [old vocab_size], each old token's id in the new vocabulary (-1: dropped,
      e.g. old padding rows).
    new_vocab_size, sid_start, codebook_sizes: the new vocabulary (SID tokens contiguous,
      level by level, from sid_start).
    parents: int [new_vocab_size], each token's parent-prefix key (-1: none / unknown); new
      SID rows start from the kept rows of the same level and the same key.
    noise_scale: noise added to new rows, in units of the kept rows' per-dimension std.
    mesh: place the new parameters and optimizer state on it (logical axis rules).

  Returns: (new model, new optimizer or None). The old ones are left as they were.
  """
  cfg = model.config
  new_cfg = dataclasses.replace(cfg, vocab_size=int(new_vocab_size), sid_start=int(sid_start),
                                codebook_sizes=tuple(int(k) for k in codebook_sizes))
  old_to_new = _check_mapping(old_to_new, cfg.vocab_size, new_cfg.vocab_size)
  parents = np.full(new_cfg.vocab_size, -1, np.int64) if parents is None \
      else np.asarray(parents, np.int64)
  if parents.shape != (new_cfg.vocab_size,):
    raise ConfigError("parents", f"needs one key per new token ({new_cfg.vocab_size}), got "
                      f"shape {parents.shape}")
  if not noise_scale >= 0:
    raise ConfigError("noise_scale", f"must be >= 0, got {noise_scale}")
  levels = sid_levels(new_cfg.vocab_size, new_cfg.sid_start, new_cfg.codebook_sizes)
  rng = np.random.default_rng(seed)

  def grow_param(path, value):
    value = np.asarray(jax.device_get(value))
    axis = _vocab_axis(_key_names(path))
    if axis is None:
      return value
    table = np.moveaxis(value, axis, 0)
    grown = grow_rows(table, old_to_new, new_cfg.vocab_size, levels, parents,
                      noise_scale=noise_scale, rng=rng)
    return np.moveaxis(grown, 0, axis)

  params = jax.tree_util.tree_map_with_path(grow_param, nnx.to_pure_dict(nnx.state(model)))
  new_model = lm_from_params(new_cfg, params, mesh)
  if optimizer is None:
    return new_model, None

  with sharding_context(mesh):
    new_optimizer = nnx.Optimizer(new_model, optimizer.tx, wrt=nnx.Param)
  old_state, new_state = nnx.state(optimizer), nnx.state(new_optimizer)

  def carry(path, new_leaf, old_leaf):
    names = _key_names(path)
    old_value = np.asarray(jax.device_get(old_leaf))
    axis = _vocab_axis(names)
    if axis is not None and old_value.ndim == np.ndim(new_leaf):
      value = _remap_moment(old_value, axis, old_to_new, new_cfg.vocab_size)
    else:
      value = old_value
    if value.shape != np.shape(new_leaf):
      raise ValueError(f"optimizer state {'.'.join(map(str, names))} has shape {value.shape}, "
                       f"the grown model needs {np.shape(new_leaf)}")
    sharding = getattr(new_leaf, "sharding", None)
    return jax.device_put(value.astype(new_leaf.dtype), sharding)

  carried = jax.tree_util.tree_map_with_path(carry, new_state, old_state)
  nnx.update(new_optimizer, carried)
  return new_model, new_optimizer
