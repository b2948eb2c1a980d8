import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.data.types import Catalog, Dataset, Sequences


def _seqs():
  return Sequences.from_lists([10, 20, 30], [[1, 2, 3], [4], [5, 6]],
                              timestamps=[[1, 2, 3], [5], [7, 8]],
                              signals={"rating": [[1, 2, 3], [4], [5, 6]]})


def test_csr_views():
  s = _seqs()
  assert len(s) == 3 and s.num_events == 6
  np.testing.assert_array_equal(s.lengths, [3, 1, 2])
  np.testing.assert_array_equal(s.user(2), [5, 6])
  t = s.take_users(np.array([2, 0]))
  np.testing.assert_array_equal(t.user_ids, [30, 10])
  np.testing.assert_array_equal(t.items, [5, 6, 1, 2, 3])
  np.testing.assert_array_equal(t.timestamps, [7, 8, 1, 2, 3])
  np.testing.assert_array_equal(t.signals["rating"], [5, 6, 1, 2, 3])


def test_select_events_keeps_users():
  s = _seqs().select_events(np.array([1, 0, 1, 0, 1, 1], bool))
  np.testing.assert_array_equal(s.offsets, [0, 2, 2, 4])
  np.testing.assert_array_equal(s.items, [1, 3, 5, 6])
  with pytest.raises(DataError, match="event mask"):
    _seqs().select_events(np.ones(3, bool))


def test_sequence_validation():
  with pytest.raises(DataError, match="duplicate user"):
    Sequences.from_lists([1, 1], [[1], [2]])
  with pytest.raises(DataError, match="timestamps"):
    Sequences(user_ids=[1], offsets=[0, 2], items=[1, 2], timestamps=[1.0])
  with pytest.raises(DataError, match="NaN"):
    Sequences(user_ids=[1], offsets=[0, 2], items=[1, 2], timestamps=[1.0, np.nan])
  with pytest.raises(DataError, match="offsets"):
    Sequences(user_ids=[1, 2], offsets=[0, 3, 2], items=[1, 2])


def test_catalog_validation_and_lookup():
  c = Catalog(item_ids=[3, 1, 2], fields={"title": ["c", "a", None],
                                          "categories": [["x", "y"], [], ["z"]]})
  np.testing.assert_array_equal(c.rows([1, 2, 3]), [1, 2, 0])
  assert c.text() == ["c; x > y", "a", "z"]
  np.testing.assert_array_equal(c.leaf_category(), [0, -1, 1])
  with pytest.raises(DataError, match=r"unknown item ids.*\[7\]"):
    c.rows([1, 7])
  with pytest.raises(DataError, match="duplicate item ids"):
    Catalog(item_ids=[1, 1])
  with pytest.raises(DataError, match="3 values for 2 items"):
    Catalog(item_ids=[1, 2], fields={"title": ["a", "b", "c"]})
  with pytest.raises(DataError, match=r"NaN or inf in rows \[1\].*item ids \[2\]"):
    Catalog(item_ids=[1, 2], embeddings={"v": np.array([[0.0, 1.0], [np.nan, 0.0]])})
  with pytest.raises(DataError, match="shape"):
    Catalog(item_ids=[1, 2], embeddings={"v": np.zeros((3, 2))})


def test_check_items_names_user():
  c = Catalog(item_ids=[1, 2, 3, 4, 5])
  with pytest.raises(DataError, match="user 30: unknown item id 6"):
    _seqs().check_items(c)


def test_dataset_stats():
  ds = Dataset("t", Catalog(item_ids=[1, 2, 3, 4, 5, 6]), _seqs())
  st = ds.stats()
  assert (st["users"], st["items"], st["interactions"], st["max_length"]) == (3, 6, 6, 3)
  assert st["has_timestamps"]
