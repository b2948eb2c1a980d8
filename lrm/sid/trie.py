"""The prefix trie of valid Semantic IDs, flattened for constrained decoding on device.

STATIC's design (YouTube, arXiv 2602.22647): the trie is built offline in NumPy; the first
levels, where prefixes are few, become dense transition tables `next_node[c]` [P_c, k_c]
(-1 = invalid continuation); the deep, sparse tail is a CSR matrix per level (`indptr`
[P_c + 1], the sorted child `codes` and their `child` node ids), so memory grows with the
number of prefixes, not P_c x k_c. `valid_next` reads either form for a whole batch of beams
in one vectorised, jittable step with static shapes: no host round trip.

Nodes: depth-c nodes are the distinct code prefixes of length c, numbered 0..P_c-1 in
lexicographic order (depth 0 holds the root alone). Level c is the transition from depth c
to depth c + 1 by the level-c code. Depth-L nodes are leaves: the distinct full codes.

Shape letters: n items, c level (L levels), k codebook size, b batch (beams), P_c prefixes.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lrm.core.errors import DataError
from lrm.sid.table import SIDTable, check_codes, lex_order

# Levels whose dense table holds at most this many entries are dense (2^24 int32 = 64 MiB).
DEFAULT_DENSE_BUDGET = 1 << 24
# Levels where no node has more than 1 / NARROW of the codes as children stay CSR.
NARROW = 4


@dataclasses.dataclass(frozen=True, eq=False)
class SIDTrie:
  """The host (NumPy) form of the trie; `arrays()` gives the device form.

  Attributes:
    codebook_sizes: k_c per level (length L).
    num_nodes: P_0 = 1, P_1, ..., P_L (nodes per depth).
    dense_levels: levels 0..dense_levels-1 have dense tables.
    dense_next: per dense level, int32 [P_c, k_c]: child node id, -1 where invalid.
    csr_indptr: per level (all levels), int32 [P_c + 1]: children of node p at depth c are
      entries indptr[p]:indptr[p+1] of `csr_codes` / `csr_child`.
    csr_codes: per level, int32 [P_{c+1}]: the child codes, sorted within each node.
    csr_child: per level, int32 [P_{c+1}]: the child node ids at depth c + 1.
    max_children: per level, the most children of one depth-c node (the CSR pad width).
    leaf_codes: int32 [P_L, L], the full code of each leaf.
    leaf_indptr: int64 [P_L + 1] and leaf_item_ids int64 [n]: the items of leaf l are
      leaf_item_ids[leaf_indptr[l]:leaf_indptr[l+1]] (catalog order within a leaf).
  """
  codebook_sizes: tuple[int, ...]
  num_nodes: tuple[int, ...]
  dense_levels: int
  dense_next: tuple[np.ndarray, ...]
  csr_indptr: tuple[np.ndarray, ...]
  csr_codes: tuple[np.ndarray, ...]
  csr_child: tuple[np.ndarray, ...]
  max_children: tuple[int, ...]
  leaf_codes: np.ndarray
  leaf_indptr: np.ndarray
  leaf_item_ids: np.ndarray

  @property
  def num_levels(self) -> int:
    return len(self.codebook_sizes)

  @property
  def num_leaves(self) -> int:
    return self.num_nodes[-1]

  def dense_mask(self, level: int) -> np.ndarray:
    """bool [P_c, k_c]: valid continuations of each depth-c node (dense levels only)."""
    return self.dense_next[level] >= 0

  @property
  def leaf_item(self) -> np.ndarray:
    """int64 [P_L]: the first item (catalog order) of each leaf."""
    return self.leaf_item_ids[self.leaf_indptr[:-1]]

  def leaf_items(self, node: int) -> np.ndarray:
    """int64 [g]: the item ids whose full code is leaf `node` (several without a collision
    level)."""
    if not 0 <= node < self.num_leaves:
      raise DataError(f"leaf node must lie in [0, {self.num_leaves}), got {node}")
    return self.leaf_item_ids[self.leaf_indptr[node]:self.leaf_indptr[node + 1]]

  def nbytes(self) -> int:
    arrays = (*self.dense_next, *self.csr_indptr, *self.csr_codes, *self.csr_child)
    return int(sum(a.nbytes for a in arrays))

  def summary(self) -> list[dict[str, Any]]:
    """Per level: prefixes, form (dense or csr), max children and bytes on device."""
    out = []
    for c in range(self.num_levels):
      dense = c < self.dense_levels
      size = self.dense_next[c].nbytes if dense else (
          self.csr_indptr[c].nbytes + self.csr_codes[c].nbytes + self.csr_child[c].nbytes)
      out.append({"level": c, "prefixes": self.num_nodes[c], "children": self.num_nodes[c + 1],
                  "codebook": self.codebook_sizes[c], "form": "dense" if dense else "csr",
                  "max_children": self.max_children[c], "bytes": int(size)})
    return out

  def arrays(self) -> "TrieArrays":
    """The device form (a pytree of jnp arrays with static sizes), for `valid_next`."""
    pad = lambda a: jnp.asarray(a if len(a) else np.zeros(1, np.int32), jnp.int32)
    # Dense levels need no CSR on device; an empty placeholder keeps the tuples aligned.
    keep = lambda c: c >= self.dense_levels
    return TrieArrays(
        dense_next=tuple(jnp.asarray(t, jnp.int32) for t in self.dense_next),
        csr_indptr=tuple(pad(self.csr_indptr[c]) if keep(c) else jnp.zeros(1, jnp.int32)
                         for c in range(self.num_levels)),
        csr_codes=tuple(pad(self.csr_codes[c]) if keep(c) else jnp.zeros(1, jnp.int32)
                        for c in range(self.num_levels)),
        csr_child=tuple(pad(self.csr_child[c]) if keep(c) else jnp.zeros(1, jnp.int32)
                        for c in range(self.num_levels)),
        codebook_sizes=self.codebook_sizes, num_nodes=self.num_nodes,
        dense_levels=self.dense_levels, max_children=self.max_children)

  def csr_arrays(self) -> "TrieArrays":
    """The device form with every level as CSR (no dense tables); for tests and budgets."""
    return dataclasses.replace(self, dense_levels=0, dense_next=()).arrays()


@dataclasses.dataclass(frozen=True)
class TrieArrays:
  """Device form of a trie: a pytree whose array leaves are jnp int32, sizes static."""
  dense_next: tuple[jax.Array, ...]
  csr_indptr: tuple[jax.Array, ...]
  csr_codes: tuple[jax.Array, ...]
  csr_child: tuple[jax.Array, ...]
  codebook_sizes: tuple[int, ...]
  num_nodes: tuple[int, ...]
  dense_levels: int
  max_children: tuple[int, ...]


jax.tree_util.register_dataclass(
    TrieArrays, data_fields=["dense_next", "csr_indptr", "csr_codes", "csr_child"],
    meta_fields=["codebook_sizes", "num_nodes", "dense_levels", "max_children"])


def build_trie(codes: Any, codebook_sizes: Sequence[int], *, item_ids: Any = None,
               dense_budget: int = DEFAULT_DENSE_BUDGET,
               dense_levels: int | None = None) -> SIDTrie:
  """Builds the trie of the valid codes (NumPy, offline).

  Levels 0, 1, ... are dense while P_c * k_c <= `dense_budget` and the level is not narrow
  (some node has more than k_c / NARROW children), stopping at the first level that fails,
  unless `dense_levels` fixes the count. Every level also gets its CSR form (O(P)
  memory), which is what the device reads beyond the dense levels.

  Shape:
    codes: [n, L]
    item_ids: [n] (default: the row numbers)
  """
  codes = check_codes(codes, codebook_sizes).astype(np.int64)
  sizes = tuple(int(k) for k in codebook_sizes)
  n, L = codes.shape
  if L == 0:
    raise DataError("codes must have at least one level")
  if item_ids is None:
    ids = np.arange(n, dtype=np.int64)
  else:
    ids = np.asarray(item_ids)
    if ids.shape != (n,) or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
      raise DataError(f"item_ids must be integers of shape ({n},), got {ids.shape}")
    ids = ids.astype(np.int64)
  order = lex_order(codes)                 # lexicographic, stable: catalog order within a code
  sc = codes[order]
  change = np.zeros((n, L), bool)          # row i starts a new prefix of length c + 1
  if n:
    change[0] = True
    change[1:] = np.logical_or.accumulate(sc[1:] != sc[:-1], axis=1)
  num_nodes = [1]
  node_prev = np.zeros(n, np.int64)        # depth-c node of each sorted row
  csr_indptr, csr_codes, csr_child, max_children = [], [], [], []
  for c in range(L):
    starts = np.flatnonzero(change[:, c])  # first row of each depth-(c+1) node
    node_next = np.cumsum(change[:, c]) - 1
    parent = node_prev[starts]
    counts = np.bincount(parent, minlength=num_nodes[c])
    indptr = np.zeros(num_nodes[c] + 1, np.int64)
    np.cumsum(counts, out=indptr[1:])
    csr_indptr.append(indptr.astype(np.int32))
    csr_codes.append(sc[starts, c].astype(np.int32))
    csr_child.append(np.arange(len(starts), dtype=np.int32))
    max_children.append(int(counts.max()) if len(counts) else 0)
    num_nodes.append(len(starts))
    node_prev = node_next
  if dense_levels is None:
    dense_levels = 0
    # A narrow level (at most a quarter of its codes under any node) stays CSR: decoding
    # reads only the children there (lrm.decode.beam), cheaper than a dense row of k.
    while (dense_levels < L and num_nodes[dense_levels] * sizes[dense_levels] <= dense_budget
           and NARROW * max_children[dense_levels] > sizes[dense_levels]):
      dense_levels += 1
  elif not 0 <= dense_levels <= L:
    raise DataError(f"dense_levels must lie in [0, {L}], got {dense_levels}")
  dense_next = []
  for c in range(dense_levels):
    table = np.full((num_nodes[c], sizes[c]), -1, np.int32)
    parent = np.repeat(np.arange(num_nodes[c]), np.diff(csr_indptr[c]))
    table[parent, csr_codes[c]] = csr_child[c]
    dense_next.append(table)
  leaf_rows = np.flatnonzero(change[:, L - 1]) if n else np.zeros(0, np.int64)
  leaf_indptr = np.r_[leaf_rows, n].astype(np.int64)
  return SIDTrie(codebook_sizes=sizes, num_nodes=tuple(num_nodes), dense_levels=dense_levels,
                 dense_next=tuple(dense_next), csr_indptr=tuple(csr_indptr),
                 csr_codes=tuple(csr_codes), csr_child=tuple(csr_child),
                 max_children=tuple(max_children),
                 leaf_codes=sc[leaf_rows].astype(np.int32), leaf_indptr=leaf_indptr,
                 leaf_item_ids=ids[order])


def trie_from_table(table: SIDTable, **kwargs: Any) -> SIDTrie:
  """The trie of a table's full codes (with its collision level when switched on)."""
  return build_trie(table.full_codes, table.full_codebook_sizes, item_ids=table.item_ids,
                    **kwargs)


def valid_next(arrays: TrieArrays, level: int, node_ids: jax.Array, *,
               dense: bool | None = None) -> tuple[jax.Array, jax.Array]:
  """Valid continuations of a batch of depth-`level` nodes, in one vectorised read.

  Dense levels gather rows of `next_node[level]`; CSR levels gather each node's children into
  a padded [b, max_children] block and scatter them into [b, k]. Node ids outside
  [0, P_level) (e.g. -1 for dead beams) have no valid continuation. `level` is static;
  `dense=False` forces the CSR path (when the CSR arrays are on device, see
  `SIDTrie.csr_arrays`). Jittable.

  Shape:
    node_ids: [b]
    returns: mask bool [b, k], next_node int32 [b, k] (-1 where invalid)
  """
  k = arrays.codebook_sizes[level]
  node = jnp.asarray(node_ids, jnp.int32)
  b = node.shape[0]
  ok = (node >= 0) & (node < arrays.num_nodes[level])
  safe = jnp.where(ok, node, 0)
  use_dense = level < arrays.dense_levels if dense is None else dense
  if use_dense:
    if level >= arrays.dense_levels:
      raise ValueError(f"level {level} has no dense table (dense_levels="
                       f"{arrays.dense_levels})")
    nxt = arrays.dense_next[level][safe]
    nxt = jnp.where(ok[:, None], nxt, -1)
  else:
    if level < arrays.dense_levels:
      raise ValueError(f"level {level} is dense on device; use SIDTrie.csr_arrays() to force "
                       "the CSR path")
    indptr = arrays.csr_indptr[level]
    start = indptr[safe]
    count = jnp.where(ok, indptr[safe + 1] - start, 0)
    width = max(arrays.max_children[level], 1)
    j = jnp.arange(width, dtype=jnp.int32)
    valid = j[None, :] < count[:, None]
    idx = jnp.where(valid, start[:, None] + j[None, :], 0)
    col = jnp.where(valid, arrays.csr_codes[level][idx], k)   # k: out of range, dropped
    child = arrays.csr_child[level][idx]
    rows = jnp.broadcast_to(jnp.arange(b, dtype=jnp.int32)[:, None], col.shape)
    nxt = jnp.full((b, k), -1, jnp.int32).at[rows, col].set(child, mode="drop")
  return nxt >= 0, nxt


def walk(arrays: TrieArrays, codes: jax.Array, *, dense: bool | None = None) -> jax.Array:
  """Leaf node of each full code, -1 where the code is not in the trie. Jittable.

  Shape:
    codes: [m, L]
    returns: int32 [m]
  """
  codes = jnp.asarray(codes, jnp.int32)
  node = jnp.zeros(codes.shape[0], jnp.int32)
  for c in range(len(arrays.codebook_sizes)):
    _, nxt = valid_next(arrays, c, node, dense=None if dense is None else
                        (dense and c < arrays.dense_levels))
    code = codes[:, c]
    inside = (code >= 0) & (code < arrays.codebook_sizes[c])
    step = jnp.take_along_axis(nxt, jnp.where(inside, code, 0)[:, None], axis=1)[:, 0]
    node = jnp.where(inside, step, -1)
  return node


def leaf_of(trie: SIDTrie, codes: Any) -> np.ndarray:
  """Host version of `walk`: leaf node of each code, -1 where it is not in the trie.

  Shape:
    codes: [m, L]
    returns: int64 [m]
  """
  q = np.asarray(codes)
  if q.ndim != 2 or q.shape[1] != trie.num_levels:
    raise DataError(f"codes must have shape [m, {trie.num_levels}], got {q.shape}")
  if q.size and not np.issubdtype(q.dtype, np.integer):
    raise DataError(f"codes must be integers, got dtype {q.dtype}")
  q = q.astype(np.int64)
  node = np.zeros(len(q), np.int64)
  for c in range(trie.num_levels):
    k = trie.codebook_sizes[c]
    indptr = trie.csr_indptr[c].astype(np.int64)
    parent = np.repeat(np.arange(trie.num_nodes[c]), np.diff(indptr))
    keys = parent * k + trie.csr_codes[c]              # sorted: by parent, then code
    code = q[:, c]
    alive = (node >= 0) & (code >= 0) & (code < k)
    want = np.where(alive, node * k + code, -1)
    pos = np.clip(np.searchsorted(keys, want), 0, max(len(keys) - 1, 0))
    hit = alive & (len(keys) > 0) & (keys[pos] == want) if len(keys) else np.zeros_like(alive)
    node = np.where(hit, trie.csr_child[c][pos] if len(keys) else -1, -1)
  return node


def contains(trie: SIDTrie, codes: Any) -> np.ndarray:
  """bool [m]: whether each code is a full code of the trie (host, NumPy).

  Shape:
    codes: [m, L]
  """
  return leaf_of(trie, codes) >= 0
