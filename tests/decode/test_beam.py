"""Constrained beam search against brute force over a random table "model"."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrm.decode import BeamResult, beam_search, codes_to_items, leaves_to_items
from lrm.sid.table import SIDTable, with_collision_level
from lrm.sid.trie import build_trie, contains, trie_from_table


class TableModel:
  """A random "model": fixed log-probs per (user, prefix, level), looked up from a table.

  The state is (user [b*B], prefix number [b*B]) with the prefix in mixed radix, so it only
  stays right if beam search reorders the state by the beams' parents.
  """

  def __init__(self, seed, num_users, sizes, scale=1.0):
    rng = np.random.default_rng(seed)
    self.sizes = tuple(sizes)
    self.rows = [int(np.prod(sizes[:c])) for c in range(len(sizes))]
    self.logp = []
    for c, k in enumerate(sizes):
      x = rng.normal(size=(num_users, self.rows[c], k)) * scale
      self.logp.append(np.asarray(jax.nn.log_softmax(jnp.asarray(x, jnp.float32)), np.float32))

  def step(self, state, prev, level):
    user, prefix = state
    if level > 0:
      prefix = prefix * self.sizes[level - 1] + prev
    return jnp.asarray(self.logp[level])[user, prefix], (user, prefix)

  def init(self, users):
    users = jnp.asarray(users, jnp.int32)
    return users, jnp.zeros_like(users)

  def score(self, user, codes):
    """Path log-prob of each code. Shape: codes [m, L] -> [m] float64."""
    codes = np.asarray(codes, np.int64)
    prefix = np.zeros(len(codes), np.int64)
    total = np.zeros(len(codes))
    for c in range(len(self.sizes)):
      if c:
        prefix = prefix * self.sizes[c - 1] + codes[:, c - 1]
      total += self.logp[c][user, prefix, codes[:, c]]
    return total


def _distinct_codes(seed, n, sizes):
  rng = np.random.default_rng(seed)
  flat = rng.choice(int(np.prod(sizes)), n, replace=False)
  return np.stack(np.unravel_index(flat, sizes), axis=1).astype(np.int32)


def _all_codes(sizes):
  return np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1)


def _brute(model, user, codes, k):
  s = model.score(user, codes)
  order = np.argsort(-s, kind="stable")[:k]
  return codes[order], s[order]


def _search(model, arrays, users, *, beam, top_k, constrained=True):
  users = np.asarray(users)
  return beam_search(model.step, model.init(users), arrays, batch_size=len(users),
                     beam_size=beam, num_levels=len(model.sizes),
                     codebook_sizes=model.sizes, top_k=top_k, constrained=constrained)


SIZES = (8, 8, 8)


@pytest.mark.parametrize("form", ["dense", "csr"])
@pytest.mark.parametrize("seed,n", [(0, 50), (1, 200)])
def test_exact_when_beam_covers_all_items(form, seed, n):
  codes = _distinct_codes(seed, n, SIZES)
  trie = build_trie(codes, SIZES)
  arrays = trie.arrays() if form == "dense" else trie.csr_arrays()
  model = TableModel(seed + 10, 3, SIZES)
  res = _search(model, arrays, [0, 1, 2], beam=n, top_k=10)
  assert isinstance(res, BeamResult)
  assert res.codes.shape == (3, 10, 3) and res.codes.dtype == jnp.int32
  assert res.scores.shape == (3, 10) and res.scores.dtype == jnp.float32
  assert bool(res.valid.all())
  for u in range(3):
    want_codes, want_scores = _brute(model, u, codes, 10)
    np.testing.assert_array_equal(np.asarray(res.codes[u]), want_codes)
    np.testing.assert_allclose(np.asarray(res.scores[u]), want_scores, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(leaves_to_items(trie, res.leaves[u]),
                                  codes_to_items(trie, want_codes))


def test_exact_with_collision_level_and_item_ids():
  rng = np.random.default_rng(3)
  sem = rng.integers(0, 4, size=(120, 2)).astype(np.int32)     # many shared semantic codes
  table = with_collision_level(SIDTable(item_ids=np.arange(120) * 7 + 5, codes=sem,
                                        codebook_sizes=(4, 4)))
  sizes = table.full_codebook_sizes
  trie = trie_from_table(table)
  model = TableModel(4, 2, sizes)
  res = _search(model, trie.arrays(), [0, 1], beam=120, top_k=8)
  for u in range(2):
    want_codes, want_scores = _brute(model, u, table.full_codes, 8)
    np.testing.assert_array_equal(np.asarray(res.codes[u]), want_codes)
    np.testing.assert_allclose(np.asarray(res.scores[u]), want_scores, rtol=1e-5, atol=1e-5)
    items = codes_to_items(table, res.codes[u])
    np.testing.assert_array_equal(items, table.lookup(want_codes))
    np.testing.assert_array_equal(leaves_to_items(trie, res.leaves[u]), items)
    assert len(set(items.tolist())) == 8 and (items >= 0).all()


@pytest.mark.parametrize("beam,top_k", [(1, 1), (5, 5), (12, 4)])
def test_small_beams_return_valid_distinct_sorted(beam, top_k):
  codes = _distinct_codes(5, 200, SIZES)
  trie = build_trie(codes, SIZES)
  model = TableModel(6, 4, SIZES, scale=2.0)
  res = _search(model, trie.arrays(), [0, 1, 2, 3], beam=beam, top_k=top_k)
  got, scores = np.asarray(res.codes), np.asarray(res.scores)
  assert bool(res.valid.all())               # 8 first-level prefixes >= beam: all beams live
  for u in range(4):
    assert contains(trie, got[u]).all()
    assert len({tuple(r) for r in got[u]}) == top_k
    assert (np.diff(scores[u]) <= 1e-6).all()
    np.testing.assert_allclose(scores[u], model.score(u, got[u]), rtol=1e-5, atol=1e-5)
    assert scores[u, 0] <= _brute(model, u, codes, 1)[1][0] + 1e-5
  if beam == 1:                               # greedy over valid continuations
    for u in range(4):
      node_codes = codes
      for c in range(3):
        prefix = got[u, 0, :c]
        ok = node_codes[(node_codes[:, :c] == prefix).all(axis=1)]
        pnum = 0
        for j in range(c):
          pnum = pnum * SIZES[j] + prefix[j]
        lp = model.logp[c][u, pnum]
        assert got[u, 0, c] == max(set(ok[:, c].tolist()), key=lambda x: lp[x])


def test_fewer_items_than_beams():
  codes = np.array([[1, 2, 3], [1, 2, 4], [7, 0, 0]], np.int32)
  trie = build_trie(codes, SIZES)
  model = TableModel(7, 2, SIZES)
  for arrays in (trie.arrays(), trie.csr_arrays()):
    res = _search(model, arrays, [0, 1], beam=6, top_k=5)
    valid = np.asarray(res.valid)
    assert valid[:, :3].all() and not valid[:, 3:].any()
    assert np.isneginf(np.asarray(res.scores)[:, 3:]).all()
    assert (np.asarray(res.leaves)[:, 3:] == -1).all()
    for u in range(2):
      want_codes, want_scores = _brute(model, u, codes, 3)
      np.testing.assert_array_equal(np.asarray(res.codes[u, :3]), want_codes)
      np.testing.assert_allclose(np.asarray(res.scores[u, :3]), want_scores, rtol=1e-5)
      items = leaves_to_items(trie, res.leaves[u])
      assert (items[3:] == -1).all() and sorted(items[:3].tolist()) == [0, 1, 2]


def test_unconstrained_finds_and_reports_invalid_codes():
  codes = _distinct_codes(8, 20, SIZES)            # 20 of 512 codes are valid
  trie = build_trie(codes, SIZES)
  model = TableModel(9, 3, SIZES, scale=3.0)
  every = _all_codes(SIZES)
  # Beam covering the whole code space: exact top-K over all codes, valid or not.
  res = _search(model, trie.arrays(), [0, 1, 2], beam=512, top_k=10, constrained=False)
  for u in range(3):
    want_codes, want_scores = _brute(model, u, every, 10)
    np.testing.assert_array_equal(np.asarray(res.codes[u]), want_codes)
    np.testing.assert_allclose(np.asarray(res.scores[u]), want_scores, rtol=1e-5, atol=1e-5)
  valid = np.asarray(res.valid)
  np.testing.assert_array_equal(valid, contains(trie, np.asarray(res.codes).reshape(-1, 3))
                                .reshape(3, 10))
  assert not valid.all()                            # the model prefers invalid codes
  leaves = np.asarray(res.leaves)
  assert ((leaves >= 0) == valid).all()
  np.testing.assert_array_equal(leaves_to_items(trie, leaves), codes_to_items(trie, res.codes))
  # Constrained decoding of the same model returns only valid codes.
  con = _search(model, trie.arrays(), [0, 1, 2], beam=20, top_k=10)
  assert bool(con.valid.all()) and contains(trie, np.asarray(con.codes).reshape(-1, 3)).all()
  # Without a trie: no validity information beyond finite scores.
  bare = _search(model, None, [0, 1, 2], beam=4, top_k=4, constrained=False)
  assert bool(bare.valid.all()) and (np.asarray(bare.leaves) == -1).all()


def test_dense_and_csr_agree_and_jit_wrapped():
  codes = _distinct_codes(10, 150, SIZES)
  trie = build_trie(codes, SIZES, dense_levels=1)
  model = TableModel(11, 3, SIZES)
  users = np.array([2, 0, 1])
  ref = _search(model, trie.arrays(), users, beam=7, top_k=5)
  csr = _search(model, trie.csr_arrays(), users, beam=7, top_k=5)

  @jax.jit
  def outer(arrays, users):
    return beam_search(model.step, model.init(users), arrays, batch_size=3, beam_size=7,
                       num_levels=3, codebook_sizes=SIZES, top_k=5)

  wrapped = outer(trie.arrays(), jnp.asarray(users))
  for other in (csr, wrapped):
    for a, b in zip(ref, other):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_batch_matches_one_at_a_time_and_state_forms():
  codes = _distinct_codes(12, 120, SIZES)
  trie = build_trie(codes, SIZES)
  model = TableModel(13, 4, SIZES)
  users = [3, 1, 0, 2]
  batch = _search(model, trie.arrays(), users, beam=6, top_k=3)
  for i, u in enumerate(users):
    one = _search(model, trie.arrays(), [u], beam=6, top_k=3)
    for a, b in zip(batch, one):
      np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b[0]))
  # State given per beam (leading dim b * B) instead of per user.
  u, p = model.init(users)
  per_beam = beam_search(model.step, (jnp.repeat(u, 6), jnp.repeat(p, 6)), trie.arrays(),
                         batch_size=4, beam_size=6, num_levels=3, codebook_sizes=list(SIZES),
                         top_k=3)
  for a, b in zip(batch, per_beam):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_errors():
  trie = build_trie(_distinct_codes(14, 30, SIZES), SIZES)
  model = TableModel(15, 1, SIZES)
  with pytest.raises(ValueError, match="top_k"):
    _search(model, trie.arrays(), [0], beam=2, top_k=3)
  with pytest.raises(ValueError, match="codebook_sizes"):
    beam_search(model.step, model.init([0]), trie.arrays(), batch_size=1, beam_size=2,
                num_levels=3, codebook_sizes=(8, 8, 9), top_k=1)
  with pytest.raises(ValueError, match="needs trie_arrays"):
    _search(model, None, [0], beam=2, top_k=1)
  with pytest.raises(ValueError, match="leading dim"):
    beam_search(model.step, (jnp.zeros(3, jnp.int32), jnp.zeros(3, jnp.int32)), trie.arrays(),
                batch_size=1, beam_size=2, num_levels=3, codebook_sizes=SIZES, top_k=1)

  def bad_step(state, prev, level):
    return jnp.zeros((prev.shape[0], 5)), state
  with pytest.raises(ValueError, match="log_probs of shape"):
    beam_search(bad_step, model.init([0]), trie.arrays(), batch_size=1, beam_size=2,
                num_levels=3, codebook_sizes=SIZES, top_k=1)
  with pytest.raises(TypeError):
    codes_to_items(object(), np.zeros((1, 3), np.int32))
