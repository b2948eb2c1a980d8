
import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.data.synthetic import WorldConfig, make_world
from lrm.sid import table as T
from lrm.sid.table import SIDTable, majority_vote, with_collision_level


def _random_table(seed=0, n=300, sizes=(4, 3, 5)):
  rng = np.random.default_rng(seed)
  codes = np.stack([rng.integers(0, k, n) for k in sizes], axis=1)
  ids = rng.permutation(10 * n)[:n] + 1
  return SIDTable(item_ids=ids, codes=codes, codebook_sizes=sizes)


def test_collision_level_numbering_by_hand():
  codes = [[0, 1], [2, 0], [0, 1], [0, 1], [2, 0], [1, 1]]
  t = with_collision_level(SIDTable(item_ids=[5, 6, 7, 8, 9, 10], codes=codes,
                                    codebook_sizes=(3, 2)))
  assert t.collision.tolist() == [0, 0, 1, 2, 1, 0]
  assert t.collision_size == 3
  assert t.full_codebook_sizes == (3, 2, 3)
  assert t.full_codes.tolist() == [[0, 1, 0], [2, 0, 0], [0, 1, 1], [0, 1, 2], [2, 0, 1],
                                   [1, 1, 0]]
  # A given order: rows 3, then 2, then 0 in the (0, 1) group.
  t2 = with_collision_level(t, order=[5, 4, 3, 2, 1, 0])
  assert t2.collision.tolist() == [2, 1, 1, 0, 0, 0]
  # Switchable.
  off = t.set_collision(False)
  assert off.full_codes.shape == (6, 2) and off.num_levels == 2
  assert off.set_collision(True).full_codes.shape == (6, 3)
  with pytest.raises(DataError, match="permutation"):
    with_collision_level(t, order=[0, 0, 1, 2, 3, 4])


def test_collision_makes_full_codes_unique_and_lookup():
  t = with_collision_level(_random_table())
  assert len(np.unique(t.full_codes, axis=0)) == t.num_items
  np.testing.assert_array_equal(t.lookup(t.full_codes), t.item_ids)
  missing = t.full_codes[:3].copy()
  missing[:, -1] = t.collision_size - 1 + 5  # beyond any group
  assert (t.lookup(missing) == -1).all()
  # Without the collision level: the first item in catalog order.
  plain = t.set_collision(False)
  got = plain.lookup(plain.codes)
  first = {}
  for i, row in zip(t.item_ids, map(tuple, t.codes)):
    first.setdefault(row, i)
  assert got.tolist() == [first[tuple(r)] for r in t.codes]
  neg = t.full_codes[:2].copy()
  neg[:, 0] = -1
  assert (t.lookup(neg) == -1).all()
  with pytest.raises(DataError, match="shape"):
    t.lookup(np.zeros((2, 2), int))
  # Code spaces beyond int64 keys take the lexicographic path.
  rng = np.random.default_rng(1)
  big = SIDTable(np.arange(6) + 1, rng.integers(0, 2 ** 30, (6, 3)), (2 ** 30,) * 3)
  assert big.lookup(big.codes).tolist() == [1, 2, 3, 4, 5, 6]
  assert big.lookup([[2 ** 30 - 1, 0, 0], [0, 0, -1]]).tolist() == [-1, -1]


@pytest.mark.parametrize("high", [3, 1 << 20, 1 << 40])
def test_packed_key_order_and_groups_match_numpy(high):
  """One packed int64 key per row (or lexsort when the codes need more than 63 bits) gives
  NumPy's lexicographic order, groups and collision ranks, negatives included."""
  rng = np.random.default_rng(high % 97)
  for trial in range(40):
    n, width = int(rng.integers(1, 60)), int(rng.integers(1, 5))
    codes = rng.integers(-2 if trial % 5 == 0 else 0, high, (n, width))
    np.testing.assert_array_equal(T.lex_order(codes), np.lexsort(codes.T[::-1]))
    _, inverse, counts = np.unique(codes, axis=0, return_inverse=True, return_counts=True)
    groups, sizes = T.group_index(codes)
    np.testing.assert_array_equal(groups, inverse.reshape(-1))
    np.testing.assert_array_equal(sizes, counts)
  assert T.row_keys(np.array([[1 << 40, 1 << 40]])) is None        # 82 bits: lexsort instead
  codes = rng.integers(0, 3, (50, 2)).astype(np.int32)
  table = SIDTable(item_ids=np.arange(50), codes=codes, codebook_sizes=(3, 3))
  order = rng.permutation(50)
  for rows in (None, order):    # catalog order reuses the grouping's sort; others rank anew
    got = with_collision_level(table, rows).collision
    want = T._rank_in_group(inverse_of(codes), np.arange(50) if rows is None else order)
    np.testing.assert_array_equal(got, want)


def inverse_of(codes):
  return np.unique(codes, axis=0, return_inverse=True)[1].reshape(-1)


def test_truncate():
  t = with_collision_level(_random_table())
  t2 = t.truncate(2)
  assert t2.codes.tolist() == t.codes[:, :2].tolist()
  assert t2.collision is None and t2.codebook_sizes == (4, 3)
  assert t2.full_codes.shape == (t.num_items, 2)
  for k in (0, 4):
    with pytest.raises(DataError, match="truncate"):
      t.truncate(k)


def test_bad_inputs_named():
  with pytest.raises(DataError, match="negative"):
    SIDTable(item_ids=[1, 2], codes=[[0, -1], [0, 0]], codebook_sizes=(2, 2))
  with pytest.raises(DataError, match="codebook size 2"):
    SIDTable(item_ids=[1, 2], codes=[[0, 2], [0, 0]], codebook_sizes=(2, 2))
  with pytest.raises(DataError, match="2-d"):
    SIDTable(item_ids=[1, 2], codes=[0, 1], codebook_sizes=(2,))
  with pytest.raises(DataError, match="item_ids has 3 entries"):
    SIDTable(item_ids=[1, 2, 3], codes=[[0], [1]], codebook_sizes=(2,))
  with pytest.raises(DataError, match="duplicate item_ids"):
    SIDTable(item_ids=[1, 1], codes=[[0], [1]], codebook_sizes=(2,))
  with pytest.raises(DataError, match="codebook_sizes has 1"):
    SIDTable(item_ids=[1, 2], codes=[[0, 0], [1, 1]], codebook_sizes=(2,))
  with pytest.raises(DataError, match="integers"):
    SIDTable(item_ids=[1, 2], codes=[[0.5], [1.0]], codebook_sizes=(2,))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_extend_keeps_old_rows_and_collision(seed):
  rng = np.random.default_rng(seed)
  full = _random_table(seed, n=400)
  old = with_collision_level(SIDTable(full.item_ids[:250], full.codes[:250], full.codebook_sizes))
  new = old.extend(full.item_ids[250:], full.codes[250:])
  np.testing.assert_array_equal(new.item_ids[:250], old.item_ids)
  np.testing.assert_array_equal(new.codes[:250], old.codes)
  np.testing.assert_array_equal(new.collision[:250], old.collision)
  # Unique full codes, and numbering continues each group: 0..g-1 per group overall.
  assert len(np.unique(new.full_codes, axis=0)) == new.num_items
  assert new.collision_size >= old.collision_size
  assert new.collision.max() < new.collision_size
  groups, counts = T.group_index(new.codes)
  for g in rng.choice(len(counts), 10):
    assert sorted(new.collision[groups == g].tolist()) == list(range(counts[g]))
  # Extending all at once in catalog order equals building from scratch.
  np.testing.assert_array_equal(new.collision, with_collision_level(new).collision)
  # Without a collision level, extend just appends.
  plain = SIDTable(full.item_ids[:250], full.codes[:250], full.codebook_sizes)
  assert plain.extend(full.item_ids[250:], full.codes[250:]).collision is None
  with pytest.raises(DataError, match="already in the table"):
    old.extend(full.item_ids[:2], full.codes[:2])
  with pytest.raises(DataError, match="new_codes"):
    old.extend([10 ** 9], [[0, 0, 9]])


def test_extend_by_hand():
  t = with_collision_level(SIDTable([1, 2, 3], [[0, 0], [0, 0], [1, 0]], (2, 2)))
  e = t.extend([4, 5, 6], [[1, 0], [0, 0], [1, 1]])
  assert e.collision.tolist() == [0, 1, 0, 1, 2, 0]
  assert e.collision_size == 3


def test_save_load_roundtrip(tmp_path):
  for t in (_random_table(), with_collision_level(_random_table(1)),
            with_collision_level(_random_table(2)).set_collision(False)):
    d = tmp_path / str(id(t))
    manifest = t.save(d, config={"method": "test"})
    assert manifest["stage"] == "sid_table" and manifest["counts"]["items"] == t.num_items
    u = SIDTable.load(d)
    np.testing.assert_array_equal(u.item_ids, t.item_ids)
    np.testing.assert_array_equal(u.codes, t.codes)
    np.testing.assert_array_equal(u.full_codes, t.full_codes)
    assert u.codebook_sizes == t.codebook_sizes and u.use_collision == t.use_collision
    assert u.collision_size == t.collision_size
    assert u.codes.dtype == np.int32 and u.item_ids.dtype == np.int64


def test_load_errors_name_the_file(tmp_path):
  t = with_collision_level(_random_table())
  t.save(tmp_path)
  codes = np.load(tmp_path / "codes.npy")
  bad = codes.copy()
  bad[3, 1] = 7
  np.save(tmp_path / "codes.npy", bad)
  with pytest.raises(DataError, match=r"codes\.npy.*row 3, level 1"):
    SIDTable.load(tmp_path)
  np.save(tmp_path / "codes.npy", codes[:, :2])
  with pytest.raises(DataError, match=r"codes\.npy.*shape"):
    SIDTable.load(tmp_path)
  np.save(tmp_path / "codes.npy", codes)
  np.save(tmp_path / "item_ids.npy", np.load(tmp_path / "item_ids.npy")[:-1])
  with pytest.raises(DataError, match=r"item_ids\.npy"):
    SIDTable.load(tmp_path)
  (tmp_path / "manifest.json").unlink()
  with pytest.raises(DataError, match="manifest"):
    SIDTable.load(tmp_path)


def test_majority_vote_by_hand():
  child = np.array([
      [0, 1, 2],  # parent 0
      [0, 2, 0],
      [1, 1, 1],
      [0, 2, 1],
      [1, 1, 1],  # parent 1: tie on level 0 between 1 and 3 -> 1
      [3, 0, 0],
      [2, 2, 2],  # parent 3
  ])
  parent = np.array([0, 0, 0, 0, 1, 1, 3])
  got = majority_vote(child, parent, num_parents=4)
  assert got.dtype == np.int32
  # Parent 0: level 0 -> 0 (3 votes); level 1 among (0,*): 2 (two votes); level 2 among
  # (0,2,*): 0 and 1 tie -> 0. Independently, level 1 would be 1 (1,1 from rows 0, 2) vs 2.
  assert got.tolist() == [[0, 2, 0], [1, 1, 1], [-1, -1, -1], [2, 2, 2]]
  # Hierarchical result is always some child's code; independent voting may not be.
  child2 = np.array([[0, 0], [0, 1], [1, 1], [1, 1], [0, 2]])
  parent2 = np.zeros(5, int)
  assert majority_vote(child2, parent2, num_parents=1).tolist() == [[0, 0]]
  assert majority_vote(child2, parent2, num_parents=1, hierarchical=False).tolist() == [[0, 1]]
  # Weights.
  w = np.array([1, 1, 5, 0, 1])
  assert majority_vote(child2, parent2, num_parents=1, weights=w).tolist() == [[1, 1]]
  with pytest.raises(DataError, match="parent_index"):
    majority_vote(child2, [0, 0, 0, 0, 1], num_parents=1)
  with pytest.raises(DataError, match="child_codes"):
    majority_vote(-child2 - 1, parent2, num_parents=1)


def test_majority_vote_random_matches_bruteforce():
  rng = np.random.default_rng(3)
  child = rng.integers(0, 3, (400, 3))
  parent = rng.integers(0, 40, 400)
  got = majority_vote(child, parent, num_parents=41)
  for p in range(41):
    rows = child[parent == p]
    if not len(rows):
      assert (got[p] == -1).all()
      continue
    prefix = []
    for c in range(3):
      agree = rows[(rows[:, :c] == prefix).all(axis=1)] if c else rows
      vals, cnt = np.unique(agree[:, c], return_counts=True)
      prefix.append(int(vals[np.argmax(cnt)]))  # argmax: first max = smallest code
    assert got[p].tolist() == prefix


def _leaf_paths(world):
  """Leaf topic -> its path as a code (one digit per tree level)."""
  branching = world.config.branching
  leaves = np.arange(int(np.prod(branching)))
  digits, rest = [], leaves
  for b in reversed(branching):
    digits.append(rest % b)
    rest = rest // b
  return np.stack(digits[::-1], axis=1)


def test_majority_vote_recovers_room_topics():
  world = make_world(WorldConfig(num_items=200, num_users=20, num_rooms=300, room_slices=48))
  truth = world.truth
  paths = _leaf_paths(world)
  # Sanity: the digit path agrees with the world's own leaf paths (same parent = same prefix).
  same_parent = truth.leaf_parent[:, None] == truth.leaf_parent[None, :]
  same_prefix = (paths[:, None, :2] == paths[None, :, :2]).all(-1)
  np.testing.assert_array_equal(same_parent, same_prefix)
  r, s = truth.room_slice_topics.shape
  slice_codes = paths[truth.room_slice_topics.reshape(-1)]
  rooms = np.repeat(np.arange(r), s)
  voted = majority_vote(slice_codes, rooms, num_parents=r)
  truth_codes = paths[truth.room_dominant_topic]
  agree = (voted == truth_codes).all(axis=1).mean()
  assert agree >= 0.97, agree


def test_dynamic_sids_and_stability():
  slice_codes = np.array([[0, 1], [0, 1], [1, 0], [2, 2], [2, 2], [0, 0]])
  item = np.array([0, 0, 0, 0, 1, 1])
  window = np.array([0, 0, 0, 2, 2, 3])
  dyn = T.dynamic_sids(slice_codes, item, window, num_items=2, num_windows=4)
  assert dyn.shape == (2, 4, 2)
  assert dyn[0].tolist() == [[0, 1], [-1, -1], [2, 2], [-1, -1]]
  assert dyn[1].tolist() == [[-1, -1], [-1, -1], [2, 2], [0, 0]]
  filled = T.forward_fill(dyn)
  assert filled[0].tolist() == [[0, 1], [0, 1], [2, 2], [2, 2]]
  assert filled[1].tolist() == [[-1, -1], [-1, -1], [2, 2], [0, 0]]
  assert T.static_sids(dyn).tolist() == [[0, 1], [0, 0]]  # ties -> smallest code
  ws = T.window_stability(dyn)
  # Pairs (prev filled -> current present): item 0: (0,1)->(2,2); item 1: (2,2)->(0,0).
  assert ws["num_compared"] == 2 and ws["changed"] == 1.0
  with pytest.raises(DataError, match="some levels only"):
    T.check_dynamic(np.array([[[0, -1]]]))
  with pytest.raises(DataError, match="3-d"):
    T.forward_fill(np.zeros((2, 2), int))


def test_stability_report_by_hand():
  old = np.array([[0, 0, 0], [0, 0, 1], [1, 1, 1], [2, 0, 0], [-1, -1, -1]])
  new = np.array([[0, 0, 0], [0, 1, 1], [1, 1, 2], [0, 0, 0], [1, 1, 1]])
  rep = T.stability_report(old, new)
  assert rep["num_compared"] == 4 and rep["levels"] == 3
  assert rep["changed"] == 0.75
  assert rep["prefix_changed"] == [0.25, 0.5, 0.75]
  assert rep["level_changed"] == [0.25, 0.25, 0.25]
  rep2 = T.stability_report(old, new, levels=2)
  assert rep2["changed"] == 0.5 and rep2["prefix_changed"] == [0.25, 0.5]
  with pytest.raises(DataError, match="items"):
    T.stability_report(old, new[:3])
  with pytest.raises(DataError, match="levels"):
    T.stability_report(old, new, levels=4)
