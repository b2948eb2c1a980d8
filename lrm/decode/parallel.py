"""Decoders for models that predict every SID code in parallel (lrm/models/rpg.py).

Both take a trained model and left-padded item windows and return each user's top-k distinct
real items, batched in static shapes with the graphdef static and the parameters traced, so one
compile serves every checkpoint:

  rank_exact  every item's score is the sum of its codes' log-probs (one gather per codebook,
              lrm/models/rpg.py `item_scores`), top-k over the catalog on device. Cost grows with
              the catalog: b * n * C adds per batch.
  rank_graph  RPG's graph-constrained decoding: beams move over an item graph (each item's most
              similar items by the cosine of their code embeddings), every step scoring the
              beams' neighbours exactly and keeping the best distinct ones. Per user it scores
              entries + steps x beam x (edges + 1) items, whatever the catalog's size; the
              graph is built once per model (`item_graph`, chunked; an ANN index would replace
              it for catalogs far beyond a million items).
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


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _exact_scores(graphdef, params, inputs):
  model = nnx.merge(graphdef, params)
  return item_scores(last_log_probs(model, inputs), model.codes[...][1:])


@functools.partial(jax.jit, static_argnames=("k",))
def top_k_columns(scores: jax.Array, k: int) -> jax.Array:
  """Column indices of each row's k largest scores. Its own jitted program: inside a larger
  one, XLA on a CPU lowers top_k over 12k columns through a sort, ~10x slower (measured on
  Beauty: 0.95 s against 0.085 s per batch of 256, scores included).

  Shape: scores [b, n] -> int32 [b, k].
  """
  return jax.lax.top_k(scores, k)[1]


def _exact_batch(graphdef, params, inputs, *, k: int):
  return top_k_columns(_exact_scores(graphdef, params, inputs), k)


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


def item_vectors(model) -> jax.Array:
  """Each item's normalised code embeddings side by side, scaled so that a dot product is the
  mean cosine over codebooks (RPG's item-item similarity). Shape: -> [n, C * d]."""
  table = model.code_embed[...]
  table = table * jax.lax.rsqrt(jnp.sum(table * table, -1, keepdims=True) + 1e-12)
  codes = model.codes[...][1:]
  C = codes.shape[1]
  vectors = table[jnp.arange(C), codes]                                # [n, C, d]
  return vectors.reshape(codes.shape[0], -1) / np.sqrt(C)


@jax.jit
def _similarities(block, vectors, rows):
  sims = block @ vectors.T                                             # [r, n]
  return sims.at[jnp.arange(block.shape[0]), rows].set(-jnp.inf)      # never its own neighbour


def item_graph(model, *, num_edges: int, chunk: int = 1024) -> np.ndarray:
  """Each item's `num_edges` most similar other items (catalog rows), in row chunks.

  Shape: -> int32 [n, num_edges].
  """
  vectors = item_vectors(model)
  n = vectors.shape[0]
  edges = min(int(num_edges), n - 1)
  out = []
  for lo in range(0, n, chunk):
    rows = jnp.arange(lo, min(lo + chunk, n))
    block = vectors[lo:lo + chunk]
    out.append(np.asarray(top_k_columns(_similarities(block, vectors, rows), edges)))
  return np.concatenate(out).astype(np.int32)


def _gather_scores(logp: jax.Array, codes: jax.Array, items: jax.Array) -> jax.Array:
  """Exact scores of some items per user. Shape: logp [b, C, K], items [b, m] -> [b, m]."""
  item_codes = jnp.swapaxes(codes[items], 1, 2)                        # [b, C, m]
  return jnp.take_along_axis(logp, item_codes, axis=2).sum(axis=1)


def _distinct(items: jax.Array, scores: jax.Array) -> jax.Array:
  """`scores` with every repeat of an item in its row set to -inf (one copy kept)."""
  order = jnp.argsort(items, axis=1)
  sorted_items = jnp.take_along_axis(items, order, axis=1)
  repeat = jnp.concatenate([jnp.zeros_like(sorted_items[:, :1], bool),
                            sorted_items[:, 1:] == sorted_items[:, :-1]], axis=1)
  rows = jnp.arange(items.shape[0])[:, None]
  repeat = jnp.zeros_like(repeat).at[rows, order].set(repeat)
  return jnp.where(repeat, -jnp.inf, scores)


@functools.partial(jax.jit, static_argnames=("graphdef", "beam_size", "steps", "k"))
def _graph_batch(graphdef, params, inputs, graph, entries, *, beam_size: int, steps: int,
                 k: int):
  model = nnx.merge(graphdef, params)
  logp = last_log_probs(model, inputs)                                 # [b, C, K]
  codes = model.codes[...][1:]
  b = inputs.shape[0]
  start = jnp.broadcast_to(entries[None], (b, entries.shape[0]))
  scores, top = jax.lax.top_k(_gather_scores(logp, codes, start), beam_size)
  beams = jnp.take_along_axis(start, top, axis=1)                      # [b, B]
  for _ in range(steps):
    cand = jnp.concatenate([beams, graph[beams].reshape(b, -1)], axis=1)
    cand_scores = _distinct(cand, _gather_scores(logp, codes, cand))
    scores, top = jax.lax.top_k(cand_scores, beam_size)
    beams = jnp.take_along_axis(cand, top, axis=1)
  return beams[:, :k]


def rank_graph(model, inputs: np.ndarray, item_ids: np.ndarray, *, k: int, batch_size: int,
               graph: np.ndarray, entries: np.ndarray, beam_size: int,
               steps: int) -> tuple[np.ndarray, dict[str, float]]:
  """Top-k items by graph-constrained decoding (RPG), started from the best `beam_size` of
  `entries` (catalog rows, e.g. the most popular items).

  Shape: inputs int [u, l], graph int [n, E], entries int [P >= beam_size] -> int64 [u, k].
  """
  if not k <= beam_size <= len(entries):
    raise ValueError(f"need top_k {k} <= beam_size {beam_size} <= entries {len(entries)}")
  graph, entries = jnp.asarray(graph), jnp.asarray(entries, jnp.int32)
  rows, rate = _batches(model, inputs, batch_size,
                        lambda g, p, x: _graph_batch(g, p, x, graph, entries,
                                                     beam_size=int(beam_size),
                                                     steps=int(steps), k=int(k)))
  return np.asarray(item_ids)[rows].astype(np.int64), {"users_per_s": rate}
