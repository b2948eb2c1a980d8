"""A tiny dataset with every optional part the TFDS records carry, and a Dataset comparison."""

from __future__ import annotations

import numpy as np

from lrm.data.types import Catalog, Dataset, Sequences, UserTable


def tiny_dataset(num_users: int = 7) -> Dataset:
  """Users 10, 11, ... with 1 to 4 events over items 0..5 (item 0 is a valid id)."""
  rng = np.random.default_rng(0)
  lists = [rng.integers(0, 6, size=1 + u % 4).tolist() for u in range(num_users)]
  catalog = Catalog(
      item_ids=np.arange(6),
      fields={"title": ["Toy", "Misérables", None, "Face Cream", "Brush", "Coat"],
              "categories": [["Beauty", "Nails"], [], None, ["Skin"], ["Tools"], ["Nails"]],
              "price": [7.5, None, 2, 3.25, 1e-3, 10]},
      embeddings={"text": rng.normal(size=(6, 3)).astype(np.float32)},
      timestamps=np.arange(6) * 10.0)
  sequences = Sequences.from_lists(
      [10 + u for u in range(num_users)], lists,
      timestamps=[np.sort(rng.uniform(0, 1e9, len(x))) for x in lists],
      signals={"rating": [rng.integers(1, 6, len(x)) for x in lists]},
      event_types=[rng.integers(0, 2, len(x)) for x in lists], event_type_names=("view", "buy"))
  users = UserTable(user_ids=[10, 12], fields={"age": [30, None], "zip_code": ["01234", "K1A"]})
  return Dataset(name="Tiny Set", catalog=catalog, sequences=sequences, users=users,
                 meta={"source": "test", "k": [1, 2]})


def assert_same_dataset(got: Dataset, want: Dataset) -> None:
  """Equal catalogs, sequences, users, name and meta (arrays exactly)."""
  assert (got.name, dict(got.meta)) == (want.name, dict(want.meta))
  a, b = got.catalog, want.catalog
  np.testing.assert_array_equal(a.item_ids, b.item_ids)
  assert list(a.fields) == list(b.fields) and a.fields == b.fields
  assert sorted(a.embeddings) == sorted(b.embeddings)
  for m in a.embeddings:
    np.testing.assert_array_equal(a.embeddings[m], b.embeddings[m])
  np.testing.assert_array_equal(a.timestamps, b.timestamps)
  s, t = got.sequences, want.sequences
  for key in ("user_ids", "offsets", "items", "timestamps", "event_types"):
    np.testing.assert_array_equal(getattr(s, key), getattr(t, key), err_msg=key)
  assert s.event_type_names == t.event_type_names
  assert sorted(s.signals) == sorted(t.signals)
  for name in s.signals:
    np.testing.assert_array_equal(s.signals[name], t.signals[name])
  assert (got.users is None) == (want.users is None)
  if got.users is not None:
    np.testing.assert_array_equal(got.users.user_ids, want.users.user_ids)
    assert got.users.fields == want.users.fields
