"""Readers for MovieLens (GroupLens) and for RecBole atomic files (as ML-100k ships in RecBole).

`read_movielens(dir)` detects the format from the files present:

  u.data + u.item             ML-100k: `user\\titem\\trating\\ttimestamp`;
                              `id|Title (Year)|release date|video date|IMDb URL|19 genre flags`
  ratings.dat + movies.dat    ML-1M / ML-10M: `user::movie::rating::timestamp`;
                              `id::Title (Year)::Genre|Genre`
  ratings.csv + movies.csv    ML-20M / 25M / latest: CSV with a header
  <name>.inter (+ .item, .user)  RecBole atomic files (read_recbole_atomic)

Every format gives the same Dataset: items with fields title (the year stripped),
release_year (int or None) and genres (a list; the placeholder genres "unknown" and
"(no genres listed)" are dropped), in the item file's order; users in increasing id order, each
sorted by timestamp with ties kept in file order; timestamps (unix seconds) and a `rating`
signal per event. The GroupLens .dat and u.item files are latin-1.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import pathlib
import re
from typing import Any, Callable, Sequence

import numpy as np

from lrm.core.errors import DataError
from lrm.data.types import Catalog, Dataset, Sequences, UserTable

ML100K_GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
                 "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
                 "Romance", "Sci-Fi", "Thriller", "War", "Western")
# Genre names that mean "no genre".
_NO_GENRE = {"unknown", "(no genres listed)"}
# Titles that mean "no title": ML-100k's movie 267 is `unknown` (`unkonwn` in RecBole's copy).
_NO_TITLE = {"unknown", "unkonwn"}
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})(?:[-–]\d{0,4})?\)\s*$")
_DATE_YEAR = re.compile(r"(\d{4})\s*$")

# RecBole column names -> ours.
RECBOLE_FIELD_NAMES = {"movie_title": "title", "class": "genres", "genre": "genres"}
# token_seq columns that hold running text (RecBole splits it into words): kept as one string.
RECBOLE_TEXT_COLUMNS = {"movie_title", "title", "description", "summary", "review"}


def read_movielens(path: str | os.PathLike, *, name: str | None = None) -> Dataset:
  """Reads a MovieLens directory in any of the formats of the module docstring."""
  directory = pathlib.Path(path)
  present = lambda *names: all((directory / n).is_file() for n in names)
  if present("u.data", "u.item"):
    ratings_path = directory / "u.data"
    events = _read_ratings(ratings_path, _split_on("\t"), encoding="latin-1")
    catalog = _read_ml100k_items(directory / "u.item")
  elif present("ratings.dat", "movies.dat"):
    ratings_path = directory / "ratings.dat"
    events = _read_ratings(ratings_path, _split_on("::"), encoding="latin-1")
    catalog = _read_dat_movies(directory / "movies.dat")
  elif present("ratings.csv", "movies.csv"):
    ratings_path = directory / "ratings.csv"
    events = _read_ratings(ratings_path, _csv_row, encoding="utf-8", header=True)
    catalog = _read_csv_movies(directory / "movies.csv")
  elif sorted(directory.glob("*.inter")):
    return read_recbole_atomic(directory, name=name)
  else:
    raise DataError("no MovieLens files (expected u.data + u.item, ratings.dat + movies.dat, "
                    "ratings.csv + movies.csv, or RecBole *.inter)", path=directory)
  sequences = _sort_into_sequences(events, catalog, ratings_path)
  return Dataset(name=name or directory.resolve().name, catalog=catalog, sequences=sequences,
                 meta={"source": "movielens"})


# ------------------------------------------------------------------------------------------
# Ratings


def _split_on(sep: str) -> Callable[[str], list[str]]:
  return lambda line: line.split(sep)


def _csv_row(line: str) -> list[str]:
  return next(csv.reader([line]))


@dataclasses.dataclass(frozen=True)
class _Events:
  """Events in file order, before sorting into sequences."""
  users: np.ndarray  # int64 [n]
  items: np.ndarray  # int64 [n]
  timestamps: np.ndarray | None  # float64 [n]
  signals: dict[str, np.ndarray]  # name -> float32 [n]
  lines: np.ndarray  # int64 [n], the source line of each event


def _read_ratings(path: pathlib.Path, split: Callable[[str], list[str]], *, encoding: str,
                  header: bool = False) -> _Events:
  """The events of a 4-column `user item rating timestamp` file."""
  text = _read_text(path, encoding)
  users, items, ratings, times, lines = [], [], [], [], []
  for lineno, line in enumerate(text.split("\n"), 1):
    line = line.strip()
    if not line or (header and lineno == 1):
      continue
    cols = split(line)
    if len(cols) != 4:
      raise DataError(f"expected 4 columns (user, item, rating, timestamp), got {len(cols)}",
                      path=path, line=lineno)
    try:
      users.append(int(cols[0]))
      items.append(int(cols[1]))
    except ValueError:
      raise DataError(f"non-integer user or item id in {cols[:2]}", path=path,
                      line=lineno) from None
    try:
      ratings.append(float(cols[2]))
      times.append(float(cols[3]))
    except ValueError:
      raise DataError(f"rating and timestamp must be numbers, got {cols[2:]}", path=path,
                      line=lineno) from None
    lines.append(lineno)
  return _Events(users=np.array(users, np.int64), items=np.array(items, np.int64),
                 timestamps=np.array(times, np.float64),
                 signals={"rating": np.array(ratings, np.float32)},
                 lines=np.array(lines, np.int64))


def _sort_into_sequences(events: _Events, catalog: Catalog, path: pathlib.Path) -> Sequences:
  """Users in increasing id order, each by timestamp (if any); ties keep file order."""
  known = np.isin(events.items, catalog.item_ids)
  if not known.all():
    e = int(np.flatnonzero(~known)[0])
    raise DataError(f"unknown item id {int(events.items[e])} (not in the item file)",
                    path=path, line=int(events.lines[e]))
  times = events.timestamps
  if times is not None and not np.isfinite(times).all():
    e = int(np.flatnonzero(~np.isfinite(times))[0])
    raise DataError("timestamp is NaN or inf", path=path, line=int(events.lines[e]))
  file_order = np.arange(len(events.users))
  keys = (file_order, events.users) if times is None else (file_order, times, events.users)
  order = np.lexsort(keys)
  user_ids, starts = np.unique(events.users[order], return_index=True)
  return Sequences(user_ids=user_ids, offsets=np.append(starts, len(order)).astype(np.int64),
                   items=events.items[order],
                   timestamps=None if times is None else times[order],
                   signals={k: v[order] for k, v in events.signals.items()})


# ------------------------------------------------------------------------------------------
# Items


def _read_ml100k_items(path: pathlib.Path) -> Catalog:
  """u.item: `id|Title (Year)|release date|video release date|IMDb URL|19 genre flags`."""
  rows = []
  for lineno, line in _lines(path, "latin-1"):
    cols = line.split("|")
    if len(cols) != 5 + len(ML100K_GENRES):
      raise DataError(f"expected {5 + len(ML100K_GENRES)} '|'-separated columns, got {len(cols)}",
                      path=path, line=lineno)
    flags = cols[5:]
    if any(f not in ("0", "1") for f in flags):
      raise DataError(f"genre flags must be 0 or 1, got {flags}", path=path, line=lineno)
    genres = [g for g, f in zip(ML100K_GENRES, flags) if f == "1"]
    title, year = split_title_year(cols[1])
    if year is None:  # e.g. `01-Jan-1995`
      m = _DATE_YEAR.search(cols[2])
      year = int(m.group(1)) if m else None
    rows.append((_item_id(cols[0], path, lineno), title, year, genres))
  return _movie_catalog(rows, path)


def _read_dat_movies(path: pathlib.Path) -> Catalog:
  """movies.dat: `id::Title (Year)::Genre|Genre`."""
  rows = []
  for lineno, line in _lines(path, "latin-1"):
    cols = line.split("::")
    if len(cols) != 3:
      raise DataError(f"expected 3 '::'-separated columns, got {len(cols)}", path=path,
                      line=lineno)
    title, year = split_title_year(cols[1])
    rows.append((_item_id(cols[0], path, lineno), title, year, cols[2].split("|")))
  return _movie_catalog(rows, path)


def _read_csv_movies(path: pathlib.Path) -> Catalog:
  """movies.csv: header `movieId,title,genres`, titles quoted where they hold commas."""
  rows = []
  for lineno, line in _lines(path, "utf-8"):
    if lineno == 1:
      continue
    cols = _csv_row(line)
    if len(cols) != 3:
      raise DataError(f"expected 3 CSV columns, got {len(cols)}", path=path, line=lineno)
    title, year = split_title_year(cols[1])
    rows.append((_item_id(cols[0], path, lineno), title, year, cols[2].split("|")))
  return _movie_catalog(rows, path)


def split_title_year(raw: str) -> tuple[str | None, int | None]:
  """`'Toy Story (1995)'` -> `('Toy Story', 1995)`; no year -> `(title, None)`."""
  raw = raw.strip()
  m = _TITLE_YEAR.match(raw)
  title, year = (m.group(1), int(m.group(2))) if m else (raw, None)
  return (None if not title or title in _NO_TITLE else title), year


def _movie_catalog(rows: list[tuple[int, str | None, int | None, list[str]]],
                   path: pathlib.Path) -> Catalog:
  _check_unique_ids([r[0] for r in rows], path)
  return Catalog(item_ids=np.array([r[0] for r in rows], np.int64), fields={
      "title": [r[1] for r in rows],
      "release_year": [r[2] for r in rows],
      "genres": [[g for g in r[3] if g and g not in _NO_GENRE] for r in rows],
  })


def _item_id(token: str, path: pathlib.Path, lineno: int) -> int:
  try:
    return int(token)
  except ValueError:
    raise DataError(f"non-integer item id '{token}'", path=path, line=lineno) from None


def _check_unique_ids(ids: Sequence[int], path: pathlib.Path, lines: Sequence[int] | None = None
                      ) -> None:
  seen: dict[int, int] = {}
  for i, item_id in enumerate(ids):
    if item_id in seen:
      line = None if lines is None else lines[i]
      raise DataError(f"duplicate item id {item_id}", path=path, line=line)
    seen[item_id] = i


# ------------------------------------------------------------------------------------------
# RecBole atomic files


def read_recbole_atomic(path: str | os.PathLike, *, name: str | None = None) -> Dataset:
  """Reads RecBole atomic files: `<name>.inter` and, when present, `<name>.item` and `.user`.

  Both are TSV with a typed header (`user_id:token item_id:token rating:float
  timestamp:float`). User and item ids must be integers. Every float column of .inter other
  than timestamp becomes a signal (`rating`); events are sorted as in `read_movielens`
  (by timestamp where there is one, ties in file order). .item columns become catalog fields:
  token -> str, token_seq -> list of str (text columns such as movie_title stay one string),
  float -> float, float_seq -> list of float; empty values -> None ([] for lists). The
  ML-100k names movie_title and class become title and genres, release_year becomes an int,
  and the placeholders of movie 267 (`unkonwn`) and the genre `unknown` are dropped, so that
  ML-100k reads as `../shared/data/movielens_100k/items.jsonl`.
  Without .item, the catalog holds the items of .inter in increasing id order.

  `.user` (`user_id:token age:token gender:token occupation:token zip_code:token` in ML-100k)
  becomes `Dataset.users` (`read_recbole_users`); its users absent from .inter are ignored and
  users of .inter without a row get None in every field.
  """
  directory = pathlib.Path(path)
  inters = sorted(directory.glob("*.inter"))
  if len(inters) != 1:
    raise DataError(f"expected one RecBole .inter file, found {[p.name for p in inters]}",
                    path=directory)
  inter = inters[0]
  columns, rows, lines = _read_atomic(inter)
  for required in ("user_id", "item_id"):
    if required not in columns:
      raise DataError(f"header has no '{required}' column", path=inter, line=1)
  users = _column(columns, rows, lines, "user_id", inter)
  items = _column(columns, rows, lines, "item_id", inter)
  floats = {c: _column(columns, rows, lines, c, inter, float) for c, t in columns.items()
            if t == "float"}
  times = floats.pop("timestamp", None)
  events = _Events(users=users, items=items, timestamps=times,
                   signals={k: v.astype(np.float32) for k, v in floats.items()},
                   lines=np.array(lines, np.int64))
  item_path = inter.with_suffix(".item")
  if item_path.is_file():
    catalog = _recbole_catalog(item_path)
  else:
    catalog = Catalog(item_ids=np.unique(items))
  sequences = _sort_into_sequences(events, catalog, inter)
  user_path = inter.with_suffix(".user")
  users = None
  if user_path.is_file():
    table = read_recbole_users(user_path)
    users = table.align(sequences.user_ids)
  return Dataset(name=name or inter.stem, catalog=catalog, sequences=sequences,
                 meta={"source": "recbole_atomic"}, users=users)


# User columns whose tokens are integers (ML-100k's age): read as int (None if not digits).
RECBOLE_INT_USER_COLUMNS = {"age"}


def read_recbole_users(path: str | os.PathLike) -> UserTable:
  """A RecBole `.user` file as a UserTable, in file order.

  Scalar columns only: token -> str (integer columns such as `age` -> int), float -> float;
  empty cells -> None. A `_seq` column, a non-integer or repeated user_id, a malformed age or a
  row with the wrong number of cells raises DataError naming the file and line. Zip codes stay
  strings (leading zeros, Canadian codes).
  """
  path = pathlib.Path(path)
  columns, rows, lines = _read_atomic(path)
  if "user_id" not in columns:
    raise DataError("header has no 'user_id' column", path=path, line=1)
  for col, kind in columns.items():
    if kind.endswith("_seq"):
      raise DataError(f"user column '{col}' is {kind}; user features must be scalar "
                      f"(token or float)", path=path, line=1)
  ids = _column(columns, rows, lines, "user_id", path)
  seen: dict[int, int] = {}
  for user, lineno in zip(ids.tolist(), lines):
    if user in seen:
      raise DataError(f"duplicate user_id {user} (first on line {seen[user]})", path=path,
                      line=lineno)
    seen[user] = lineno
  fields: dict[str, list[Any]] = {}
  for j, (col, kind) in enumerate(columns.items()):
    if col == "user_id":
      continue
    values = [_atomic_value(cells[j], kind, path, lineno) for cells, lineno in zip(rows, lines)]
    if col in RECBOLE_INT_USER_COLUMNS:
      values = [_int_token(v, col, path, lineno) for v, lineno in zip(values, lines)]
    fields[col] = values
  return UserTable(user_ids=ids, fields=fields)


def _int_token(value: Any, col: str, path: pathlib.Path, lineno: int) -> int | None:
  if value is None:
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise DataError(f"{col} must be an integer, got '{value}'", path=path, line=lineno) from None


_ATOMIC_TYPES = ("token", "token_seq", "float", "float_seq")


def _read_atomic(path: pathlib.Path) -> tuple[dict[str, str], list[list[str]], list[int]]:
  """(column name -> type, rows of string cells, source lines) of an atomic TSV file."""
  numbered = _lines(path, "utf-8")
  if not numbered:
    raise DataError("empty file: expected a typed header", path=path, line=1)
  header_line, header = numbered[0]
  columns: dict[str, str] = {}
  for cell in header.split("\t"):
    col, sep, kind = cell.partition(":")
    if not sep or kind not in _ATOMIC_TYPES or not col or col in columns:
      raise DataError(f"bad header cell {cell!r} (expected name:type, type one of "
                      f"{_ATOMIC_TYPES}, names unique)", path=path, line=header_line)
    columns[col] = kind
  rows, lines = [], []
  for lineno, line in numbered[1:]:
    cells = line.split("\t")
    if len(cells) != len(columns):
      raise DataError(f"expected {len(columns)} tab-separated columns, got {len(cells)}",
                      path=path, line=lineno)
    rows.append(cells)
    lines.append(lineno)
  return columns, rows, lines


def _column(columns: dict[str, str], rows: list[list[str]], lines: list[int], col: str,
            path: pathlib.Path, kind: type = int) -> np.ndarray:
  """One column of an atomic file as int64 (kind=int) or float64 (kind=float)."""
  j = list(columns).index(col)
  out = np.empty(len(rows), np.int64 if kind is int else np.float64)
  for r, cells in enumerate(rows):
    try:
      out[r] = kind(cells[j])
    except ValueError:
      what = f"non-integer {col}" if kind is int else f"{col} must be a number, got"
      raise DataError(f"{what} '{cells[j]}'", path=path, line=lines[r]) from None
  return out


def _recbole_catalog(path: pathlib.Path) -> Catalog:
  columns, rows, lines = _read_atomic(path)
  if "item_id" not in columns:
    raise DataError("header has no 'item_id' column", path=path, line=1)
  ids = _column(columns, rows, lines, "item_id", path)
  _check_unique_ids(ids.tolist(), path, lines)
  fields: dict[str, list[Any]] = {}
  for j, (col, kind) in enumerate(columns.items()):
    if col == "item_id":
      continue
    if kind == "token_seq" and col in RECBOLE_TEXT_COLUMNS:
      kind = "token"
    values = [_atomic_value(cells[j], kind, path, lineno) for cells, lineno in zip(rows, lines)]
    fields[RECBOLE_FIELD_NAMES.get(col, col)] = values
  if "title" in fields:
    fields["title"] = [None if t in _NO_TITLE else t for t in fields["title"]]
  if "release_year" in fields:
    fields["release_year"] = [int(y) if isinstance(y, str) and y.isdigit() else None
                              for y in fields["release_year"]]
  if "genres" in fields:
    fields["genres"] = [[g for g in (gs or []) if g not in _NO_GENRE] for gs in fields["genres"]]
  return Catalog(item_ids=ids, fields=fields)


def _atomic_value(cell: str, kind: str, path: pathlib.Path, lineno: int) -> Any:
  if cell == "":
    return [] if kind.endswith("_seq") else None
  if kind == "token":
    return cell
  if kind == "token_seq":
    return cell.split(" ")
  try:
    return float(cell) if kind == "float" else [float(x) for x in cell.split(" ")]
  except ValueError:
    raise DataError(f"expected {kind}, got '{cell}'", path=path, line=lineno) from None


# ------------------------------------------------------------------------------------------


def _read_text(path: pathlib.Path, encoding: str) -> str:
  try:
    data = path.read_bytes()
  except OSError as e:
    raise DataError(f"cannot read: {e.strerror}", path=path) from None
  try:
    return data.decode(encoding)
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise DataError(f"not {encoding}: {e.reason}", path=path, line=line) from None


def _lines(path: pathlib.Path, encoding: str) -> list[tuple[int, str]]:
  """Non-blank lines with their 1-based numbers, line endings stripped."""
  text = _read_text(path, encoding)
  return [(i, line.rstrip("\r")) for i, line in enumerate(text.split("\n"), 1)
          if line.strip()]
