import numpy as np
import pytest

from lrm.core.errors import ConfigError
from lrm.data.splits import leave_one_out
from lrm.data.types import Catalog, Sequences
from lrm.tasks.id_sequences import eval_inputs, sequence_examples


def _pairs(ex: dict[str, np.ndarray]) -> list[tuple[tuple[int, ...], int]]:
  """(history seen by the position, target) for every position with a target."""
  out = []
  for inp, tgt in zip(ex["inputs"], ex["targets"]):
    for j in np.flatnonzero(tgt):
      hist = inp[:j + 1]
      out.append((tuple(int(x) for x in hist[hist > 0]), int(tgt[j])))
  return out


def _expected(seqs: Sequences, catalog: Catalog) -> list[tuple[tuple[int, ...], int]]:
  out = []
  for s in seqs:
    enc = catalog.rows(s) + 1
    out += [(tuple(int(x) for x in enc[:t]), int(enc[t])) for t in range(1, len(s))]
  return out


@pytest.fixture
def catalog():
  return Catalog(item_ids=np.arange(100, 130))       # rows 0..29 <-> ids 100..129


def test_short_users_one_left_padded_example(catalog):
  seqs = Sequences.from_lists([7, 8, 9], [[100, 101, 102], [105], [110, 111]])
  ex = sequence_examples(seqs, catalog, max_length=4)
  assert ex["inputs"].dtype == np.int32 and ex["targets"].dtype == np.int32
  # user 8 (one item) gives nothing.
  np.testing.assert_array_equal(ex["inputs"], [[0, 0, 1, 2], [0, 0, 0, 11]])
  np.testing.assert_array_equal(ex["targets"], [[0, 0, 2, 3], [0, 0, 0, 12]])


@pytest.mark.parametrize("length,stride", [(3, None), (3, 1), (3, 2), (4, 4), (5, 3), (50, None)])
def test_every_pair_exactly_once(catalog, length, stride):
  rng = np.random.default_rng(0)
  lists = [list(100 + rng.integers(0, 30, size=n)) for n in (1, 2, 3, 4, 5, 7, 8, 13, 20)]
  seqs = Sequences.from_lists(list(range(len(lists))), lists)
  ex = sequence_examples(seqs, catalog, max_length=length, stride=stride)
  got = _pairs(ex)
  expected = _expected(seqs, catalog)
  assert len(got) == len(expected)
  # Each target position appears once; its history is the true prefix, truncated to the window.
  want = {}
  for hist, tgt in expected:
    want.setdefault((len(hist), tgt), []).append(hist)
  for hist, tgt in got:
    full = [h for (n, t), hs in want.items() for h in hs if t == tgt and h[-len(hist):] == hist]
    assert full, (hist, tgt)
  if length >= 20:                                   # no truncation: exact multiset equality
    assert sorted(got) == sorted(expected)
  # Inputs are contiguous and left-padded: no padding after the first real item.
  first_real = (ex["inputs"] > 0).argmax(axis=1)
  assert all((row[f:] > 0).all() for row, f in zip(ex["inputs"], first_real))


def test_exactly_once_with_positions(catalog):
  """Identify each target by (user, position) so repeated items cannot hide duplicates."""
  n = 11
  seqs = Sequences.from_lists([0], [list(range(100, 100 + n))])   # distinct items: pos = row
  for stride in (1, 2, 3):
    ex = sequence_examples(seqs, catalog, max_length=3, stride=stride)
    targets = ex["targets"][ex["targets"] > 0] - 1
    assert sorted(targets.tolist()) == list(range(1, n))
    # Every target sees min(t, L - stride + 1) items of history at least.
    for inp, tgt in zip(ex["inputs"], ex["targets"]):
      for j in np.flatnonzero(tgt):
        seen = (inp[:j + 1] > 0).sum()
        assert seen >= min(tgt[j] - 1, 3 - stride + 1)


def test_long_user_split_into_windows(catalog):
  seqs = Sequences.from_lists([0], [list(range(100, 110))])       # rows 0..9, encoded 1..10
  ex = sequence_examples(seqs, catalog, max_length=4)
  # 9 pairs: windows end at the last item and step back by 4; oldest first.
  np.testing.assert_array_equal(ex["inputs"], [[0, 0, 0, 1], [2, 3, 4, 5], [6, 7, 8, 9]])
  np.testing.assert_array_equal(ex["targets"], [[0, 0, 0, 2], [3, 4, 5, 6], [7, 8, 9, 10]])


def test_eval_inputs_and_no_leakage(catalog):
  seqs = Sequences.from_lists([1, 2], [[100, 101, 102, 103, 104], [110, 111, 112]])
  split = leave_one_out(seqs)
  ex = sequence_examples(split.train, catalog, max_length=4)
  # user 1's validation (row 3) and test (row 4) items never appear in training.
  assert not np.isin([4, 5], ex["inputs"]).any() and not np.isin([4, 5], ex["targets"]).any()
  np.testing.assert_array_equal(eval_inputs(split.valid, catalog, max_length=4),
                                [[0, 1, 2, 3], [0, 0, 0, 11]])
  np.testing.assert_array_equal(eval_inputs(split.test, catalog, max_length=2),
                                [[3, 4], [11, 12]])


def test_empty_and_errors(catalog):
  empty = Sequences.from_lists([1], [[]])
  ex = sequence_examples(empty, catalog, max_length=3)
  assert ex["inputs"].shape == (0, 3) and ex["targets"].shape == (0, 3)
  seqs = Sequences.from_lists([1], [[100, 101]])
  with pytest.raises(ConfigError, match="max_length"):
    sequence_examples(seqs, catalog, max_length=0)
  with pytest.raises(ConfigError, match="stride"):
    sequence_examples(seqs, catalog, max_length=3, stride=4)


def test_vectorised_speed(catalog):
  """ML-20M-sized input (138k users, 2M events) in well under a few seconds."""
  import time
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 300, size=138_000)
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  big = Sequences(user_ids=np.arange(138_000), offsets=offsets,
                  items=100 + rng.integers(0, 30, size=offsets[-1]))
  t = time.perf_counter()
  ex = sequence_examples(big, catalog, max_length=50)
  assert time.perf_counter() - t < 10
  assert (ex["targets"] > 0).sum() == (lengths - 1).sum()
