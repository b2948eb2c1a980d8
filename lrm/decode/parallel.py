"""Decoders for models that predict every SID code in parallel (lrm/models/rpg.py).

Both take a trained model and left-padded item windows and return each user's top-k distinct
real items, batched in static shapes with the graphdef static and the parameters traced, so one
compile serves every checkpoint:

  rank_exact  every item's score is the sum of its codes' log-probs (one gather per codebook,
              lrm/models/rpg.py `item_scores`), top-k over the catalog on device. Cost grows with
              the catalog: b * n * C adds per batch.
  rank_beam   constrained beam search over the code trie (lrm/decode/beam.py) whose step reads
              the level's log-probs from the per-user [C, K] table, so no model call happens per
              level. Cost is C levels x beam x K candidates per user, whatever the catalog's size;
              each beam ends on a trie leaf, so items are real and distinct. With the same
              per-level scores, its top-k equals the exact top-k whenever the beam keeps the
              winners' prefixes (always, when the beam covers every prefix).

Shape letters: b batch, l window, C codebooks, K codes, n items, B beam, k top-k.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.decode.beam import beam_search, leaves_to_items
from lrm.decode.generative import pad_rows
from lrm.models.rpg import item_scores, last_log_probs
from lrm.sid.trie import SIDTrie


@functools.partial(jax.jit, static_argnames=("graphdef", "k"))
def _exact_batch(graphdef, params, inputs, *, k: int):
  model = nnx.merge(graphdef, params)
  logp = last_log_probs(model, inputs)
  scores = item_scores(logp, model.codes[...][1:])
  return jax.lax.top_k(scores, k)[1]


@functools.lru_cache(maxsize=None)
def _level_step(codebook_sizes: tuple[int, ...]):
  """A beam step that reads level `level` of each user's precomputed [C, K] log-probs (one
  function object per size tuple, so the compiled search is reused)."""
  def step(state, prev_codes, level, context):
    del prev_codes
    beams = state.shape[0] // context.shape[0]
    return jnp.repeat(context[:, level, :codebook_sizes[level]], beams, axis=0), state
  return step


@functools.partial(jax.jit, static_argnames=("graphdef", "beam_size", "k", "codebook_sizes"))
def _beam_batch(graphdef, params, inputs, trie_arrays, *, beam_size: int, k: int,
                codebook_sizes: tuple[int, ...]):
  model = nnx.merge(graphdef, params)
  logp = last_log_probs(model, inputs)                                 # [b, C, K]
  b = inputs.shape[0]
  result = beam_search(_level_step(codebook_sizes), jnp.zeros((b,), jnp.int32), trie_arrays, batch_size=b,
                       beam_size=beam_size, num_levels=len(codebook_sizes),
                       codebook_sizes=codebook_sizes, top_k=k, context=logp)
  return result.leaves


def _batches(model, inputs: np.ndarray, batch_size: int, run) -> tuple[np.ndarray, float]:
  model.eval()
  graphdef, params = nnx.split(model)
  out, start, timed = [], time.perf_counter(), 0
  for lo in range(0, len(inputs), batch_size):
    x = inputs[lo:lo + batch_size]
    rows = np.asarray(run(graphdef, params, jnp.asarray(pad_rows(x, batch_size))))
    out.append(rows[:len(x)])
    if lo == 0 and len(inputs) > batch_size:   # users/s leaves out the first (compiling) batch
      start = time.perf_counter()
    else:
      timed += len(x)
  users_per_s = timed / max(time.perf_counter() - start, 1e-9)
  return (np.concatenate(out) if out else np.zeros((0, 0), np.int64)), users_per_s


def rank_exact(model, inputs: np.ndarray, item_ids: np.ndarray, *, k: int,
               batch_size: int) -> tuple[np.ndarray, dict[str, float]]:
  """Top-k items by exact scores of the whole catalog.

  Shape: inputs int [u, l] (catalog row + 1, left-padded), item_ids [n] -> int64 [u, k].
  """
  k = min(int(k), len(item_ids))
  rows, rate = _batches(model, inputs, batch_size,
                        lambda g, p, x: _exact_batch(g, p, x, k=k))
  return np.asarray(item_ids)[rows].astype(np.int64), {"users_per_s": rate}


def rank_beam(model, inputs: np.ndarray, item_ids: np.ndarray, *, k: int, batch_size: int,
              trie: SIDTrie, beam_size: int) -> tuple[np.ndarray, dict[str, float]]:
  """Top-k items by beam search over the trie of the model's codes; -1 where fewer than k
  items are reachable.

  Shape: inputs int [u, l] -> int64 [u, k].
  """
  del item_ids   # the trie maps leaves to item ids
  sizes = tuple(int(s) for s in trie.codebook_sizes)
  arrays = trie.arrays()
  rows, rate = _batches(model, inputs, batch_size,
                        lambda g, p, x: _beam_batch(g, p, x, arrays, beam_size=int(beam_size),
                                                    k=int(k), codebook_sizes=sizes))
  items = leaves_to_items(trie, rows)
  return items, {"users_per_s": rate, "invalid_rate": float((items < 0).mean())}
