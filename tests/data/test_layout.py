"""The standard dataset layout: the shared datasets, round trips, bad input, atomic writes."""

from __future__ import annotations

import json
import pathlib
import time

import numpy as np
import pytest

from lrm.core import artifacts
from lrm.core.errors import DataError
from lrm.data import layout
from lrm.data.layout import read_dataset, read_items_jsonl, read_sequences_txt, write_dataset
from lrm.data.movielens import read_movielens, read_recbole_atomic
from lrm.data.types import Catalog, Dataset, Sequences

# ------------------------------------------------------------------------------------------
# The shared datasets

SHARED = {
    # name: (users, items, interactions, first user's items, item 1's fields)
    "amazon_beauty": (22_363, 12_101, 198_502, [1, 2, 3, 4, 5],
                      {"asin": "B004756YJA", "brand": "OPI",
                       "title": "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce",
                       "categories": ["Makeup", "Nails", "Nail Polish"]}),
    "amazon_sports": (35_598, 18_357, 296_337, [1, 2, 3, 4, 5, 6, 7, 8],
                      {"asin": "1881509818", "title": None, "brand": "Ghost",
                       "categories": ["Hunting & Fishing", "Hunting", "Gun Maintenance",
                                      "Gunsmithing Tools"]}),
    "movielens_100k": (943, 1_682, 100_000, [168, 172, 165, 156, 196],
                       {"title": "Toy Story", "release_year": 1995,
                        "genres": ["Animation", "Children's", "Comedy"]}),
}


@pytest.mark.parametrize("name", sorted(SHARED))
def test_shared_dataset_counts_and_first_lines(shared_data, name):
  users, items, events, first_items, item1 = SHARED[name]
  start = time.perf_counter()
  dataset = read_dataset(shared_data / name)
  load_s = time.perf_counter() - start
  assert load_s < 2.0, f"{name} took {load_s:.2f} s to load"
  assert dataset.name == name
  stats = dataset.stats()
  assert (stats["users"], stats["items"], stats["interactions"]) == (users, items, events)
  seqs = dataset.sequences
  assert seqs.user_ids[0] == 1
  np.testing.assert_array_equal(seqs.user(0)[:len(first_items)], first_items)
  if name != "movielens_100k":
    assert len(seqs.user(0)) == len(first_items)
  # The file's first line, parsed independently.
  first_line = (shared_data / name / "sequences.txt").open().readline().split()
  np.testing.assert_array_equal(seqs.user(0), [int(x) for x in first_line[1:]])
  assert dataset.catalog.item_ids[0] == 1
  for field, value in item1.items():
    assert dataset.catalog.fields[field][0] == value, field


def test_shared_beauty_ids_are_dense(shared_data):
  dataset = read_dataset(shared_data / "amazon_beauty")
  np.testing.assert_array_equal(dataset.sequences.user_ids, np.arange(1, 22_364))
  np.testing.assert_array_equal(np.unique(dataset.sequences.items), np.arange(1, 12_102))
  assert dataset.sequences.lengths.min() == 5


def test_recbole_atomic_reproduces_movielens_layout(shared_data):
  folder = shared_data / "movielens_100k"
  layout_ds = read_dataset(folder)
  recbole = read_recbole_atomic(folder)
  a, b = recbole.sequences, layout_ds.sequences
  np.testing.assert_array_equal(a.user_ids, b.user_ids)
  np.testing.assert_array_equal(a.offsets, b.offsets)
  np.testing.assert_array_equal(a.items, b.items)
  np.testing.assert_array_equal(recbole.catalog.item_ids, layout_ds.catalog.item_ids)
  assert recbole.catalog.fields == layout_ds.catalog.fields
  # Timestamps sorted within each user; ratings 1..5 like the file.
  ts = a.timestamps
  same_user = np.repeat(np.arange(len(a)), a.lengths)
  assert (np.diff(ts)[np.diff(same_user) == 0] >= 0).all()
  assert set(np.unique(a.signals["rating"]).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
  assert a.timestamps[0] == 874965478.0  # user 1's first event (item 168)
  # read_movielens detects the RecBole files too.
  np.testing.assert_array_equal(read_movielens(folder).sequences.items, b.items)


# ------------------------------------------------------------------------------------------
# Round trip


def _rich_dataset() -> Dataset:
  catalog = Catalog(
      item_ids=np.array([5, 3, 9, 1]),
      fields={
          "title": ["Crème brûlée", None, "A \"quoted\" title\twith tab", "日本語"],
          "categories": [["A", "B"], [], None, ["C"]],
          "price": [1.5, None, 0.1 + 0.2, 3],
          "release_year": [1995, None, 2001, 1970],
      },
      embeddings={"text": np.arange(12, dtype=np.float32).reshape(4, 3) / 7,
                  "image": np.ones((4, 2), np.float32)},
      timestamps=np.array([1.5, 2.25, 1e9 + 0.125, -3.0]))
  sequences = Sequences.from_lists(
      [7, 2, 11], [[5, 3, 5], [9], [1, 3]],
      timestamps=[[1.0, 2.0, 2.0], [1.7e9 + 0.5], [3.0, 4.0]],
      event_types=[[0, 1, 2], [1], [0, 0]], event_type_names=("view", "like", "order"),
      signals={"rating": [[1, 2, 3], [4.5], [5, 1]], "watch_s": [[0.1, 0.2, 0.3], [7], [8, 9]]})
  return Dataset(name="rich", catalog=catalog, sequences=sequences,
                 meta={"source": "test", "min_count": 5})


def _assert_same_dataset(a: Dataset, b: Dataset) -> None:
  assert a.name == b.name
  assert dict(a.meta) == dict(b.meta)
  np.testing.assert_array_equal(a.catalog.item_ids, b.catalog.item_ids)
  assert list(a.catalog.fields) == list(b.catalog.fields)
  for name in a.catalog.fields:
    assert a.catalog.fields[name] == b.catalog.fields[name], name
  assert sorted(a.catalog.embeddings) == sorted(b.catalog.embeddings)
  for name, emb in a.catalog.embeddings.items():
    assert b.catalog.embeddings[name].dtype == np.float32
    np.testing.assert_array_equal(emb, b.catalog.embeddings[name])
  if a.catalog.timestamps is None:
    assert b.catalog.timestamps is None
  else:
    np.testing.assert_array_equal(a.catalog.timestamps, b.catalog.timestamps)
  sa, sb = a.sequences, b.sequences
  for attr in ("user_ids", "offsets", "items"):
    np.testing.assert_array_equal(getattr(sa, attr), getattr(sb, attr))
  for attr in ("timestamps", "event_types"):
    if getattr(sa, attr) is None:
      assert getattr(sb, attr) is None
    else:
      assert getattr(sb, attr).dtype == getattr(sa, attr).dtype
      np.testing.assert_array_equal(getattr(sa, attr), getattr(sb, attr))
  assert sa.event_type_names == sb.event_type_names
  assert sorted(sa.signals) == sorted(sb.signals)
  for name, values in sa.signals.items():
    np.testing.assert_array_equal(values, sb.signals[name])


def test_round_trip_with_every_extra(tmp_path):
  original = _rich_dataset()
  write_dataset(tmp_path / "ds", original, config={"seed": 3})
  files = sorted(p.relative_to(tmp_path / "ds").as_posix()
                 for p in (tmp_path / "ds").rglob("*") if p.is_file())
  assert files == ["embeddings/image.npy", "embeddings/text.npy", "events.npz", "items.jsonl",
                   "items.npz", "manifest.json", "sequences.txt"]
  assert (tmp_path / "ds" / "sequences.txt").read_text() == "7 5 3 5\n2 9\n11 1 3\n"
  first_item = json.loads((tmp_path / "ds" / "items.jsonl").read_text().splitlines()[0])
  assert first_item == {"item_id": 5, "title": "Crème brûlée", "categories": ["A", "B"],
                        "price": 1.5, "release_year": 1995}
  manifest = artifacts.read_manifest(tmp_path / "ds")
  assert manifest["counts"] == {"users": 3, "items": 4, "interactions": 6}
  assert manifest["config"] == {"seed": 3} and manifest["name"] == "rich"
  again = read_dataset(tmp_path / "ds")
  _assert_same_dataset(original, again)
  assert again.catalog.fields["price"][2] == 0.1 + 0.2  # floats exact through JSON


def test_round_trip_of_the_shared_beauty(shared_data, tmp_path):
  original = read_dataset(shared_data / "amazon_beauty")
  write_dataset(tmp_path / "beauty", original)
  assert ((tmp_path / "beauty" / "sequences.txt").read_bytes()
          == (shared_data / "amazon_beauty" / "sequences.txt").read_bytes())
  _assert_same_dataset(original, read_dataset(tmp_path / "beauty"))


def test_rewrite_removes_stale_extras(tmp_path):
  write_dataset(tmp_path, _rich_dataset())
  plain = Dataset(name="plain", catalog=Catalog(item_ids=[1, 2]),
                  sequences=Sequences.from_lists([1], [[2, 1]]))
  write_dataset(tmp_path, plain)
  assert not (tmp_path / "events.npz").exists()
  assert not (tmp_path / "items.npz").exists()
  assert not list((tmp_path / "embeddings").glob("*.npy"))
  _assert_same_dataset(plain, read_dataset(tmp_path))


def test_name_argument_and_foreign_folder(tmp_path):
  (tmp_path / "sequences.txt").write_text("1 1 2\n\n2 2\n")  # blank lines are skipped
  (tmp_path / "items.jsonl").write_text('{"item_id": 1, "title": "a"}\n{"item_id": 2}\n')
  dataset = read_dataset(tmp_path, name="tiny")
  assert dataset.name == "tiny"
  assert dataset.catalog.fields == {"title": ["a", None]}
  np.testing.assert_array_equal(dataset.sequences.offsets, [0, 2, 3])
  assert dataset.sequences.timestamps is None and dataset.meta == {}


# ------------------------------------------------------------------------------------------
# Bad input: DataError naming file and line


def _folder(tmp_path: pathlib.Path, sequences: str, items: str) -> pathlib.Path:
  (tmp_path / "sequences.txt").write_text(sequences)
  (tmp_path / "items.jsonl").write_text(items)
  return tmp_path


ITEMS_1_TO_3 = "".join(f'{{"item_id": {i}}}\n' for i in (1, 2, 3))


@pytest.mark.parametrize("text, line, message", [
    ("1 1 2\n2 2 x\n", 2, "non-integer id 'x'"),
    ("1 1 2\n2 2.5\n", 2, "non-integer id '2.5'"),
    ("1 1 2\n\n3\n", 3, "user 3 has no items"),
    ("1 1 2\n2 3\n1 3\n", 3, "duplicate user id 1 (first on line 1)"),
    ("1 1 2\n2 3 -1\n", 2, "negative item id -1"),
    ("1 1 2\n2 3 1 7 9\n", 2, "user 2: unknown item id 7"),
])
def test_bad_sequences(tmp_path, text, line, message):
  folder = _folder(tmp_path, text, ITEMS_1_TO_3)
  with pytest.raises(DataError) as e:
    read_dataset(folder)
  assert str(e.value).startswith(f"{folder / 'sequences.txt'}:{line}: ")
  assert message in str(e.value)
  assert e.value.line == line


def test_unknown_items_allowed_without_check(tmp_path):
  folder = _folder(tmp_path, "1 1 7\n", ITEMS_1_TO_3)
  assert read_dataset(folder, check_items=False).sequences.items.tolist() == [1, 7]


@pytest.mark.parametrize("text, line, message", [
    ('{"item_id": 1}\n{"item_id": 2, "title": "x"\n', 2, "bad JSON"),
    ('{"item_id": 1}\n\n{"title": "x"}\n', 3, "missing required key 'item_id'"),
    ('{"item_id": "1"}\n', 1, "item_id must be an integer, got '1'"),
    ('{"item_id": 1.5}\n', 1, "item_id must be an integer"),
    ('{"item_id": true}\n', 1, "item_id must be an integer"),
    ('{"item_id": 1}\n{"item_id": 2}\n{"item_id": 1}\n', 3,
     "duplicate item_id 1 (first on line 1)"),
    ('[1, 2]\n', 1, "expected a JSON object"),
])
def test_bad_items(tmp_path, text, line, message):
  (tmp_path / "items.jsonl").write_text(text)
  with pytest.raises(DataError) as e:
    read_items_jsonl(tmp_path / "items.jsonl")
  assert str(e.value).startswith(f"{tmp_path / 'items.jsonl'}:{line}: ")
  assert message in str(e.value)


def test_not_utf8_names_line(tmp_path):
  (tmp_path / "sequences.txt").write_bytes(b"1 1\n2 \xff\n")
  with pytest.raises(DataError, match=r"sequences.txt:2: not UTF-8"):
    read_sequences_txt(tmp_path / "sequences.txt")


def test_missing_required_file(tmp_path):
  (tmp_path / "sequences.txt").write_text("1 1\n")
  with pytest.raises(DataError, match="missing required file items.jsonl"):
    read_dataset(tmp_path)


def _written(tmp_path: pathlib.Path) -> pathlib.Path:
  write_dataset(tmp_path / "ds", _rich_dataset())
  return tmp_path / "ds"


def test_nan_embeddings_name_the_file_and_item(tmp_path):
  folder = _written(tmp_path)
  emb = np.load(folder / "embeddings" / "text.npy")
  emb[2, 1] = np.nan
  np.save(folder / "embeddings" / "text.npy", emb)
  with pytest.raises(DataError) as e:
    read_dataset(folder)
  assert str(e.value).startswith(f"{folder / 'embeddings' / 'text.npy'}: NaN")
  assert "row 2 (item id 9)" in str(e.value)


def test_embedding_row_count_mismatch(tmp_path):
  folder = _written(tmp_path)
  np.save(folder / "embeddings" / "text.npy", np.zeros((3, 3), np.float32))
  with pytest.raises(DataError, match=r"text.npy: shape \(3, 3\), expected \(4, d\)"):
    read_dataset(folder)


def test_event_arrays_must_match_sequences(tmp_path):
  folder = _written(tmp_path)
  with np.load(folder / "events.npz") as z:
    arrays = {k: z[k] for k in z.files}
  arrays["timestamps"] = arrays["timestamps"][:-1]
  np.savez(folder / "events.npz", **arrays)
  with pytest.raises(DataError, match=r"events.npz: 'timestamps' has shape \(5,\), but "
                                      r"sequences.txt has 6 events"):
    read_dataset(folder)


def test_edited_sequences_are_caught_by_the_digest(tmp_path):
  folder = _written(tmp_path)
  # Same number of users and events, items swapped: only the digest can tell.
  (folder / "sequences.txt").write_text("7 3 5 5\n2 9\n11 1 3\n")
  with pytest.raises(DataError, match="events.npz: does not match sequences.txt"):
    read_dataset(folder)


def test_manifest_counts_must_match(tmp_path):
  plain = Dataset(name="plain", catalog=Catalog(item_ids=[1, 2]),
                  sequences=Sequences.from_lists([1, 2], [[2, 1], [1]]))
  write_dataset(tmp_path, plain)
  (tmp_path / "sequences.txt").write_text("1 2 1\n")
  with pytest.raises(DataError, match="manifest.json: counts say users = 2, the files hold 1"):
    read_dataset(tmp_path)


def test_bad_manifest_json(tmp_path):
  folder = _written(tmp_path)
  (folder / "manifest.json").write_text('{"stage": "dataset",\n  oops}\n')
  with pytest.raises(DataError, match=r"manifest.json:2: invalid JSON"):
    read_dataset(folder)


def test_unknown_array_in_events(tmp_path):
  folder = _written(tmp_path)
  with np.load(folder / "events.npz") as z:
    arrays = {k: z[k] for k in z.files}
  np.savez(folder / "events.npz", **arrays, weights=np.zeros(6))
  with pytest.raises(DataError, match="events.npz: unknown array 'weights'"):
    read_dataset(folder)


# ------------------------------------------------------------------------------------------
# Writes never leave something that looks complete


def _nothing_written(folder: pathlib.Path) -> bool:
  return not folder.exists() or not any(folder.iterdir())


@pytest.mark.parametrize("make, message", [
    (lambda: Dataset("d", Catalog(item_ids=[1]), Sequences.from_lists([1], [[1, 2]])),
     "unknown item id 2"),
    (lambda: Dataset("d", Catalog(item_ids=[1]), Sequences.from_lists([1, 2], [[1], []])),
     "users \\[2\\] have no events"),
    (lambda: Dataset("d", Catalog(item_ids=[1], fields={"x": [object()]}),
                     Sequences.from_lists([1], [[1]])), "item 1: a field value cannot"),
    (lambda: Dataset("d", Catalog(item_ids=[1], embeddings={"a/b": np.ones((1, 2))}),
                     Sequences.from_lists([1], [[1]])), "modality 'a/b'"),
])
def test_invalid_dataset_writes_nothing(tmp_path, make, message):
  with pytest.raises(DataError, match=message):
    write_dataset(tmp_path / "ds", make())
  assert _nothing_written(tmp_path / "ds")


def _fail_on(monkeypatch, name: str) -> None:
  """Makes the atomic write of file `name` fail, as a full disk would."""
  real = artifacts.atomic_write_bytes

  def flaky(path, data):
    if pathlib.Path(path).name == name:
      raise OSError(28, "No space left on device")
    real(path, data)
  monkeypatch.setattr(artifacts, "atomic_write_bytes", flaky)


@pytest.mark.parametrize("failing", ["items.jsonl", "text.npy", "events.npz", "sequences.txt"])
def test_interrupted_write_is_not_complete(tmp_path, monkeypatch, failing):
  _fail_on(monkeypatch, failing)
  with pytest.raises(OSError):
    write_dataset(tmp_path, _rich_dataset())
  assert not (tmp_path / "sequences.txt").exists()
  assert not (tmp_path / "manifest.json").exists()
  assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
  with pytest.raises(DataError, match="did not finish"):
    read_dataset(tmp_path)


def test_interrupted_overwrite_drops_the_old_manifest(tmp_path, monkeypatch):
  write_dataset(tmp_path, _rich_dataset())
  _fail_on(monkeypatch, "manifest.json")
  with pytest.raises(OSError):
    write_dataset(tmp_path, _rich_dataset())
  assert not (tmp_path / "manifest.json").exists()
  with pytest.raises(DataError, match="did not finish"):
    read_dataset(tmp_path)
  monkeypatch.undo()
  write_dataset(tmp_path, _rich_dataset())  # a later complete write clears the marker
  assert not (tmp_path / layout.INCOMPLETE).exists()
  _assert_same_dataset(_rich_dataset(), read_dataset(tmp_path))


def test_format_sequences_matches_reader():
  seqs = Sequences.from_lists([3, 1], [[4, 4, 2], [9]])
  text = layout.format_sequences_txt(seqs)
  assert text == "3 4 4 2\n1 9\n"
  moved = Sequences.from_lists([3, 1], [[4, 4], [2, 9]])  # same ids, other boundaries
  assert layout.sequences_digest(seqs) != layout.sequences_digest(moved)
  assert layout.sequences_digest(seqs) == layout.sequences_digest(
      Sequences.from_lists([3, 1], [[4, 4, 2], [9]]))
