import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.sid.table import SIDTable, with_collision_level
from lrm.sid.trie import (build_trie, contains, leaf_of, trie_from_table, valid_next, walk)


def _codes(seed, n, sizes):
  rng = np.random.default_rng(seed)
  return np.stack([rng.integers(0, k, n) for k in sizes], axis=1).astype(np.int32)


def test_small_trie_by_hand():
  codes = np.array([[1, 0], [0, 2], [1, 2], [0, 2], [1, 1]])
  trie = build_trie(codes, (3, 3), item_ids=[10, 11, 12, 13, 14])
  assert trie.num_nodes == (1, 2, 4)
  assert trie.csr_indptr[0].tolist() == [0, 2] and trie.csr_codes[0].tolist() == [0, 1]
  assert trie.csr_indptr[1].tolist() == [0, 1, 4]
  assert trie.csr_codes[1].tolist() == [2, 0, 1, 2]
  assert trie.max_children == (2, 3)
  assert trie.leaf_codes.tolist() == [[0, 2], [1, 0], [1, 1], [1, 2]]
  assert trie.leaf_items(0).tolist() == [11, 13]   # shared code: catalog order
  assert trie.leaf_item.tolist() == [11, 10, 14, 12]
  assert trie.dense_next[0].tolist() == [[0, 1, -1]]
  assert trie.dense_mask(1).tolist() == [[False, False, True], [True, True, True]]
  mask, nxt = valid_next(trie.arrays(), 1, jnp.array([1, 0, -1, 7]))
  assert nxt.tolist() == [[1, 2, 3], [-1, -1, 0], [-1, -1, -1], [-1, -1, -1]]
  assert mask.tolist() == (np.asarray(nxt) >= 0).tolist()
  with pytest.raises(DataError, match="leaf node"):
    trie.leaf_items(4)


@pytest.mark.parametrize("seed,sizes,n", [(0, (8, 8, 8), 300), (1, (4, 16, 64, 5), 1000),
                                          (2, (3, 2), 50)])
def test_trie_holds_exactly_the_codes(seed, sizes, n):
  codes = _codes(seed, n, sizes)
  trie = build_trie(codes, sizes)
  uniq = np.unique(codes, axis=0)
  assert trie.num_leaves == len(uniq)
  np.testing.assert_array_equal(trie.leaf_codes, uniq)
  assert contains(trie, codes).all()
  leaves = leaf_of(trie, codes)
  np.testing.assert_array_equal(trie.leaf_codes[leaves], codes)
  # Every item is listed under its leaf.
  assert sorted(np.concatenate([trie.leaf_items(l) for l in range(trie.num_leaves)])) == \
      list(range(n))
  # Random codes: in the trie iff in the table.
  rand = _codes(seed + 100, 2000, sizes)
  in_table = (rand[:, None, :] == uniq[None, :, :]).all(-1).any(-1)
  np.testing.assert_array_equal(contains(trie, rand), in_table)
  # Out-of-range codes are simply not contained.
  bad = codes[:4].copy()
  bad[0, 0], bad[1, -1], bad[2, 1] = -1, sizes[-1], 10 ** 6
  assert contains(trie, bad).tolist() == [False, False, False, True]
  # Prefix counts per depth.
  for c in range(len(sizes) + 1):
    assert trie.num_nodes[c] == (len(np.unique(codes[:, :c], axis=0)) if c else 1)


def test_dense_levels_chosen_by_budget():
  sizes = (8, 8, 64, 64)
  codes = _codes(4, 2000, sizes)
  trie = build_trie(codes, sizes, dense_budget=8 * 64 * 64)
  # Level 0: 1 x 8, level 1: 8 x 8, level 2: 64 x 64 = 4096 <= budget, level 3: P_3 x 64 > it.
  assert trie.dense_levels == 3
  assert [s["form"] for s in trie.summary()] == ["dense"] * 3 + ["csr"]
  assert build_trie(codes, sizes, dense_budget=0).dense_levels == 0
  assert build_trie(codes, sizes, dense_levels=1).dense_levels == 1
  # CSR memory is O(prefixes), far below the dense table it replaces.
  csr = trie.summary()[3]
  assert csr["bytes"] < trie.num_nodes[3] * 64 * 4 / 10
  with pytest.raises(DataError, match="dense_levels"):
    build_trie(codes, sizes, dense_levels=5)


@pytest.mark.parametrize("seed", [0, 1])
def test_dense_and_csr_paths_agree(seed):
  sizes = (6, 7, 9)
  codes = _codes(seed, 400, sizes)
  trie = build_trie(codes, sizes, dense_levels=3)
  dense, csr = trie.arrays(), trie.csr_arrays()
  step = jax.jit(valid_next, static_argnames=("level", "dense"))
  for c in range(3):
    nodes = np.r_[np.arange(trie.num_nodes[c]), -1, trie.num_nodes[c]].astype(np.int32)
    m1, n1 = step(dense, c, nodes)
    m2, n2 = step(csr, c, nodes)
    np.testing.assert_array_equal(np.asarray(n1), np.asarray(n2))
    np.testing.assert_array_equal(np.asarray(m1), np.asarray(m2))
    np.testing.assert_array_equal(np.asarray(n1)[:-2], trie.dense_next[c])
  # Walking the codes gives the same leaves on host, dense device and CSR device.
  queries = np.concatenate([codes, _codes(seed + 7, 300, sizes)])
  want = leaf_of(trie, queries)
  for arrays in (dense, csr, build_trie(codes, sizes).arrays()):
    got = jax.jit(walk)(arrays, queries)
    np.testing.assert_array_equal(np.asarray(got), want)


def test_from_table_with_collision_level_and_sharded_batch():
  sizes = (4, 4, 4)
  codes = _codes(5, 256, sizes)
  table = with_collision_level(SIDTable(item_ids=np.arange(256) + 1000, codes=codes,
                                        codebook_sizes=sizes))
  trie = trie_from_table(table, dense_levels=2)
  assert trie.num_levels == 4 and trie.num_leaves == 256
  np.testing.assert_array_equal(trie.leaf_item[leaf_of(trie, table.full_codes)], table.item_ids)
  # 8 CPU devices: shard the batch of codes; the trie is replicated.
  devices = jax.devices()
  assert len(devices) == 8
  mesh = jax.sharding.Mesh(np.array(devices), ("data",))
  spec = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("data"))
  batch = jax.device_put(jnp.asarray(table.full_codes), spec)
  got = jax.jit(walk)(trie.arrays(), batch)
  want = leaf_of(trie, table.full_codes)
  np.testing.assert_array_equal(np.asarray(got), want)
  assert sorted(want.tolist()) == list(range(256))
  # Greedy constrained walk: always take the smallest valid code; must end at a leaf.
  node = jnp.zeros(16, jnp.int32)
  arrays = trie.arrays()
  for c in range(trie.num_levels):
    mask, nxt = valid_next(arrays, c, node)
    code = jnp.argmax(mask, axis=1)
    node = jnp.take_along_axis(nxt, code[:, None], axis=1)[:, 0]
  assert (np.asarray(node) >= 0).all()


def test_bad_inputs():
  with pytest.raises(DataError, match="negative"):
    build_trie([[0, -1]], (2, 2))
  with pytest.raises(DataError, match="codebook size"):
    build_trie([[0, 2]], (2, 2))
  with pytest.raises(DataError, match="item_ids"):
    build_trie([[0, 1]], (2, 2), item_ids=[1, 2])
  trie = build_trie([[0, 1]], (2, 2))
  with pytest.raises(DataError, match="shape"):
    contains(trie, [[0, 1, 1]])
  with pytest.raises(ValueError, match="no dense table"):
    valid_next(trie.csr_arrays(), 0, jnp.zeros(1, jnp.int32), dense=True)
