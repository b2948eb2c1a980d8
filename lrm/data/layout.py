"""The project's on-disk dataset layout (the same as `../shared/data/<name>/`).

A dataset is a directory:

  sequences.txt          one line per user, `user_id item_id item_id ...`, space separated,
                         oldest event first. Required.
  items.jsonl            one JSON object per item: an integer `item_id` and any other fields
                         (title, brand, categories (coarse to fine), genres, ...). Required.
  events.npz             optional, per event, aligned to the flat event order of sequences.txt:
                         `timestamps` float64, `event_types` int32 + `event_type_names`,
                         `signal_<name>` float32, and `sequences_digest` (a hash of
                         sequences.txt's ids, so an edited sequences.txt is caught).
  items.npz              optional: `timestamps` float64 [items], in items.jsonl order.
  users.jsonl            optional: one JSON object per user with attributes: an integer
                         `user_id` (a user of sequences.txt) and scalar fields (str, number or
                         null; e.g. age, gender, occupation, zip_code). Users without a line,
                         or without a key, get None; `Dataset.users` is aligned to sequences.txt.
  embeddings/<m>.npy     optional: float32 [items, d] per modality m, in items.jsonl order.
  manifest.json          written last by `write_dataset`; its presence marks the write complete.

Folders from elsewhere (like `../shared/data`) have no manifest and are read as they are. A
folder that `write_dataset` began but did not finish holds a `.write-incomplete` marker and no
manifest; `read_dataset` refuses it.

Every problem in the input raises `DataError` naming the file and, for text files, the line.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import pathlib
import re
import zipfile
from typing import Any, Mapping

import numpy as np

from lrm.core import artifacts
from lrm.core.errors import DataError
from lrm.data.types import Catalog, Dataset, Sequences, UserTable

SEQUENCES = "sequences.txt"
ITEMS = "items.jsonl"
EVENTS = "events.npz"
ITEM_ARRAYS = "items.npz"
USERS = "users.jsonl"
EMBEDDINGS = "embeddings"
INCOMPLETE = ".write-incomplete"
LAYOUT_VERSION = 1

_SIGNAL_PREFIX = "signal_"
_DIGEST_KEY = "sequences_digest"
# Modality and signal names become file names and npz keys.
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


# ------------------------------------------------------------------------------------------
# sequences.txt


def read_sequences_txt(path: str | os.PathLike) -> Sequences:
  """Reads `user_id item_id ...` lines into flat Sequences (blank lines are skipped).

  Raises DataError (`file:line: ...`) for non-integer or negative ids, a user line with no
  items, and a user id seen twice.
  """
  sequences, _ = _read_sequences_with_lines(path)
  return sequences


def _read_sequences_with_lines(path: str | os.PathLike) -> tuple[Sequences, np.ndarray]:
  """Sequences plus the 1-based source line of each user, for error messages downstream."""
  path = pathlib.Path(path)
  text = _read_text(path)
  user_ids: list[int] = []
  lines: list[int] = []
  lengths: list[int] = []
  flat: list[int] = []
  for lineno, line in enumerate(text.split("\n"), 1):
    tokens = line.split()
    if not tokens:
      continue
    try:
      ids = list(map(int, tokens))
    except ValueError:
      bad = next(t for t in tokens if not _is_int(t))
      raise DataError(f"non-integer id '{bad}'", path=path, line=lineno) from None
    if len(ids) == 1:
      raise DataError(f"user {ids[0]} has no items (empty sequence)", path=path, line=lineno)
    user_ids.append(ids[0])
    lines.append(lineno)
    lengths.append(len(ids) - 1)
    flat.extend(ids[1:])
  users = np.array(user_ids, dtype=np.int64)
  items = np.array(flat, dtype=np.int64)
  line_of_user = np.array(lines, dtype=np.int64)
  offsets = np.zeros(len(users) + 1, dtype=np.int64)
  np.cumsum(lengths, out=offsets[1:])
  _check_no_negative_ids(users, items, offsets, line_of_user, path)
  _check_unique_users(users, line_of_user, path)
  return Sequences(user_ids=users, offsets=offsets, items=items), line_of_user


def _is_int(token: str) -> bool:
  try:
    int(token)
    return True
  except ValueError:
    return False


def _check_no_negative_ids(users: np.ndarray, items: np.ndarray, offsets: np.ndarray,
                           line_of_user: np.ndarray, path: pathlib.Path) -> None:
  if len(users) and users.min() < 0:
    u = int(np.flatnonzero(users < 0)[0])
    raise DataError(f"negative user id {int(users[u])}", path=path, line=int(line_of_user[u]))
  if len(items) and items.min() < 0:
    e = int(np.flatnonzero(items < 0)[0])
    u = _user_of_event(offsets, e)
    raise DataError(f"negative item id {int(items[e])}", path=path, line=int(line_of_user[u]))


def _check_unique_users(users: np.ndarray, line_of_user: np.ndarray,
                        path: pathlib.Path) -> None:
  order = np.argsort(users, kind="stable")
  same = np.flatnonzero(users[order][1:] == users[order][:-1])
  if len(same):
    # Report the earliest line that repeats a user, and where that user was first seen.
    repeats = order[same + 1]
    u = int(repeats.min())
    first = int(order[np.searchsorted(users[order], users[u])])
    raise DataError(f"duplicate user id {int(users[u])} (first on line {int(line_of_user[first])})",
                    path=path, line=int(line_of_user[u]))


def _user_of_event(offsets: np.ndarray, event: int) -> int:
  return int(np.searchsorted(offsets, event, side="right") - 1)


def format_sequences_txt(sequences: Sequences) -> str:
  """The text of sequences.txt for `sequences` (every user must have at least one event)."""
  _check_no_empty_users(sequences)
  items = sequences.items.tolist()
  offsets = sequences.offsets.tolist()
  lines = []
  for u, user in enumerate(sequences.user_ids.tolist()):
    lines.append(" ".join(map(str, [user, *items[offsets[u]:offsets[u + 1]]])))
  return "".join(line + "\n" for line in lines)


def _check_no_empty_users(sequences: Sequences) -> None:
  empty = np.flatnonzero(sequences.lengths == 0)
  if len(empty):
    users = sequences.user_ids[empty[:5]].tolist()
    raise DataError(f"users {users} have no events; sequences.txt cannot hold an empty sequence "
                    f"(drop them first)")


# ------------------------------------------------------------------------------------------
# items.jsonl


def read_items_jsonl(path: str | os.PathLike) -> Catalog:
  """Reads one JSON object per line into a Catalog (blank lines are skipped).

  `fields` keeps every key other than `item_id`, in order of first appearance; an item
  without a key gets None. Raises DataError (`file:line: ...`) for bad JSON, a line that is
  not an object, a missing or non-integer `item_id`, and an item id seen twice.
  """
  catalog, _ = _read_items_with_lines(path)
  return catalog


def _jsonl_objects(path: pathlib.Path, id_key: str):
  """Yields (line number, integer id, the other fields) per non-blank line of a JSONL file.

  Raises DataError (`file:line: ...`) for bad JSON, a line that is not an object, and a missing
  or non-integer `id_key`.
  """
  decode = json.JSONDecoder().decode
  for lineno, line in enumerate(_read_text(path).split("\n"), 1):
    if not line.strip():
      continue
    try:
      record = decode(line)
    except json.JSONDecodeError as e:
      raise DataError(f"bad JSON: {e.msg} (column {e.colno})", path=path, line=lineno) from None
    if not isinstance(record, dict):
      raise DataError(f"expected a JSON object, got {type(record).__name__}", path=path,
                      line=lineno)
    if id_key not in record:
      raise DataError(f"missing required key '{id_key}'", path=path, line=lineno)
    key = record.pop(id_key)
    if isinstance(key, bool) or not isinstance(key, int):
      raise DataError(f"{id_key} must be an integer, got {key!r}", path=path, line=lineno)
    yield lineno, key, record


def _read_items_with_lines(path: str | os.PathLike) -> tuple[Catalog, dict[int, int]]:
  path = pathlib.Path(path)
  ids: list[int] = []
  records: list[dict[str, Any]] = []
  line_of_item: dict[int, int] = {}
  names: dict[str, None] = {}  # field names in order of first appearance
  for lineno, item_id, record in _jsonl_objects(path, "item_id"):
    if item_id < 0:
      raise DataError(f"negative item_id {item_id}", path=path, line=lineno)
    if item_id in line_of_item:
      raise DataError(f"duplicate item_id {item_id} (first on line {line_of_item[item_id]})",
                      path=path, line=lineno)
    line_of_item[item_id] = lineno
    ids.append(item_id)
    records.append(record)
    names.update(dict.fromkeys(record))
  fields = {name: [r.get(name) for r in records] for name in names}
  return Catalog(item_ids=np.array(ids, dtype=np.int64), fields=fields), line_of_item


def format_items_jsonl(catalog: Catalog) -> str:
  """The text of items.jsonl for `catalog`: every field on every line (None as null)."""
  if "item_id" in catalog.fields:
    raise DataError("catalog has a field named 'item_id', which items.jsonl reserves for the id")
  names = list(catalog.fields)
  columns = [catalog.fields[n] for n in names]
  encode = json.JSONEncoder(ensure_ascii=False, default=_json_value).encode
  out = []
  for r, item_id in enumerate(catalog.item_ids.tolist()):
    record = {"item_id": item_id}
    for name, column in zip(names, columns):
      record[name] = column[r]
    try:
      out.append(encode(record) + "\n")
    except (TypeError, ValueError) as e:
      raise DataError(f"item {item_id}: a field value cannot be written as JSON: {e}") from None
  return "".join(out)


def _json_value(obj: Any) -> Any:
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, tuple):
    return list(obj)
  raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


# ------------------------------------------------------------------------------------------
# users.jsonl


def read_users_jsonl(path: str | os.PathLike, user_ids: np.ndarray | None = None) -> UserTable:
  """Reads one JSON object per user into a UserTable (file order; blank lines are skipped).

  Fields are every key other than `user_id`, in order of first appearance (None where a line
  lacks one). With `user_ids` (the users of sequences.txt), a user id outside it raises.
  Raises DataError (`file:line: ...`) for bad JSON, a line that is not an object, a missing,
  non-integer, unknown or repeated `user_id`, and a value that is not a str, number or null.
  """
  path = pathlib.Path(path)
  known = None if user_ids is None else set(np.asarray(user_ids).tolist())
  ids: list[int] = []
  records: list[dict[str, Any]] = []
  line_of_user: dict[int, int] = {}
  names: dict[str, None] = {}
  for lineno, user, record in _jsonl_objects(path, "user_id"):
    if known is not None and user not in known:
      raise DataError(f"unknown user_id {user} (not in {SEQUENCES})", path=path, line=lineno)
    if user in line_of_user:
      raise DataError(f"duplicate user_id {user} (first on line {line_of_user[user]})",
                      path=path, line=lineno)
    for key, value in record.items():
      if value is not None and (isinstance(value, bool)
                                or not isinstance(value, (str, int, float))):
        raise DataError(f"field '{key}' must be a string, number or null, got {value!r}",
                        path=path, line=lineno)
    line_of_user[user] = lineno
    ids.append(user)
    records.append(record)
    names.update(dict.fromkeys(record))
  return UserTable(user_ids=np.array(ids, np.int64),
                   fields={n: [r.get(n) for r in records] for n in names})


def format_users_jsonl(users: UserTable) -> str:
  """The text of users.jsonl: one line per user of the table, every field (None as null)."""
  names = list(users.fields)
  encode = json.JSONEncoder(ensure_ascii=False, default=_json_value).encode
  out = []
  for r, user in enumerate(users.user_ids.tolist()):
    record = {"user_id": user, **{n: users.fields[n][r] for n in names}}
    try:
      out.append(encode(record) + "\n")
    except (TypeError, ValueError) as e:
      raise DataError(f"user {user}: a field value cannot be written as JSON: {e}") from None
  return "".join(out)


# ------------------------------------------------------------------------------------------
# events.npz, items.npz, embeddings/


def sequences_digest(sequences: Sequences) -> str:
  """A hash of the users, their boundaries and item ids: ties events.npz to sequences.txt."""
  h = hashlib.sha256()
  for a in (sequences.user_ids, sequences.offsets, sequences.items):
    h.update(np.ascontiguousarray(a, dtype="<i8").tobytes())
  return h.hexdigest()


def _events_arrays(sequences: Sequences) -> dict[str, np.ndarray]:
  arrays: dict[str, np.ndarray] = {}
  if sequences.timestamps is not None:
    arrays["timestamps"] = sequences.timestamps.astype(np.float64)
  if sequences.event_types is not None:
    arrays["event_types"] = sequences.event_types.astype(np.int32)
    arrays["event_type_names"] = np.array(sequences.event_type_names, dtype=str)
  for name, values in sequences.signals.items():
    if not _SAFE_NAME.match(name):
      raise DataError(f"signal name {name!r} must match {_SAFE_NAME.pattern}")
    arrays[_SIGNAL_PREFIX + name] = values.astype(np.float32)
  if arrays:
    arrays[_DIGEST_KEY] = np.array(sequences_digest(sequences))
  return arrays


def _read_events(path: pathlib.Path, sequences: Sequences) -> Sequences:
  """Attaches the per-event arrays of events.npz to `sequences`, after checking alignment."""
  arrays = _load_npz(path)
  n = sequences.num_events
  digest = arrays.pop(_DIGEST_KEY, None)
  if digest is not None and str(digest) != sequences_digest(sequences):
    raise DataError(f"does not match {SEQUENCES} (its digest differs): was {SEQUENCES} "
                    f"changed after {EVENTS} was written?", path=path)
  kw: dict[str, Any] = {}
  signals = {}
  for key, values in arrays.items():
    if key == "event_type_names":
      continue
    if values.ndim != 1 or len(values) != n:
      raise DataError(f"'{key}' has shape {values.shape}, but {SEQUENCES} has {n} events",
                      path=path)
    if key == "timestamps":
      if not np.isfinite(values).all():
        raise DataError(f"timestamps contain NaN or inf at event "
                        f"{int(np.flatnonzero(~np.isfinite(values))[0])}", path=path)
      kw["timestamps"] = values.astype(np.float64)
    elif key == "event_types":
      kw["event_types"] = values
    elif key.startswith(_SIGNAL_PREFIX):
      signals[key[len(_SIGNAL_PREFIX):]] = values.astype(np.float32)
    else:
      raise DataError(f"unknown array '{key}' (expected timestamps, event_types, "
                      f"event_type_names, {_SIGNAL_PREFIX}<name>)", path=path)
  if "event_types" in kw:
    if "event_type_names" not in arrays:
      raise DataError("has event_types but no event_type_names", path=path)
    names = tuple(str(s) for s in arrays["event_type_names"].tolist())
    types = kw["event_types"]
    if not np.issubdtype(types.dtype, np.integer):
      raise DataError(f"event_types must be integers, got {types.dtype}", path=path)
    if n and (types.min() < 0 or types.max() >= len(names)):
      raise DataError(f"event_types out of range for {len(names)} event_type_names", path=path)
    kw["event_types"] = types.astype(np.int32)
    kw["event_type_names"] = names
  return Sequences(user_ids=sequences.user_ids, offsets=sequences.offsets, items=sequences.items,
                   signals=signals, **kw)


def _read_item_arrays(path: pathlib.Path, num_items: int) -> np.ndarray:
  arrays = _load_npz(path)
  unknown = sorted(set(arrays) - {"timestamps"})
  if unknown:
    raise DataError(f"unknown arrays {unknown} (expected timestamps)", path=path)
  timestamps = arrays["timestamps"]
  if timestamps.shape != (num_items,):
    raise DataError(f"timestamps have shape {timestamps.shape}, but {ITEMS} has {num_items} items",
                    path=path)
  return timestamps.astype(np.float64)


def _read_embeddings(directory: pathlib.Path, item_ids: np.ndarray) -> dict[str, np.ndarray]:
  embeddings = {}
  for path in sorted(directory.glob("*.npy")):
    try:
      emb = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise DataError(f"cannot read .npy: {e}", path=path) from None
    if emb.ndim != 2 or emb.shape[0] != len(item_ids):
      raise DataError(f"shape {emb.shape}, expected ({len(item_ids)}, d): one row per item of "
                      f"{ITEMS}", path=path)
    if not np.issubdtype(emb.dtype, np.floating):
      raise DataError(f"dtype {emb.dtype}, expected float32", path=path)
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
      rows = np.flatnonzero(~finite)
      raise DataError(f"NaN or inf in {len(rows)} rows, first row {int(rows[0])} "
                      f"(item id {int(item_ids[rows[0]])})", path=path)
    embeddings[path.stem] = emb.astype(np.float32, copy=False)
  return embeddings


def _load_npz(path: pathlib.Path) -> dict[str, np.ndarray]:
  try:
    with np.load(path, allow_pickle=False) as z:
      return {k: z[k] for k in z.files}
  except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
    raise DataError(f"cannot read .npz: {e}", path=path) from None


def _npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
  buf = io.BytesIO()
  np.savez(buf, **arrays)
  return buf.getvalue()


def _npy_bytes(array: np.ndarray) -> bytes:
  buf = io.BytesIO()
  np.save(buf, array, allow_pickle=False)
  return buf.getvalue()


# ------------------------------------------------------------------------------------------
# The whole dataset


def read_dataset(path: str | os.PathLike, *, name: str | None = None,
                 check_items: bool = True) -> Dataset:
  """Reads a dataset directory in the standard layout.

  Args:
    path: the directory.
    name: the dataset's name; default: the manifest's, else the directory's name.
    check_items: check that every item in sequences.txt is in items.jsonl.
  """
  directory = pathlib.Path(path)
  if not directory.is_dir():
    raise DataError("not a dataset directory", path=directory)
  manifest = None
  if (directory / artifacts.MANIFEST).exists():
    manifest = artifacts.read_manifest(directory)
  elif (directory / INCOMPLETE).exists():
    raise DataError("a write_dataset into this directory did not finish (no manifest.json); "
                    "write it again", path=directory)
  for required in (SEQUENCES, ITEMS):
    if not (directory / required).is_file():
      raise DataError(f"missing required file {required}", path=directory)
  sequences, line_of_user = _read_sequences_with_lines(directory / SEQUENCES)
  catalog, _ = _read_items_with_lines(directory / ITEMS)
  if check_items:
    _check_sequence_items(sequences, catalog, line_of_user, directory / SEQUENCES)
  if (directory / EVENTS).exists():
    sequences = _read_events(directory / EVENTS, sequences)
  timestamps = None
  if (directory / ITEM_ARRAYS).exists():
    timestamps = _read_item_arrays(directory / ITEM_ARRAYS, len(catalog))
  embeddings = {}
  if (directory / EMBEDDINGS).is_dir():
    embeddings = _read_embeddings(directory / EMBEDDINGS, catalog.item_ids)
  catalog = Catalog(item_ids=catalog.item_ids, fields=catalog.fields, embeddings=embeddings,
                    timestamps=timestamps)
  users = None
  if (directory / USERS).exists():
    users = read_users_jsonl(directory / USERS, sequences.user_ids)
  meta: dict[str, Any] = {}
  if manifest is not None:
    _check_manifest(manifest, directory, sequences, catalog)
    meta = dict(manifest.get("meta") or {})
    name = name or manifest.get("name")
  return Dataset(name=name or directory.resolve().name, catalog=catalog, sequences=sequences,
                 meta=meta, users=users)


def _check_sequence_items(sequences: Sequences, catalog: Catalog, line_of_user: np.ndarray,
                          path: pathlib.Path) -> None:
  known = np.isin(sequences.items, catalog.item_ids)
  if not known.all():
    e = int(np.flatnonzero(~known)[0])
    u = _user_of_event(sequences.offsets, e)
    raise DataError(f"user {int(sequences.user_ids[u])}: unknown item id "
                    f"{int(sequences.items[e])} (not in {ITEMS}); {int((~known).sum())} such "
                    f"events in all", path=path, line=int(line_of_user[u]))


def _check_manifest(manifest: Mapping[str, Any], directory: pathlib.Path, sequences: Sequences,
                    catalog: Catalog) -> None:
  """The manifest's counts and file list must describe what is on disk."""
  path = directory / artifacts.MANIFEST
  expected = manifest.get("counts") or {}
  actual = _counts(sequences, catalog)
  for key, value in expected.items():
    if key in actual and actual[key] != value:
      raise DataError(f"counts say {key} = {value}, the files hold {actual[key]}: the dataset "
                      f"was changed after it was written", path=path)
  for rel in manifest.get("files") or []:
    if not (directory / rel).exists():
      raise DataError(f"lists {rel}, which is missing", path=path)


def _counts(sequences: Sequences, catalog: Catalog) -> dict[str, int]:
  return {"users": len(sequences), "items": len(catalog),
          "interactions": int(sequences.num_events)}


def write_dataset(path: str | os.PathLike, dataset: Dataset, *, config: Any = None) -> None:
  """Writes `dataset` in the standard layout; `read_dataset` gives it back exactly.

  Everything is validated and serialised in memory first, so bad input raises DataError
  before any file is touched. Each file is written atomically; sequences.txt goes after the
  other data files and manifest.json last, and a `.write-incomplete` marker stands while the
  write is under way, so an interrupted write never looks complete. Stale optional files from
  an earlier write into the same directory are removed.
  """
  directory = pathlib.Path(path)
  files = _serialise(dataset)  # relative path -> bytes; raises before anything is written
  directory.mkdir(parents=True, exist_ok=True)
  marker = directory / INCOMPLETE
  marker.touch()
  (directory / artifacts.MANIFEST).unlink(missing_ok=True)
  _remove_stale_files(directory, keep=set(files))
  for rel in sorted(files, key=lambda r: r == SEQUENCES):  # sequences.txt last
    artifacts.atomic_write_bytes(directory / rel, files[rel])
  catalog, sequences = dataset.catalog, dataset.sequences
  artifacts.write_manifest(
      directory, stage="dataset", config=config, counts=_counts(sequences, catalog),
      name=dataset.name, layout_version=LAYOUT_VERSION, files=sorted(files),
      fields=list(catalog.fields),
      embeddings={m: int(e.shape[1]) for m, e in catalog.embeddings.items()},
      signals=sorted(sequences.signals), event_type_names=list(sequences.event_type_names),
      user_fields=[] if dataset.users is None else list(dataset.users.fields),
      meta=dict(dataset.meta))
  marker.unlink()


def _serialise(dataset: Dataset) -> dict[str, bytes]:
  catalog, sequences = dataset.catalog, dataset.sequences
  sequences.check_items(catalog)
  try:
    json.dumps(dict(dataset.meta), default=_json_value)
  except (TypeError, ValueError) as e:
    raise DataError(f"dataset meta cannot be written as JSON: {e}") from None
  files = {
      ITEMS: format_items_jsonl(catalog).encode("utf-8"),
      SEQUENCES: format_sequences_txt(sequences).encode("utf-8"),
  }
  events = _events_arrays(sequences)
  if events:
    files[EVENTS] = _npz_bytes(events)
  if catalog.timestamps is not None:
    files[ITEM_ARRAYS] = _npz_bytes({"timestamps": catalog.timestamps})
  if dataset.users is not None:
    files[USERS] = format_users_jsonl(dataset.users).encode("utf-8")
  for modality, emb in catalog.embeddings.items():
    if not _SAFE_NAME.match(modality):
      raise DataError(f"embedding modality {modality!r} must match {_SAFE_NAME.pattern}")
    files[f"{EMBEDDINGS}/{modality}.npy"] = _npy_bytes(emb.astype(np.float32))
  return files


def _remove_stale_files(directory: pathlib.Path, keep: set[str]) -> None:
  """Removes optional files of an earlier write that this one does not replace."""
  candidates = [directory / EVENTS, directory / ITEM_ARRAYS, directory / USERS]
  if (directory / EMBEDDINGS).is_dir():
    candidates += sorted((directory / EMBEDDINGS).glob("*.npy"))
  for p in candidates:
    if p.exists() and p.relative_to(directory).as_posix() not in keep:
      p.unlink()


def _read_text(path: pathlib.Path) -> str:
  try:
    data = path.read_bytes()
  except OSError as e:
    raise DataError(f"cannot read: {e.strerror}", path=path) from None
  try:
    return data.decode("utf-8")
  except UnicodeDecodeError as e:
    line = data.count(b"\n", 0, e.start) + 1
    raise DataError(f"not UTF-8: {e.reason} at byte {e.start}", path=path, line=line) from None
