"""TFDS builders: ArrayRecord written from each source, info, parts, rebuilds, bad input."""

from __future__ import annotations

import gzip
import hashlib
import json
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds

from lrm.core.errors import DataError
from lrm.data.amazon import read_amazon_2014
from lrm.data.layout import read_dataset, write_dataset
from lrm.data.movielens import ML100K_GENRES, read_movielens
from lrm.data.tfds import build_tfds, load_tfds
from lrm.data.tfds.builders import safe_dataset_name, split_into_parts

from tests.data.tfds.tiny import assert_same_dataset, tiny_dataset


def test_layout_builds_array_record_with_version_checksums_and_order(tiny_layout, tmp_path):
  out = tmp_path / "tfds"
  name, dataset = build_tfds(out, "layout", path=tiny_layout)
  assert name == "lrm_layout/tiny_set"
  assert "tensorflow" not in sys.modules  # TFDS wrote it without TensorFlow
  builder = tfds.builder(f"{name}-users", data_dir=out)
  info = builder.info
  assert str(info.version) == "1.0.0" and info.disable_shuffling
  assert info.file_format.value == "array_record"
  files = sorted(p.name for p in (out / "lrm_layout" / "tiny_set-users" / "1.0.0").iterdir())
  assert any(f.startswith("lrm_layout-part0.array_record-") for f in files)
  sequences_txt = (tiny_layout / "sequences.txt").read_bytes()
  assert info.metadata["source_files"]["sequences.txt"] == {
      "bytes": len(sequences_txt), "sha256": hashlib.sha256(sequences_txt).hexdigest()}
  # Records come back in the written order: sequences order for users.
  source = builder.as_data_source(split="part0")
  assert [int(source[i]["user_id"]) for i in range(len(source))] == list(
      dataset.sequences.user_ids)


def test_round_trip_equals_the_layout_reader(tiny_layout, tmp_path):
  name, _ = build_tfds(tmp_path / "tfds", "layout", path=tiny_layout)
  assert_same_dataset(load_tfds(name, tmp_path / "tfds"), read_dataset(tiny_layout))
  # The builder may be left out of the name when one builder holds the dataset.
  assert_same_dataset(load_tfds("tiny_set", tmp_path / "tfds"), read_dataset(tiny_layout))


def test_small_parts_keep_order_and_round_trip(tiny_layout, tmp_path):
  name, _ = build_tfds(tmp_path / "tfds", "layout", path=tiny_layout, max_part_bytes=200)
  splits = tfds.builder(f"{name}-users", data_dir=tmp_path / "tfds").info.splits
  assert len(splits) > 2 and sorted(splits) == sorted(f"part{k}" for k in range(len(splits)))
  assert_same_dataset(load_tfds(name, tmp_path / "tfds"), read_dataset(tiny_layout))


def test_split_into_parts():
  assert split_into_parts(np.array([5, 5, 5, 20, 1]), 10) == [(0, 2), (2, 3), (3, 4), (4, 5)]
  assert split_into_parts(np.array([3]), 1) == [(0, 1)]
  with pytest.raises(DataError, match="nothing to write"):
    split_into_parts(np.zeros(0, np.int64), 10)


def test_unchanged_source_is_kept_and_a_changed_one_rebuilt(tiny_layout, tmp_path):
  out = tmp_path / "tfds"
  name, _ = build_tfds(out, "layout", path=tiny_layout)
  info_path = out / "lrm_layout" / "tiny_set-users" / "1.0.0" / "dataset_info.json"
  written = info_path.stat().st_mtime_ns
  build_tfds(out, "layout", path=tiny_layout)
  assert info_path.stat().st_mtime_ns == written
  smaller = tiny_dataset(num_users=4)
  write_dataset(tiny_layout, smaller)
  build_tfds(out, "layout", path=tiny_layout)
  assert_same_dataset(load_tfds(name, out), read_dataset(tiny_layout))


def test_precomputed_embeddings_become_a_feature(tiny_layout, tmp_path):
  emb = np.arange(18, dtype=np.float32).reshape(6, 3)
  np.save(tmp_path / "visual.npy", emb)
  name, _ = build_tfds(tmp_path / "tfds", "layout", path=tiny_layout, name="with_visual",
                       embeddings={"visual": tmp_path / "visual.npy"})
  assert name == "lrm_layout/with_visual"
  back = load_tfds(name, tmp_path / "tfds")
  np.testing.assert_array_equal(back.catalog.embeddings["visual"], emb)
  assert sorted(back.catalog.embeddings) == ["text", "visual"]


def _flags(*genres: str) -> str:
  return "|".join("1" if g in genres else "0" for g in ML100K_GENRES)


def test_movielens_100k_raw(tmp_path):
  raw = tmp_path / "ml-100k"
  raw.mkdir()
  ratings = [(2, 1, 5, 300), (1, 2, 4, 100), (1, 1, 3, 200), (2, 3, 1, 100)]
  (raw / "u.data").write_text("".join("\t".join(map(str, r)) + "\n" for r in ratings))
  items = [f"1|Toy Story (1995)|01-Jan-1995||url|{_flags('Animation', 'Comedy')}",
           f"2|Misérables, Les (1995)|01-Jan-1995||url|{_flags('Drama')}",
           f"3|unknown||||{_flags('unknown')}"]
  (raw / "u.item").write_bytes("".join(l + "\n" for l in items).encode("latin-1"))
  name, _ = build_tfds(tmp_path / "tfds", "movielens", path=raw)
  assert name == "lrm_movielens/ml_100k"
  assert_same_dataset(load_tfds(name, tmp_path / "tfds"), read_movielens(raw))


def test_amazon_2014_raw(tmp_path):
  day = 86_400
  reviews = [("U1", "P1", 5.0, 2), ("U1", "P2", 4.0, 1), ("U2", "P2", 3.0, 3)]
  lines = [repr({"reviewerID": u, "asin": a, "overall": o, "summary": "s",
                 "unixReviewTime": d * day, "reviewTime": "01 01, 2014"})
           for u, a, o, d in reviews]
  meta = [repr({"asin": "P1", "title": "Nail &amp; Polish", "categories": [["Beauty", "Nails"]]})]
  with gzip.open(tmp_path / "reviews_Fake_5.json.gz", "wt") as f:
    f.write("\n".join(lines) + "\n")
  with gzip.open(tmp_path / "meta_Fake.json.gz", "wt") as f:
    f.write("\n".join(meta) + "\n")
  args = dict(reviews=tmp_path / "reviews_Fake_5.json.gz", meta=tmp_path / "meta_Fake.json.gz",
              min_count=1)
  name, _ = build_tfds(tmp_path / "tfds", "amazon2014", **args)
  assert name == "lrm_amazon2014/fake"
  info = tfds.builder(f"{name}-items", data_dir=tmp_path / "tfds").info
  assert sorted(info.metadata["source_files"]) == ["meta_Fake.json.gz", "reviews_Fake_5.json.gz"]
  want = read_amazon_2014(args["reviews"], args["meta"], min_count=1)
  assert_same_dataset(load_tfds(name, tmp_path / "tfds"), want)


def test_safe_dataset_name():
  assert safe_dataset_name("ml-100k") == "ml_100k"
  assert safe_dataset_name("Amazon Beauty") == "amazon_beauty"
  with pytest.raises(DataError):
    safe_dataset_name("--")


def test_missing_file_is_one_line_naming_it(tiny_layout, tmp_path):
  (tiny_layout / "items.jsonl").unlink()
  with pytest.raises(DataError) as e:
    build_tfds(tmp_path / "tfds", "layout", path=tiny_layout)
  assert "items.jsonl" in str(e.value) and str(tiny_layout) in str(e.value)
  assert "\n" not in str(e.value)
  assert not (tmp_path / "tfds").exists()


def test_malformed_line_names_file_and_line(tiny_layout, tmp_path):
  lines = (tiny_layout / "sequences.txt").read_text().splitlines()
  lines[2] = "12 3 x"
  (tiny_layout / "sequences.txt").write_text("\n".join(lines) + "\n")
  (tiny_layout / "manifest.json").unlink()  # an edited folder from elsewhere: no manifest
  with pytest.raises(DataError, match=r"sequences\.txt:3: non-integer id 'x'$"):
    build_tfds(tmp_path / "tfds", "layout", path=tiny_layout)


def test_unknown_source_and_bad_embeddings(tiny_layout, tmp_path):
  with pytest.raises(DataError, match="no TFDS builder for source 'recbole'"):
    build_tfds(tmp_path / "tfds", "recbole", path=tiny_layout)
  np.save(tmp_path / "short.npy", np.zeros((2, 3), np.float32))
  with pytest.raises(DataError, match="expected"):
    build_tfds(tmp_path / "tfds", "layout", path=tiny_layout,
               embeddings={"short": tmp_path / "short.npy"})


def test_metadata_is_json(tiny_layout, tmp_path):
  name, _ = build_tfds(tmp_path / "tfds", "layout", path=tiny_layout)
  meta = json.loads((tmp_path / "tfds" / "lrm_layout" / "tiny_set-items" / "1.0.0" /
                     "metadata.json").read_text())
  assert meta["part"] == "items" and meta["name"] == "Tiny Set"
  assert meta["counts"] == {"users": 7, "items": 6,
                            "interactions": int(tiny_dataset().sequences.num_events)}
