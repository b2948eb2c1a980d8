"""The raw Amazon 2014 reader, on small dumps written here in the real format."""

from __future__ import annotations

import gzip
import pathlib

import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.data.amazon import flatten_categories, k_core_mask, read_amazon_2014
from lrm.data.layout import read_dataset, write_dataset

DAY = 86_400
P1, P2, P3, P4, P5 = "B000000001", "B000000002", "B000000003", "B000000004", "B000000005"
X, Y = "B00000000X", "B00000000Y"

# (reviewer, asin, overall, day), in file order. The 5-core cascade: Y has 4 reviews and W 3
# (both out at once); without Y, V has 4 (out next); without V, X has 4 (out last). A1 reviews
# P1 twice. A2's P4 and P3 share a day (file order P4 first). A5's lines are in reverse time.
REVIEWS = [
    ("A2", P5, 5.0, 9), ("W", P1, 3.0, 1), ("A1", P2, 4.0, 2), ("A1", P1, 5.0, 1),
    ("V", Y, 1.0, 3), ("A1", P1, 2.0, 7), ("A3", P1, 5.0, 1), ("A2", P4, 4.0, 5),
    ("A2", P3, 3.0, 5), ("A2", P2, 2.0, 2), ("A2", P1, 1.0, 1), ("A1", P3, 3.0, 3),
    ("A1", P4, 4.0, 4), ("A1", P5, 5.0, 5), ("A1", X, 1.0, 6), ("A1", Y, 1.0, 6),
    ("A2", X, 1.0, 6), ("A2", Y, 1.0, 8), ("A3", P2, 4.0, 2), ("A3", P3, 3.0, 3),
    ("A3", P4, 2.0, 4), ("A3", P5, 1.0, 5), ("A3", X, 1.0, 6), ("A3", Y, 1.0, 6),
    ("A4", P1, 1.0, 1), ("A4", P2, 2.0, 2), ("A4", P3, 3.0, 3), ("A4", P4, 4.0, 4),
    ("A4", P5, 5.0, 5), ("A4", X, 1.0, 6), ("A5", P5, 5.0, 5), ("A5", P4, 4.0, 4),
    ("A5", P3, 3.0, 3), ("A5", P2, 2.0, 2), ("A5", P1, 1.0, 1), ("V", X, 1.0, 2),
    ("V", P1, 1.0, 1), ("V", P2, 1.0, 4), ("V", P3, 1.0, 5), ("W", P2, 2.0, 2),
    ("W", P3, 3.0, 3),
]

META = [
    {"asin": P1, "title": "Nail Polish &amp; Top Coat &quot;Red&quot;", "price": 7.5,
     "imUrl": "http://ecx.images-amazon.com/images/I/1.jpg",
     "related": {"also_bought": [P2, P3], "bought_together": [P2]},
     "salesRank": {"Beauty": 1234}, "brand": "OPI",
     "categories": [["Beauty", "Makeup", "Nails"], ["Beauty", "Makeup", "Nails", "Nail Polish"]]},
    {"asin": X, "title": "Removed by the 5-core", "categories": [["Beauty"]]},
    {"asin": P2, "brand": "Revlon", "categories": [["Beauty", "Skin Care"]]},  # no title
    # The asin is not the first key: this line must be parsed, not skipped.
    {"title": "Face Cream", "asin": P3,
     "categories": [["Beauty", "Skin Care", "Face"], ["Clothing, Shoes & Jewelry", "Luggage"]]},
    {"asin": "B0NOTREVIEWED", "title": "Never reviewed", "categories": [["Beauty"]]},
    {"asin": P4, "title": "  Brush\u00e9 ", "brand": "", "categories": [["Beauty"]]},
    # P5 has no metadata line at all.
]


def _review_line(user, asin, overall, day) -> str:
  record = {"reviewerID": user, "asin": asin, "reviewerName": "J. O'Neil", "helpful": [0, 0],
            "reviewText": "It's \"great\", isn't it?", "overall": overall,
            "summary": "Five Stars", "unixReviewTime": day * DAY, "reviewTime": "03 31, 2013"}
  return repr(record)  # the dumps are Python reprs: single quotes where possible


def _write_gz(path: pathlib.Path, lines: list[str]) -> pathlib.Path:
  with gzip.open(path, "wt", encoding="utf-8") as f:
    f.write("".join(line + "\n" for line in lines))
  return path


@pytest.fixture
def fake_dump(tmp_path):
  reviews = _write_gz(tmp_path / "reviews_Fake_5.json.gz", [_review_line(*r) for r in REVIEWS])
  meta = _write_gz(tmp_path / "meta_Fake.json.gz", [repr(m) for m in META])
  return reviews, meta


def test_fixture_is_in_the_raw_format(fake_dump):
  reviews, meta = fake_dump
  with gzip.open(reviews, "rt") as f:
    first = f.readline()
  assert first.startswith("{'reviewerID': 'A2', 'asin': 'B000000005', 'reviewerName': ")
  with gzip.open(meta, "rt") as f:
    assert f.readline().startswith("{'asin': 'B000000001', 'title': 'Nail Polish &amp;")


def test_five_core_order_and_ids(fake_dump):
  dataset = read_amazon_2014(*fake_dump)
  seqs = dataset.sequences
  assert dataset.name == "Fake"
  # Users by first review in the file: A2, (W out), A1, (V out), A3, A4, A5.
  np.testing.assert_array_equal(seqs.user_ids, [1, 2, 3, 4, 5])
  # Items by first appearance walking users in that order, chronologically: user 1 (A2) sees
  # P1, P2, P4, P3 (same day as P4, later in the file), P5.
  assert [s.tolist() for s in seqs] == [
      [1, 2, 3, 4, 5],        # A2
      [1, 2, 4, 3, 5, 1],     # A1: the repeated P1 review is kept, in time order
      [1, 2, 4, 3, 5],        # A3
      [1, 2, 4, 3, 5],        # A4
      [1, 2, 4, 3, 5],        # A5 (file order was reversed)
  ]
  assert dataset.catalog.fields["asin"] == [P1, P2, P4, P3, P5]
  np.testing.assert_array_equal(seqs.timestamps[:5], np.array([1, 2, 5, 5, 9]) * DAY)
  np.testing.assert_array_equal(seqs.signals["rating"][:11],
                                [1, 2, 4, 3, 5, 5, 4, 3, 4, 5, 2])
  assert dataset.meta["min_count"] == 5 and dataset.meta["duplicates"] == "keep"


def test_catalog_fields(fake_dump):
  fields = read_amazon_2014(*fake_dump).catalog.fields
  np.testing.assert_array_equal(read_amazon_2014(*fake_dump).catalog.item_ids, [1, 2, 3, 4, 5])
  assert fields["title"] == ['Nail Polish & Top Coat "Red"', None, "Brush\u00e9", "Face Cream",
                             None]
  assert fields["brand"] == ["OPI", "Revlon", None, None, None]
  assert fields["price"] == [7.5, None, None, None, None]
  assert fields["categories"] == [
      ["Makeup", "Nails", "Nail Polish"], ["Skin Care"], [],
      ["Skin Care", "Face", "Clothing, Shoes & Jewelry", "Luggage"], None]
  assert fields["category_paths"][3] == [["Beauty", "Skin Care", "Face"],
                                         ["Clothing, Shoes & Jewelry", "Luggage"]]
  assert fields["category_paths"][4] is None


def test_a_single_pass_would_not_be_enough(fake_dump):
  """k_core_mask iterates: one pass removes only Y and W; V and X go in later passes."""
  users = np.array([r[0] for r in REVIEWS])
  items = np.array([r[1] for r in REVIEWS])
  _, user_codes = np.unique(users, return_inverse=True)
  _, item_codes = np.unique(items, return_inverse=True)
  keep = k_core_mask(user_codes, item_codes, 5)
  assert set(users[keep]) == {"A1", "A2", "A3", "A4", "A5"}
  assert set(items[keep]) == {P1, P2, P3, P4, P5}
  assert keep.sum() == 26
  # With k = 4, Y (4 reviews) and V (5) survive, and so does X.
  assert set(items[k_core_mask(user_codes, item_codes, 4)]) == {P1, P2, P3, P4, P5, X, Y}


def test_duplicates_first_keeps_the_earliest(fake_dump):
  dataset = read_amazon_2014(*fake_dump, duplicates="first")
  assert dataset.sequences.user(1).tolist() == [1, 2, 4, 3, 5]
  assert dataset.sequences.signals["rating"][5] == 5.0  # A1's first P1 review, day 1


def test_min_count_one_keeps_everyone(fake_dump):
  dataset = read_amazon_2014(*fake_dump, min_count=1)
  assert len(dataset.sequences) == 7 and len(dataset.catalog) == 7
  assert dataset.sequences.num_events == len(REVIEWS)


def test_without_meta(fake_dump):
  dataset = read_amazon_2014(fake_dump[0], None)
  assert dataset.catalog.fields["asin"] == [P1, P2, P4, P3, P5]
  assert dataset.catalog.fields["title"] == [None] * 5


def test_plain_text_dump_and_write_through_layout(fake_dump, tmp_path):
  plain = tmp_path / "reviews_Plain.json"
  plain.write_text(gzip.open(fake_dump[0], "rt").read())
  dataset = read_amazon_2014(plain, fake_dump[1])
  assert dataset.name == "Plain"
  write_dataset(tmp_path / "out", dataset)
  again = read_dataset(tmp_path / "out")
  assert again.name == "Plain"
  assert [s.tolist() for s in again.sequences] == [s.tolist() for s in dataset.sequences]
  np.testing.assert_array_equal(again.sequences.timestamps, dataset.sequences.timestamps)
  np.testing.assert_array_equal(again.sequences.signals["rating"],
                                dataset.sequences.signals["rating"])
  assert again.catalog.fields == dataset.catalog.fields
  assert again.meta == dataset.meta


def test_flatten_categories():
  paths = [["Beauty", "Makeup", "Nails"], ["Beauty", "Makeup", "Eyes"], ["Other", "Makeup"]]
  assert flatten_categories(paths, "Beauty") == ["Makeup", "Nails", "Eyes", "Other"]
  assert flatten_categories(paths, None) == ["Beauty", "Makeup", "Nails", "Eyes", "Other"]


@pytest.mark.parametrize("bad_line, message", [
    ("{'reviewerID': 'A1', 'asin': ", "not a Python literal or JSON object"),
    ("{'reviewerID': 'A1', 'overall': 5.0, 'unixReviewTime': 1}", "missing required key 'asin'"),
    ("{'reviewerID': 'A1', 'asin': 'B1', 'overall': 5.0, 'unixReviewTime': '1'}",
     "unixReviewTime must be an integer"),
    ("['A1', 'B1']", "expected a dict, got list"),
    ("{'reviewerID': 'A1', 'asin': 'B1', 'overall': 5.0, 'unixReviewTime': __import__('os')}",
     "not a Python literal"),
])
def test_bad_review_lines_name_file_and_line(tmp_path, bad_line, message):
  lines = [_review_line(*r) for r in REVIEWS[:3]]
  lines.insert(2, bad_line)
  path = _write_gz(tmp_path / "reviews_Bad_5.json.gz", lines)
  with pytest.raises(DataError) as e:
    read_amazon_2014(path, None)
  assert str(e.value).startswith(f"{path}:3: ")
  assert message in str(e.value)


def test_bad_meta_line_names_file_and_line(fake_dump, tmp_path):
  meta = _write_gz(tmp_path / "meta_Bad.json.gz",
                   [repr(META[0]), "{'title': 'no asin here'}", repr(META[2])])
  with pytest.raises(DataError, match=rf"{meta}:2: missing required key 'asin'"):
    read_amazon_2014(fake_dump[0], meta)


def test_duplicate_meta_asin(fake_dump, tmp_path):
  meta = _write_gz(tmp_path / "meta_Dup.json.gz", [repr(META[0]), repr(META[2]), repr(META[0])])
  with pytest.raises(DataError, match=rf"{meta}:3: duplicate asin {P1} \(first on line 1\)"):
    read_amazon_2014(fake_dump[0], meta)


def test_truncated_gzip(fake_dump, tmp_path):
  data = fake_dump[0].read_bytes()
  cut = tmp_path / "reviews_Cut_5.json.gz"
  cut.write_bytes(data[:len(data) // 2])
  with pytest.raises(DataError, match=rf"{cut}:\d+: cannot read"):
    read_amazon_2014(cut, None)


def test_review_fast_path_agrees_with_full_parse(tmp_path):
  from lrm.data.amazon import _review_fields
  line = _review_line("A1", P1, 4.0, 3)
  assert _review_fields(line) == {"reviewerID": "A1", "asin": P1, "overall": 4.0,
                                  "unixReviewTime": 3 * DAY}
  # Text that mimics the keys must not fool it: such lines are parsed in full.
  record = {"reviewerID": "A9", "asin": P2, "reviewText": "'overall': 1.0, 'summary': ",
            "overall": 5.0, "summary": "ok", "unixReviewTime": 7, "reviewTime": "x"}
  assert _review_fields(repr(record)) is None
  path = _write_gz(tmp_path / "reviews_Tricky_5.json.gz", [repr(record)])
  dataset = read_amazon_2014(path, None, min_count=1)
  assert dataset.sequences.signals["rating"].tolist() == [5.0]
  assert dataset.sequences.timestamps.tolist() == [7.0]
