"""Reader for the raw Amazon 2014 review dumps (McAuley et al., UCSD).

Files (gzip or plain), one Python literal dict per line (not JSON: single quotes):

  reviews_<Cat>_5.json.gz  {'reviewerID': 'A2...', 'asin': 'B00...', 'overall': 5.0,
                            'unixReviewTime': 1364688000, 'reviewText': ..., ...}
  meta_<Cat>.json.gz       {'asin': ..., 'title': ..., 'brand': ..., 'price': ...,
                            'categories': [['Beauty', 'Makeup', 'Nails'], ...], ...}

`read_amazon_2014` follows the S3-Rec preprocessing (RUCAIBox/CIKM2020-S3Rec data_process.py),
which TIGER, P5 and the `../shared/data/amazon_*` datasets use:

- every review counts as an interaction: repeated (user, item) reviews are kept, in time order
  (`duplicates="first"` keeps only the earliest instead);
- the iterative k-core filter: users and items with fewer than `min_count` interactions are
  removed, repeatedly, until none is left (the result, the maximal k-core, does not depend on
  the order of removal);
- each user's events are sorted by `unixReviewTime` (day resolution); ties keep file order;
- ids are remapped to 1-based ints: users in order of their first review in the file; items in
  order of first appearance when walking the users in that order, each through their sorted
  events (so user 1's first item is item 1).
"""

from __future__ import annotations

import ast
import collections
import gzip
import html
import json
import os
import pathlib
import re
from typing import Any, Iterator, Literal

import numpy as np

from lrm.core.errors import DataError
from lrm.data.types import Catalog, Dataset, Sequences

_REQUIRED_REVIEW_KEYS = ("reviewerID", "asin", "overall", "unixReviewTime")
# The dumps write `asin` first; matching it lets the meta reader skip items it does not need
# without parsing the whole line.
_LEADING_ASIN = re.compile(r"""^\{\s*['"]asin['"]\s*:\s*['"]([^'"\\]*)['"]""")
# The review lines' fixed key order lets the four fields we need be read without parsing the
# review text (5x faster). Used only where each key occurs once in the line, so text that
# happens to contain `'overall': ` cannot fool it; other lines are parsed in full.
_REVIEW_FIELDS = re.compile(
    r"^\{'reviewerID': '([^'\\]+)', 'asin': '([^'\\]+)', .*"
    r"'overall': (\d+(?:\.\d*)?), 'summary': .*"
    r"'unixReviewTime': (\d+), 'reviewTime': '[^'\\]*'\}$", re.DOTALL)


def read_amazon_2014(reviews_path: str | os.PathLike, meta_path: str | os.PathLike | None,
                     *, min_count: int = 5, duplicates: Literal["keep", "first"] = "keep",
                     top_category: str | None = None, name: str | None = None) -> Dataset:
  """Reads a reviews dump and its metadata into a Dataset (see the module docstring).

  Args:
    reviews_path: `reviews_<Cat>_5.json.gz` (or the full `reviews_<Cat>.json.gz`).
    meta_path: `meta_<Cat>.json.gz`, or None for a catalog of ASINs only.
    min_count: k of the k-core filter (users and items); 1 disables it.
    duplicates: "keep" every review of a (user, item) pair (S3-Rec), or "first" only.
    top_category: the category dropped from the front of each category path; default: the
      most common first element of the kept items' paths (e.g. "Beauty").
    name: the dataset's name; default from the file name (`reviews_Beauty_5` -> `Beauty`).

  Returns:
    Dataset with catalog fields asin, title, brand, price, categories (category paths
    flattened, the top category dropped, de-duplicated, coarse to fine) and category_paths;
    events with timestamps (unix seconds) and a `rating` signal. Items missing from the
    metadata get None for every field but asin.
  """
  if min_count < 1:
    raise ValueError(f"min_count must be >= 1, got {min_count}")
  if duplicates not in ("keep", "first"):
    raise ValueError(f"duplicates must be 'keep' or 'first', got {duplicates!r}")
  reviews = _read_reviews(reviews_path)
  keep = np.ones(len(reviews.user), dtype=bool)
  if duplicates == "first":
    keep = _first_of_each_pair(reviews)
  keep = k_core_mask(reviews.user, reviews.item, min_count, keep=keep)
  sequences, item_codes = _sequences(reviews, keep)
  asins = [reviews.asins[c] for c in item_codes]
  meta = _read_meta(meta_path, set(asins)) if meta_path is not None else {}
  catalog = _catalog(asins, meta, top_category)
  if name is None:
    name = re.sub(r"^reviews_|(_5)?(\.json)?(\.gz)?$", "", pathlib.Path(reviews_path).name)
  return Dataset(name=name, catalog=catalog, sequences=sequences, meta={
      "source": "amazon_2014", "reviews": pathlib.Path(reviews_path).name,
      "meta": None if meta_path is None else pathlib.Path(meta_path).name,
      "min_count": min_count, "duplicates": duplicates,
      "items_without_meta": sum(a not in meta for a in asins)})


# ------------------------------------------------------------------------------------------
# Reviews


class _Reviews:
  """Reviews as parallel arrays; users and items coded in order of first appearance."""

  def __init__(self, user, item, time, rating, user_keys, asins):
    self.user: np.ndarray = user  # int64 [n] codes into user_keys
    self.item: np.ndarray = item  # int64 [n] codes into asins
    self.time: np.ndarray = time  # int64 [n] unixReviewTime
    self.rating: np.ndarray = rating  # float32 [n] overall
    self.user_keys: list[str] = user_keys
    self.asins: list[str] = asins


def _read_reviews(path: str | os.PathLike) -> _Reviews:
  user_code: dict[str, int] = {}
  item_code: dict[str, int] = {}
  users, items, times, ratings = [], [], [], []
  for lineno, record in iter_literal_records(path, fast=_review_fields):
    for key in _REQUIRED_REVIEW_KEYS:
      if key not in record:
        raise DataError(f"missing required key '{key}'", path=path, line=lineno)
    user, asin = record["reviewerID"], record["asin"]
    if not isinstance(user, str) or not isinstance(asin, str) or not user or not asin:
      raise DataError("reviewerID and asin must be non-empty strings", path=path, line=lineno)
    time, rating = record["unixReviewTime"], record["overall"]
    if isinstance(time, bool) or not isinstance(time, int):
      raise DataError(f"unixReviewTime must be an integer, got {time!r}", path=path, line=lineno)
    if isinstance(rating, bool) or not isinstance(rating, (int, float)):
      raise DataError(f"overall must be a number, got {rating!r}", path=path, line=lineno)
    users.append(user_code.setdefault(user, len(user_code)))
    items.append(item_code.setdefault(asin, len(item_code)))
    times.append(time)
    ratings.append(rating)
  return _Reviews(np.array(users, np.int64), np.array(items, np.int64), np.array(times, np.int64),
                  np.array(ratings, np.float32), list(user_code), list(item_code))


def _review_fields(line: str) -> dict[str, Any] | None:
  """The fields we need from a standard review line, or None to parse the line in full."""
  if line.count("'overall': ") != 1 or line.count("'unixReviewTime': ") != 1:
    return None
  m = _REVIEW_FIELDS.match(line)
  if m is None:
    return None
  return {"reviewerID": m.group(1), "asin": m.group(2), "overall": float(m.group(3)),
          "unixReviewTime": int(m.group(4))}


def _first_of_each_pair(reviews: _Reviews) -> np.ndarray:
  """Mask keeping each (user, item) pair's earliest review (ties: the first in the file)."""
  order = np.lexsort((np.arange(len(reviews.time)), reviews.time, reviews.item, reviews.user))
  pair = reviews.user[order] * (len(reviews.asins) + 1) + reviews.item[order]
  first = np.ones(len(order), dtype=bool)
  first[1:] = pair[1:] != pair[:-1]
  keep = np.zeros(len(order), dtype=bool)
  keep[order[first]] = True
  return keep


def k_core_mask(users: np.ndarray, items: np.ndarray, min_count: int, *,
                keep: np.ndarray | None = None) -> np.ndarray:
  """Mask of the interactions in the maximal k-core: every user and item has >= min_count.

  Removes all users and items below min_count at once, recounts, and repeats until stable.
  Shape: users, items int [n] (non-negative codes); returns bool [n].
  """
  alive = np.ones(len(users), dtype=bool) if keep is None else keep.copy()
  num_users = int(users.max()) + 1 if len(users) else 0
  num_items = int(items.max()) + 1 if len(items) else 0
  while True:
    user_count = np.bincount(users[alive], minlength=num_users)
    item_count = np.bincount(items[alive], minlength=num_items)
    below = alive & ((user_count[users] < min_count) | (item_count[items] < min_count))
    if not below.any():
      return alive
    alive &= ~below


def _sequences(reviews: _Reviews, keep: np.ndarray) -> tuple[Sequences, np.ndarray]:
  """Sorted per-user sequences with 1-based ids; also the item code of each new id - 1."""
  rows = np.flatnonzero(keep)
  # Users by first review in the file (their code), then time, then file order.
  rows = rows[np.lexsort((rows, reviews.time[rows], reviews.user[rows]))]
  user_codes, starts = np.unique(reviews.user[rows], return_index=True)
  item_codes_flat = reviews.item[rows]
  uniq, first = np.unique(item_codes_flat, return_index=True)
  item_codes = uniq[np.argsort(first)]  # new id - 1 -> item code
  new_id = np.empty(len(reviews.asins), dtype=np.int64)
  new_id[item_codes] = np.arange(1, len(item_codes) + 1)
  offsets = np.append(starts, len(rows)).astype(np.int64)
  sequences = Sequences(
      user_ids=np.arange(1, len(user_codes) + 1), offsets=offsets,
      items=new_id[item_codes_flat], timestamps=reviews.time[rows].astype(np.float64),
      signals={"rating": reviews.rating[rows]})
  return sequences, item_codes


# ------------------------------------------------------------------------------------------
# Metadata


def _read_meta(path: str | os.PathLike, wanted: set[str]) -> dict[str, dict[str, Any]]:
  """asin -> metadata record, for the `wanted` asins only."""
  found: dict[str, dict[str, Any]] = {}
  line_of: dict[str, int] = {}
  for lineno, record in iter_literal_records(path, skip=_skip_unwanted(wanted)):
    asin = record.get("asin")
    if not isinstance(asin, str):
      raise DataError("missing required key 'asin'" if asin is None else
                      f"asin must be a string, got {asin!r}", path=path, line=lineno)
    if asin not in wanted:
      continue
    if asin in found:
      raise DataError(f"duplicate asin {asin} (first on line {line_of[asin]})", path=path,
                      line=lineno)
    found[asin] = record
    line_of[asin] = lineno
  return found


def _skip_unwanted(wanted: set[str]):
  def skip(line: str) -> bool:
    m = _LEADING_ASIN.match(line)
    return m is not None and m.group(1) not in wanted
  return skip


def _catalog(asins: list[str], meta: dict[str, dict[str, Any]],
             top_category: str | None) -> Catalog:
  paths = [_category_paths(meta[a]) if a in meta else None for a in asins]
  if top_category is None:
    roots = collections.Counter(p[0] for ps in paths if ps for p in ps if p)
    top_category = roots.most_common(1)[0][0] if roots else None
  fields = {
      "asin": asins,
      "title": [_text(meta[a].get("title")) if a in meta else None for a in asins],
      "brand": [_text(meta[a].get("brand")) if a in meta else None for a in asins],
      "price": [_price(meta[a].get("price")) if a in meta else None for a in asins],
      "categories": [None if ps is None else flatten_categories(ps, top_category)
                     for ps in paths],
      "category_paths": paths,
  }
  return Catalog(item_ids=np.arange(1, len(asins) + 1), fields=fields)


def _category_paths(record: dict[str, Any]) -> list[list[str]]:
  raw = record.get("categories") or []
  return [[html.unescape(str(c)) for c in path] for path in raw if isinstance(path, (list, tuple))]


def flatten_categories(paths: list[list[str]], top_category: str | None) -> list[str]:
  """Category names of all paths, coarse to fine, each once; `top_category` dropped.

  `[['Beauty', 'Makeup', 'Nails'], ['Beauty', 'Makeup', 'Eyes']]` -> `['Makeup', 'Nails', 'Eyes']`.
  """
  out: dict[str, None] = {}
  for path in paths:
    start = 1 if path and path[0] == top_category else 0
    out.update(dict.fromkeys(path[start:]))
  return list(out)


def _text(value: Any) -> str | None:
  """HTML-unescaped, stripped text; None for missing or empty values."""
  if value is None:
    return None
  text = html.unescape(str(value)).strip()
  return text or None


def _price(value: Any) -> float | None:
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value)


# ------------------------------------------------------------------------------------------
# Python-literal line files


def iter_literal_records(path: str | os.PathLike, *, skip=None,
                         fast=None) -> Iterator[tuple[int, dict]]:
  """Yields (line number, dict) for each non-blank line of a Python-literal (or JSON) dump.

  Reads gzip or plain text. `skip(line)` may return True to pass over a line unparsed;
  `fast(line)` may return the record (or the part of it needed) without a full parse, or None.
  Raises DataError naming the file and line for undecodable or malformed lines.
  """
  path = pathlib.Path(path)
  try:
    with open(path, "rb") as f:
      gzipped = f.read(2) == b"\x1f\x8b"
    f = gzip.open(path, "rb") if gzipped else open(path, "rb")
  except OSError as e:
    raise DataError(f"cannot read: {e.strerror}", path=path) from None
  with f:
    lineno = 0
    while True:
      try:
        raw = f.readline()
      except (OSError, EOFError) as e:  # truncated or corrupt gzip
        raise DataError(f"cannot read: {e}", path=path, line=lineno + 1) from None
      if not raw:
        return
      lineno += 1
      try:
        line = raw.decode("utf-8").strip()
      except UnicodeDecodeError as e:
        raise DataError(f"not UTF-8: {e.reason} at byte {e.start}", path=path,
                        line=lineno) from None
      if not line or (skip is not None and skip(line)):
        continue
      record = fast(line) if fast is not None else None
      yield lineno, record if record is not None else _parse_literal(line, path, lineno)


def _parse_literal(line: str, path: pathlib.Path, lineno: int) -> dict:
  try:
    record = ast.literal_eval(line)
  except (ValueError, SyntaxError, MemoryError, RecursionError) as e:
    try:  # the strict-JSON versions of the dumps use true/false/null
      record = json.loads(line)
    except ValueError:
      msg = e.msg if isinstance(e, SyntaxError) else str(e)
      raise DataError(f"not a Python literal or JSON object: {msg}", path=path,
                      line=lineno) from None
  if not isinstance(record, dict):
    raise DataError(f"expected a dict, got {type(record).__name__}", path=path, line=lineno)
  return record
