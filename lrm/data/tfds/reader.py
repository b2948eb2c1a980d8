"""Reads datasets written by `build_tfds`: random-access sources, or the whole in-memory Dataset.

A dataset is named `BUILDER/DATASET` (`lrm_layout/amazon_beauty`), as `build_tfds` returns,
or by DATASET alone where one builder folder under `data_dir` holds it. Reading goes through
`tfds.data_source` (ArrayRecord, random access, no TensorFlow).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterator

import numpy as np
import tensorflow_datasets as tfds

from lrm.core.errors import DataError
from lrm.data.tfds.builders import (EMBEDDING_PREFIX, ITEMS, RECORD_FORMAT, SIGNAL_PREFIX, USERS,
                                    config_name, part_names)
from lrm.data.types import Catalog, Dataset, Sequences, UserTable

# Records fetched per read: ArrayRecord reads a batch of indices in one call.
_READ_CHUNK = 4096


def resolve_name(name: str, data_dir: str | os.PathLike) -> str:
  """`BUILDER/DATASET` for `name`, which may omit the builder if only one folder holds it."""
  root = pathlib.Path(data_dir)
  if not root.is_dir():
    raise DataError("no such TFDS data_dir", path=root)
  if "/" in name:
    return name
  found = sorted(p.parent.name for p in root.glob(f"*/{config_name(name, USERS)}") if p.is_dir())
  if len(found) != 1:
    what = "no builder folder holds it" if not found else f"several builders hold it: {found}"
    raise DataError(f"TFDS dataset '{name}': {what}; name it BUILDER/{name}", path=root)
  return f"{found[0]}/{name}"


def open_part(name: str, data_dir: str | os.PathLike, part: str) -> tfds.core.DatasetBuilder:
  """The read-only TFDS builder of one part (`users` or `items`) of a dataset."""
  full = resolve_name(name, data_dir)
  builder_name, _, dataset = full.partition("/")
  dataset, _, version = dataset.partition(":")
  config = config_name(dataset, part) + (f":{version}" if version else "")
  folder = pathlib.Path(data_dir) / builder_name / config_name(dataset, part)
  if not folder.is_dir():
    # Checked here: where the builder class is imported, TFDS would try to construct it.
    raise DataError(f"no TFDS dataset {builder_name}/{config} (no such folder)", path=folder)
  try:
    builder = tfds.builder(f"{builder_name}/{config}", data_dir=os.fspath(data_dir))
  except (tfds.core.registered.DatasetNotFoundError, ValueError, TypeError) as e:
    raise DataError(f"no TFDS dataset {builder_name}/{config}: {str(e).splitlines()[0]}",
                    path=data_dir) from None
  metadata = builder.info.metadata or {}
  if metadata.get("record_format") != RECORD_FORMAT or metadata.get("part") != part:
    raise DataError(f"{builder_name}/{config} was not written by lrm's build_tfds (record format "
                    f"{metadata.get('record_format')}, expected {RECORD_FORMAT})",
                    path=builder.data_dir)
  return builder


def data_source(builder: tfds.core.DatasetBuilder):
  """All records of a part, in written order: a random-access source (len, [i]) for Grain."""
  parts = part_names(list(builder.info.splits))
  if not parts:
    raise DataError("no part<k> splits", path=builder.data_dir)
  return builder.as_data_source(split="+".join(parts))


def user_source(name: str, data_dir: str | os.PathLike):
  """One record per user (see builders.py), in sequences order."""
  return data_source(open_part(name, data_dir, USERS))


def item_source(name: str, data_dir: str | os.PathLike):
  """One record per item (see builders.py), in catalog order."""
  return data_source(open_part(name, data_dir, ITEMS))


def load_tfds(name: str, data_dir: str | os.PathLike) -> Dataset:
  """The whole dataset in memory: the same Dataset `read_dataset` gives for its layout folder.

  Raises DataError naming the folder for a missing dataset, a foreign one, or records that
  disagree with its info (lengths, counts, unknown items).
  """
  users = open_part(name, data_dir, USERS)
  items = open_part(name, data_dir, ITEMS)
  meta = dict(users.info.metadata)
  catalog = _catalog(items)
  sequences, user_table = _sequences(users)
  counts = {"users": len(sequences), "items": len(catalog),
            "interactions": int(sequences.num_events)}
  if counts != meta["counts"]:
    raise DataError(f"records hold {counts}, the info says {meta['counts']}: "
                    f"partly rewritten?", path=users.data_dir)
  sequences.check_items(catalog, source=users.data_dir)
  return Dataset(name=meta["name"], catalog=catalog, sequences=sequences,
                 meta=dict(meta["meta"]), users=user_table)


def _records(builder: tfds.core.DatasetBuilder) -> Iterator[dict[str, Any]]:
  source = data_source(builder)
  for start in range(0, len(source), _READ_CHUNK):
    yield from source.__getitems__(list(range(start, min(start + _READ_CHUNK, len(source)))))


def _sequences(builder: tfds.core.DatasetBuilder) -> tuple[Sequences, UserTable | None]:
  meta = builder.info.metadata
  features = set(builder.info.features.keys())
  user_ids, lengths, items, times, types = [], [], [], [], []
  signals: dict[str, list[np.ndarray]] = {n: [] for n in meta["signals"]}
  attributes: list[dict[str, Any]] = []
  for r, rec in enumerate(_records(builder)):
    if len(rec["item_ids"]) != rec["length"]:
      raise DataError(f"user record {r} has {len(rec['item_ids'])} items but length "
                      f"{rec['length']}", path=builder.data_dir)
    user_ids.append(rec["user_id"])
    lengths.append(rec["length"])
    items.append(rec["item_ids"])
    if "timestamps" in features:
      times.append(rec["timestamps"])
    if "event_types" in features:
      types.append(rec["event_types"])
    for n in signals:
      signals[n].append(rec[SIGNAL_PREFIX + n])
    if "attributes" in features:
      attributes.append(json.loads(_text(rec["attributes"])))
  flat = lambda arrays, dtype: np.concatenate(arrays).astype(dtype) if arrays else np.zeros(0,
                                                                                         dtype)
  offsets = np.zeros(len(lengths) + 1, np.int64)
  np.cumsum(lengths, out=offsets[1:])
  kw: dict[str, Any] = {}
  if "timestamps" in features:
    kw["timestamps"] = flat(times, np.float64)
  if "event_types" in features:
    kw["event_types"] = flat(types, np.int32)
    kw["event_type_names"] = tuple(meta["event_type_names"])
  sequences = Sequences(user_ids=np.array(user_ids, np.int64), offsets=offsets,
                        items=flat(items, np.int64),
                        signals={n: flat(v, np.float32) for n, v in signals.items()}, **kw)
  table = None
  if "attributes" in features:
    table = UserTable(user_ids=sequences.user_ids,
                      fields={f: [a.get(f) for a in attributes] for f in meta["user_fields"]})
  return sequences, table


def _catalog(builder: tfds.core.DatasetBuilder) -> Catalog:
  meta = builder.info.metadata
  features = builder.info.features
  modalities = [k[len(EMBEDDING_PREFIX):] for k in features.keys()
                if k.startswith(EMBEDDING_PREFIX)]
  ids, records, times = [], [], []
  embeddings: dict[str, list[np.ndarray]] = {m: [] for m in modalities}
  for rec in _records(builder):
    ids.append(rec["item_id"])
    records.append(json.loads(_text(rec["fields"])))
    if "timestamp" in features:
      times.append(rec["timestamp"])
    for m in modalities:
      embeddings[m].append(rec[EMBEDDING_PREFIX + m])
  dims = {m: features[EMBEDDING_PREFIX + m].shape[0] for m in modalities}
  return Catalog(
      item_ids=np.array(ids, np.int64),
      fields={f: [r.get(f) for r in records] for f in meta["fields"]},
      embeddings={m: np.stack(v) if v else np.zeros((0, dims[m]), np.float32)
                  for m, v in embeddings.items()},
      timestamps=np.array(times, np.float64) if "timestamp" in features else None)


def _text(value: bytes | str) -> str:
  return value.decode("utf-8") if isinstance(value, bytes) else value
