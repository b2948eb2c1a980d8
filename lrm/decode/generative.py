"""Top-K items from a generative retrieval model: encode each user once, constrained beam search.

Works with any model exposing the beam interface of lrm/models/tiger.py:
`init_decode(tokens, mask) -> (state, context)` and
`decode_step(state, prev_codes, level, context) -> (log_probs, state)`.

The model enters the jitted search as (graphdef, params): the graphdef is static, the params
are traced, so one compile serves every batch and every checkpoint of the same architecture.
Users are decoded in fixed-size batches (the last one padded) so shapes stay static.
"""

from __future__ import annotations

import functools
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tqdm import tqdm

from lrm.decode.beam import beam_search, leaves_to_items
from lrm.sid.trie import SIDTrie


class Recommendations(NamedTuple):
  """Decoded items per user, best first.

  Attributes:
    items: int64 [n, K] item ids (-1 where fewer than K valid items were found).
    scores: float32 [n, K] total log-probs of the items' SIDs.
    codes: int32 [n, K, L] the decoded SIDs.
    invalid_rate: share of returned codes that are not a catalog SID (0 when constrained).
    users_per_s: decoding throughput (compile excluded when more than one batch ran).
  """
  items: np.ndarray
  scores: np.ndarray
  codes: np.ndarray
  invalid_rate: float
  users_per_s: float


def pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  """A short last batch padded to `rows` by repeating its last row (static shapes: one
  compile); callers drop the padded outputs. Shape: [m, ...] -> [max(m, rows), ...]."""
  if len(x) >= rows:
    return x
  return np.concatenate([x, np.repeat(x[-1:], rows - len(x), 0)])


@functools.lru_cache(maxsize=16)
def _step_fn(graphdef: Any):
  """One step function object per architecture, so the jitted search is reused."""
  def step(state, prev_codes, level, context):
    params, model_context = context
    model = nnx.merge(graphdef, params)
    return model.decode_step(state, prev_codes, level, model_context)
  return step


@functools.partial(jax.jit, static_argnames=("graphdef", "beam_size", "top_k", "constrained"))
def _decode_batch(graphdef, params, tokens, mask, trie_arrays, *, beam_size: int, top_k: int,
                  constrained: bool):
  model = nnx.merge(graphdef, params)
  state, context = model.init_decode(tokens, mask)
  cfg = model.config
  return beam_search(_step_fn(graphdef), state, trie_arrays, batch_size=tokens.shape[0],
                     beam_size=beam_size, num_levels=cfg.num_levels,
                     codebook_sizes=cfg.codebook_sizes, top_k=top_k, constrained=constrained,
                     context=(params, context))


def recommend(model: nnx.Module, encoder_tokens: np.ndarray, encoder_mask: np.ndarray,
              trie: SIDTrie, *, beam_size: int = 20, top_k: int = 10, batch_size: int = 256,
              constrained: bool = True, trie_arrays: Any = None,
              progress: bool = False) -> Recommendations:
  """The top-K items for every row of `encoder_tokens` (the model is switched to eval mode).

  Shape:
    encoder_tokens: int32 [n, s]
    encoder_mask: bool [n, s]
    returns: Recommendations(items [n, K], scores [n, K], codes [n, K, L], ...)
  """
  model.eval()
  graphdef, params = nnx.split(model)
  arrays = trie.arrays() if trie_arrays is None else trie_arrays
  n = len(encoder_tokens)
  batch_size = max(1, min(batch_size, n))
  items, scores, codes, invalid = [], [], [], 0
  start = time.perf_counter()
  first_done = None
  batches = range(0, n, batch_size)
  if progress:
    batches = tqdm(batches, desc="decode", unit="batch", mininterval=10)
  for lo in batches:
    tok = np.asarray(encoder_tokens[lo:lo + batch_size])
    msk = np.asarray(encoder_mask[lo:lo + batch_size])
    m = len(tok)
    tok, msk = pad_rows(tok, batch_size), pad_rows(msk, batch_size)
    res = _decode_batch(graphdef, params, jnp.asarray(tok), jnp.asarray(msk), arrays,
                        beam_size=beam_size, top_k=top_k, constrained=constrained)
    res = jax.device_get(res)
    if first_done is None:
      first_done = time.perf_counter()
    leaves, valid = np.asarray(res.leaves[:m]), np.asarray(res.valid[:m])
    invalid += int((~valid).sum())
    items.append(np.where(valid, leaves_to_items(trie, leaves), -1))
    scores.append(np.asarray(res.scores[:m]))
    codes.append(np.asarray(res.codes[:m]))
  end = time.perf_counter()
  timed = n - min(batch_size, n) if n > batch_size else n
  span = (end - first_done) if n > batch_size else (end - start)
  items = np.concatenate(items).astype(np.int64)
  return Recommendations(items=items, scores=np.concatenate(scores),
                         codes=np.concatenate(codes), invalid_rate=invalid / max(items.size, 1),
                         users_per_s=timed / max(span, 1e-9))
