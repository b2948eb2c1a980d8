import numpy as np
import pytest

from lrm.data.splits import leave_one_out
from lrm.data.types import Catalog, Sequences
from lrm.sid.table import SIDTable, with_collision_level
from lrm.tasks.next_item import (eval_examples, tokenize, train_iterator, training_examples)
from lrm.tokens.sid_vocab import PAD, SIDVocab


@pytest.fixture
def toy():
  catalog = Catalog(item_ids=np.arange(10, 20))     # rows 0..9 <-> ids 10..19
  seqs = Sequences.from_lists([1, 2], [[10, 11, 12, 13, 14], [15, 16, 17]])
  return catalog, seqs


def test_training_examples_every_prefix_with_truncation(toy):
  catalog, seqs = toy
  ex = training_examples(seqs, catalog, max_history=2)
  assert len(ex) == (5 - 1) + (3 - 1)
  np.testing.assert_array_equal(ex.target, [1, 2, 3, 4, 6, 7])
  np.testing.assert_array_equal(ex.history, [[-1, 0], [0, 1], [1, 2], [2, 3], [-1, 5], [5, 6]])
  np.testing.assert_array_equal(ex.user_ids, [1, 1, 1, 1, 2, 2])


def test_no_leakage_from_leave_one_out(toy):
  catalog, seqs = toy
  split = leave_one_out(seqs)
  ex = training_examples(split.train, catalog, max_history=20)
  # user 1's validation (13) and test (14) items are never targets nor history in training.
  assert not np.isin([3, 4], ex.target[ex.user_ids == 1]).any()
  assert not np.isin([3, 4], ex.history[ex.user_ids == 1]).any()
  test = eval_examples(split.test, catalog, max_history=3)
  np.testing.assert_array_equal(test.target, [4, 7])
  np.testing.assert_array_equal(test.history, [[1, 2, 3], [-1, 5, 6]])


def test_tokenize(toy):
  catalog, seqs = toy
  table = with_collision_level(SIDTable(item_ids=catalog.item_ids,
                                        codes=np.array([[i % 3, i % 2] for i in range(10)]),
                                        codebook_sizes=(3, 2)))
  vocab = SIDVocab(table.full_codebook_sizes, num_user_tokens=7)
  ex = training_examples(seqs, catalog, max_history=2)
  tok = tokenize(ex, table, vocab)
  L = vocab.num_levels
  assert tok["encoder_tokens"].shape == (len(ex), 1 + 2 * L)
  assert tok["targets"].shape == (len(ex), L)
  # The first example: user token, one padded item, then item row 0's tokens.
  first = tok["encoder_tokens"][0]
  assert first[0] == vocab.user_tokens([1])[0]
  assert (first[1:1 + L] == PAD).all()
  np.testing.assert_array_equal(first[1 + L:], vocab.encode_codes(table.full_codes[0]))
  np.testing.assert_array_equal(vocab.decode_tokens(tok["targets"]), table.full_codes[ex.target])
  np.testing.assert_array_equal(tok["encoder_mask"], tok["encoder_tokens"] != PAD)


def test_train_iterator_is_deterministic_and_resumes(toy):
  arrays = {"x": np.arange(40), "y": np.arange(40) * 2}
  a = train_iterator(arrays, batch_size=8, seed=3)
  first = [next(a)["x"] for _ in range(12)]          # crosses epoch boundaries (5 per epoch)
  b = train_iterator(arrays, batch_size=8, seed=3)
  np.testing.assert_array_equal(np.stack(first), np.stack([next(b)["x"] for _ in range(12)]))
  # Each epoch is a permutation, reshuffled per epoch.
  epoch0, epoch1 = np.concatenate(first[:5]), np.concatenate(first[5:10])
  assert sorted(epoch0) == list(range(40)) and sorted(epoch1) == list(range(40))
  assert not np.array_equal(epoch0, epoch1)
  # Resume from a saved state: the same batches follow.
  c = train_iterator(arrays, batch_size=8, seed=3)
  for _ in range(7):
    next(c)
  state = c.get_state()
  expected = [next(c)["x"] for _ in range(4)]
  d = train_iterator(arrays, batch_size=8, seed=3)
  d.set_state(state)
  np.testing.assert_array_equal(np.stack(expected), np.stack([next(d)["x"] for _ in range(4)]))
  assert (first[0] * 2 == next(train_iterator(arrays, batch_size=8, seed=3))["y"]).all()
