"""Batched constrained beam search over Semantic-ID levels (generative retrieval).

Model-agnostic: the model enters as `step_fn(state, prev_codes, level) -> (log_probs,
new_state)`, one decoding step for all beams of all users. The search is one jitted function
(sizes and `step_fn` are static): the levels are unrolled in Python (SIDs have few levels, each
with its own codebook size), every level does one `valid_next` read of the trie for all beams
(STATIC: dense tables for the shallow levels, CSR for the deep tail; no host round trip), masks
invalid continuations to -inf, takes `jax.lax.top_k` over the [b, beam * k] candidates and
reorders the model state by the chosen parents with one gather.

Every full code (with the collision level) is one item, so the distinct leaves the beams end
on are distinct items. Beams that found no valid continuation (fewer valid items than beams)
carry -inf scores and are reported invalid.

Shape letters: b batch (users), B beam, k codebook size of a level, L levels, K top_k.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrm.sid.table import SIDTable
from lrm.sid.trie import SIDTrie, TrieArrays, leaf_of, valid_next, walk

# step_fn(state, prev_codes [b*B] int32, level: static int[, context]) ->
#   (log_probs [b*B, k_level], state)
StepFn = Callable[..., tuple[jax.Array, Any]]

NEG_INF = float("-inf")


class BeamResult(NamedTuple):
  """The top-K decoded SIDs per user, best first.

  Attributes:
    codes: int32 [b, K, L], the decoded full codes.
    scores: float32 [b, K], the total log-prob of each code (sum over levels), descending;
      -inf for beams that found no valid code.
    leaves: int32 [b, K], the trie leaf node of each code (`SIDTrie.leaf_item` maps it to an
      item id), -1 where the code is not a valid SID.
    valid: bool [b, K], whether the code is a full code of the trie (and its score finite).
  """
  codes: jax.Array
  scores: jax.Array
  leaves: jax.Array
  valid: jax.Array


def _expand_state(state: Any, batch_size: int, beam_size: int) -> Any:
  """Leaves with leading dim b are repeated to b * B (each user's row once per beam)."""
  def expand(x):
    x = jnp.asarray(x)
    if x.ndim == 0:
      raise ValueError("every leaf of init_state needs a leading batch dimension")
    if x.shape[0] == batch_size * beam_size:
      return x
    if x.shape[0] == batch_size:
      return jnp.repeat(x, beam_size, axis=0)
    raise ValueError(f"init_state leaves need leading dim b={batch_size} or "
                     f"b*beam={batch_size * beam_size}, got shape {x.shape}")
  return jax.tree_util.tree_map(expand, state)


def beam_search(step_fn: StepFn, init_state: Any, trie_arrays: TrieArrays | None, *,
                batch_size: int, beam_size: int, num_levels: int,
                codebook_sizes: Sequence[int], top_k: int,
                constrained: bool = True, context: Any = None) -> BeamResult:
  """Beam search over `num_levels` SID levels, constrained to the trie's valid codes.

  `step_fn(state, prev_codes, level)` is the model's one-step function, pure in arrays:
  `prev_codes` are the codes chosen at level - 1 (-1 at level 0: nothing decoded yet), `level`
  a static Python int; it returns the log-probs of level `level`'s codes and the new state.
  The state is any pytree whose leaves have leading dim b * B (or b: then repeated per beam);
  after every level it is reordered by the beams' parents with a gather (row u * B + j holds
  user u's beam j). Scores are the sums of the model's log-probs (no renormalisation after
  masking). With `constrained=False` nothing is masked and `valid` / `leaves` come from
  walking the trie (`trie_arrays` may then be None: `valid` says only that the score is
  finite), so callers can report the invalid rate. `step_fn` is a static argument: pass the
  same function object between calls to reuse the compiled search.

  `context` (optional) is per-user data that beams share and that is never reordered (an
  encoder's output, a prompt's keys and values): a pytree with leading dim b, passed as
  `step_fn(state, prev_codes, level, context)`. Keeping it out of `state` saves repeating it
  B times and gathering it at every level.

  Shape:
    init_state: pytree of [b * B, ...] (or [b, ...])
    returns: BeamResult(codes int32 [b, K, L], scores float32 [b, K], leaves int32 [b, K],
      valid bool [b, K])
  """
  return _beam_search(step_fn, init_state, trie_arrays, batch_size=int(batch_size),
                      beam_size=int(beam_size), num_levels=int(num_levels),
                      codebook_sizes=tuple(int(k) for k in codebook_sizes), top_k=int(top_k),
                      constrained=bool(constrained), context=context)


@functools.partial(jax.jit, static_argnames=("step_fn", "batch_size", "beam_size",
                                             "num_levels", "codebook_sizes", "top_k",
                                             "constrained"))
def _beam_search(step_fn: StepFn, init_state: Any, trie_arrays: TrieArrays | None, *,
                 batch_size: int, beam_size: int, num_levels: int,
                 codebook_sizes: tuple[int, ...], top_k: int,
                 constrained: bool, context: Any) -> BeamResult:
  """The jitted search (see `beam_search`)."""
  b, B, L, K = batch_size, beam_size, num_levels, top_k
  sizes = codebook_sizes
  if len(sizes) != L:
    raise ValueError(f"codebook_sizes has {len(sizes)} entries for {L} levels")
  if not 1 <= K <= B:
    raise ValueError(f"top_k must lie in [1, beam_size={B}], got {K}")
  if trie_arrays is not None and tuple(trie_arrays.codebook_sizes) != sizes:
    raise ValueError(f"codebook_sizes {sizes} differ from the trie's "
                     f"{tuple(trie_arrays.codebook_sizes)}")
  if constrained and trie_arrays is None:
    raise ValueError("constrained decoding needs trie_arrays")

  # All beams share the empty prefix, so with a per-user state the first level runs on the b
  # users alone (not b * B copies of them) and the state is repeated per beam after it.
  per_user = B > 1 and all(jnp.ndim(x) > 0 and jnp.shape(x)[0] == b
                           for x in jax.tree_util.tree_leaves(init_state))
  state = init_state if per_user else _expand_state(init_state, b, B)
  # Only beam 0 is alive at the start.
  scores = jnp.full((b, B), NEG_INF, jnp.float32).at[:, 0].set(0.0)
  nodes = jnp.zeros((b, B), jnp.int32)                       # depth-c trie node per beam
  codes = jnp.zeros((b, B, L), jnp.int32)
  prev = jnp.full((b * B,), -1, jnp.int32)
  rows = jnp.arange(b, dtype=jnp.int32)[:, None]             # [b, 1]
  for c in range(L):
    k = sizes[c]
    n = b if per_user and c == 0 else b * B
    if context is None:
      logp, state = step_fn(state, prev[:n], c)
    else:
      logp, state = step_fn(state, prev[:n], c, context)
    logp = jnp.asarray(logp, jnp.float32)
    if logp.shape != (n, k):
      raise ValueError(f"step_fn at level {c} returned log_probs of shape {logp.shape}, "
                       f"expected {(n, k)}")
    if per_user and c == 0:
      # Beam 0's row alone competes (the others are dead), then each beam takes its user's state.
      if constrained:
        mask, root = valid_next(trie_arrays, 0, jnp.zeros((1,), jnp.int32))
        logp = jnp.where(mask, logp, NEG_INF)
      padded = jnp.pad(logp, ((0, 0), (0, max(B - k, 0))), constant_values=NEG_INF)
      scores, code = jax.lax.top_k(padded, B)                 # [b, B], descending
      code = jnp.minimum(code, k - 1).astype(jnp.int32)       # padding: dead beams
      if constrained:
        nodes = jnp.where(scores > NEG_INF, root[0][code], -1)
      codes = codes.at[:, :, 0].set(code)
      state = _expand_state(state, b, B)
      prev = code.reshape(-1)
      continue
    if constrained and c > 0 and c >= trie_arrays.dense_levels:
      # A CSR level: only each node's children compete (STATIC's sparse read), never a
      # [b * B, k] table. Candidates sit in code order within a beam, so ties break as below.
      code_of, child_of, logp = csr_candidates(trie_arrays, c, nodes.reshape(-1), logp)
      m = logp.shape[1]
      cand = (scores[:, :, None] + logp.reshape(b, B, m)).reshape(b, B * m)
      scores, idx = jax.lax.top_k(cand, B)                    # [b, B], descending
      parent, slot = idx // m, idx % m
      code = code_of.reshape(b, B, m)[rows, parent, slot]
      nodes = jnp.where(scores > NEG_INF, child_of.reshape(b, B, m)[rows, parent, slot], -1)
    else:
      if constrained:
        if c == 0:   # every beam is at the root: read its one row and broadcast it
          mask, nxt = valid_next(trie_arrays, 0, jnp.zeros((1,), jnp.int32))
          mask, nxt = (jnp.broadcast_to(x, (b * B, k)) for x in (mask, nxt))
        else:
          mask, nxt = valid_next(trie_arrays, c, nodes.reshape(-1))
        logp = jnp.where(mask, logp, NEG_INF)
      cand = (scores[:, :, None] + logp.reshape(b, B, k)).reshape(b, B * k)
      scores, idx = jax.lax.top_k(cand, B)                    # [b, B], descending
      parent, code = idx // k, (idx % k).astype(jnp.int32)
      if constrained:
        child = nxt.reshape(b, B, k)[rows, parent, code]
        nodes = jnp.where(scores > NEG_INF, child, -1)
    codes = codes[rows, parent].at[:, :, c].set(code)
    flat = (rows * B + parent).reshape(-1)
    state = jax.tree_util.tree_map(lambda x: x[flat], state)
    prev = code.reshape(-1)

  scores, codes, nodes = scores[:, :K], codes[:, :K], nodes[:, :K]
  alive = scores > NEG_INF
  if constrained:
    leaves = nodes
  elif trie_arrays is not None:
    leaves = walk(trie_arrays, codes.reshape(b * K, L)).reshape(b, K)
  else:
    leaves = jnp.full((b, K), -1, jnp.int32)
  valid = alive & (leaves >= 0) if trie_arrays is not None else alive
  leaves = jnp.where(valid, leaves, -1) if trie_arrays is not None else leaves
  return BeamResult(codes=codes, scores=scores, leaves=leaves, valid=valid)


def csr_candidates(arrays: TrieArrays, level: int, node_ids: jax.Array,
                   logp: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
  """Each node's children at a CSR level, padded to the level's most children m.

  Shape:
    node_ids: [n] (-1: a dead beam, no children); logp: [n, k]
    returns: codes int32 [n, m], child nodes int32 [n, m], their log-probs [n, m] (NEG_INF
      on padding)
  """
  indptr = arrays.csr_indptr[level]
  ok = (node_ids >= 0) & (node_ids < arrays.num_nodes[level])
  safe = jnp.where(ok, node_ids, 0)
  start = indptr[safe]
  count = jnp.where(ok, indptr[safe + 1] - start, 0)
  j = jnp.arange(max(arrays.max_children[level], 1), dtype=jnp.int32)
  valid = j[None, :] < count[:, None]
  idx = jnp.where(valid, start[:, None] + j[None, :], 0)
  code = jnp.where(valid, arrays.csr_codes[level][idx], 0)
  child = jnp.where(valid, arrays.csr_child[level][idx], -1)
  return code, child, jnp.where(valid, jnp.take_along_axis(logp, code, axis=1), NEG_INF)


def codes_to_items(table_or_trie: SIDTable | SIDTrie, codes: Any) -> np.ndarray:
  """Item ids of decoded full codes (host, NumPy): int64 [...], -1 for invalid codes.

  With a trie, a leaf shared by several items (no collision level) gives the first in
  catalog order, as `SIDTable.lookup` does.

  Shape:
    codes: [..., L]
    returns: [...]
  """
  q = np.asarray(codes)
  lead = q.shape[:-1]
  flat = q.reshape(-1, q.shape[-1])
  if isinstance(table_or_trie, SIDTable):
    items = table_or_trie.lookup(flat) if len(flat) else np.zeros(0, np.int64)
  elif isinstance(table_or_trie, SIDTrie):
    leaf = leaf_of(table_or_trie, flat)
    items = np.where(leaf >= 0, table_or_trie.leaf_item[np.maximum(leaf, 0)]
                     if table_or_trie.num_leaves else -1, -1)
  else:
    raise TypeError(f"codes_to_items takes an SIDTable or SIDTrie, got "
                    f"{type(table_or_trie).__name__}")
  return np.asarray(items, np.int64).reshape(lead)


def leaves_to_items(trie: SIDTrie, leaves: Any) -> np.ndarray:
  """Item ids of decoded leaf nodes (`BeamResult.leaves`), -1 where the leaf is -1.

  Shape:
    leaves: [...]
    returns: int64 [...]
  """
  leaf = np.asarray(leaves, np.int64)
  ok = (leaf >= 0) & (leaf < trie.num_leaves)
  if not trie.num_leaves:
    return np.full(leaf.shape, -1, np.int64)
  return np.where(ok, trie.leaf_item[np.where(ok, leaf, 0)], -1).astype(np.int64)
