"""TFDS builders that write a dataset as ArrayRecord, one per source format, without TensorFlow.

Each dataset becomes two TFDS configs of its source's builder, read back by `load_tfds` or
streamed by Grain (lrm/data/tfds/loader.py):

  DIR/lrm_<source>/<dataset>-users/1.0.0/   one record per user, in sequences order
  DIR/lrm_<source>/<dataset>-items/1.0.0/   one record per item, in catalog order

A user record holds `user_id`, `length` and the events as flat 1-d arrays of that length
(`item_ids`, and where the dataset has them `timestamps`, `event_types`, `signal_<name>`),
plus the user's attributes as a JSON object (`attributes`). An item record holds `item_id`,
its fields as one JSON object (`fields`: title, brand, categories, ...; lists and nulls
survive), and where present `timestamp` and one `embedding_<modality>` vector per modality.
Only flat features: nested ragged ones need TensorFlow; Grain pads at batch time.

The sources are read with the readers of lrm/data (so validation and id mapping are theirs),
from local files only; the source files' sizes and sha256 go in the dataset info's metadata
with the builder version. Records are written in generation order (`disable_shuffling`), in
splits `part0`, `part1`, ... each below `max_part_bytes`: TFDS buffers a split in memory
before writing it and, above 1 GB, spills through `tf.io.gfile`, which needs TensorFlow.
"""

from __future__ import annotations

import abc
import hashlib
import json
import os
import pathlib
import re
import tempfile
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds

from lrm.core.errors import DataError
from lrm.data.amazon import read_amazon_2014
from lrm.data.layout import read_dataset
from lrm.data.movielens import read_movielens
from lrm.data.types import Dataset

# Bumped when the record format changes; `load_tfds` refuses folders of another format.
RECORD_FORMAT = 1
USERS, ITEMS = "users", "items"
# Half of TFDS's 1 GB in-memory buffer: the estimate below is rough.
DEFAULT_MAX_PART_BYTES = 512 << 20
SIGNAL_PREFIX = "signal_"
EMBEDDING_PREFIX = "embedding_"
_PART = re.compile(r"^part(\d+)$")


def config_name(dataset: str, part: str) -> str:
  """`amazon_beauty-users`: the TFDS config of one part (users or items) of a dataset."""
  return f"{dataset}-{part}"


def safe_dataset_name(name: str) -> str:
  """A dataset name usable as a folder and TFDS config name: `ml-100k` -> `ml_100k`."""
  safe = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
  if not safe:
    raise DataError(f"dataset name {name!r} has no letters or digits to name its TFDS config")
  return safe


def part_names(split_names: Sequence[str]) -> list[str]:
  """The `part<k>` splits in order; together they hold the dataset."""
  parts = sorted((int(m.group(1)), s) for s in split_names if (m := _PART.match(s)))
  return [s for _, s in parts]


class LrmBuilder(tfds.core.GeneratorBasedBuilder):
  """Writes one part (users or items) of an in-memory Dataset; subclasses read a source.

  Construct with `dataset` (from the subclass's `read`), `source_checksums` (file name
  -> size and sha256 of what it was read from) and a `config` named `config_name(name, part)`.
  """

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Users and items of the standard layout as flat ArrayRecord features."}

  def __init__(self, *, dataset: Dataset, source_checksums: Mapping[str, Mapping[str, Any]],
               max_part_bytes: int = DEFAULT_MAX_PART_BYTES, **kwargs: Any):
    # Set before TFDS's __init__, which builds the info (and so the features) from them.
    self._dataset = dataset
    self._source_checksums = dict(source_checksums)
    self._max_part_bytes = int(max_part_bytes)
    super().__init__(file_format="array_record", **kwargs)

  @classmethod
  @abc.abstractmethod
  def read(cls, **source: Any) -> Dataset:
    """Reads the local source files into a Dataset with lrm's reader for the format."""

  @classmethod
  @abc.abstractmethod
  def source_files(cls, **source: Any) -> dict[str, pathlib.Path]:
    """The files `read` reads: name (relative to the source) -> path."""

  @property
  def part(self) -> str:
    return self.builder_config.name.rsplit("-", 1)[1]

  def expected_metadata(self) -> dict[str, Any]:
    """The info's metadata for this dataset and source (JSON types, as written to disk)."""
    return json.loads(_json(_metadata(self._dataset, self._source_checksums, self.part)))

  def _info(self) -> tfds.core.DatasetInfo:
    features = _user_features(self._dataset) if self.part == USERS else _item_features(
        self._dataset)
    return tfds.core.DatasetInfo(
        builder=self, description=self.__doc__, features=features, disable_shuffling=True,
        metadata=tfds.core.MetadataDict(self.expected_metadata()))

  def _split_generators(self, dl_manager):
    del dl_manager  # nothing is downloaded
    sizes = (_user_record_bytes(self._dataset) if self.part == USERS
             else _item_record_bytes(self._dataset))
    bounds = split_into_parts(sizes, self._max_part_bytes)
    return {f"part{k}": self._generate_examples(start, end)
            for k, (start, end) in enumerate(bounds)}

  def _generate_examples(self, start: int, end: int):
    records = _user_records if self.part == USERS else _item_records
    # Integer keys in row order: with disable_shuffling TFDS writes by key, i.e. in this order.
    yield from zip(range(start, end), records(self._dataset, start, end))


class LrmLayout(LrmBuilder):
  """A dataset in lrm's standard layout (sequences.txt + items.jsonl + optional arrays)."""

  @classmethod
  def read(cls, *, path: str | os.PathLike) -> Dataset:
    return read_dataset(path)

  @classmethod
  def source_files(cls, *, path: str | os.PathLike) -> dict[str, pathlib.Path]:
    root = pathlib.Path(path)
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


class LrmMovielens(LrmBuilder):
  """MovieLens 100k / 1M (or later) as GroupLens ships it, read by lrm.data.read_movielens."""

  @classmethod
  def read(cls, *, path: str | os.PathLike) -> Dataset:
    return read_movielens(path)

  @classmethod
  def source_files(cls, *, path: str | os.PathLike) -> dict[str, pathlib.Path]:
    return {p.name: p for p in sorted(pathlib.Path(path).iterdir()) if p.is_file()}


class LrmAmazon2014(LrmBuilder):
  """One category of the Amazon 2014 review dumps (5-core reviews + metadata), S3-Rec style."""

  @classmethod
  def read(cls, *, reviews: str | os.PathLike, meta: str | os.PathLike | None,
           min_count: int = 5) -> Dataset:
    return read_amazon_2014(reviews, meta, min_count=min_count)

  @classmethod
  def source_files(cls, *, reviews: str | os.PathLike, meta: str | os.PathLike | None,
                   min_count: int = 5) -> dict[str, pathlib.Path]:
    del min_count  # recorded in the dataset's meta
    paths = [pathlib.Path(reviews)] + ([] if meta is None else [pathlib.Path(meta)])
    return {p.name: p for p in paths}


BUILDERS: dict[str, type[LrmBuilder]] = {
    "layout": LrmLayout, "movielens": LrmMovielens, "amazon2014": LrmAmazon2014}


def build_tfds(out: str | os.PathLike, source: str, *, dataset: Dataset | None = None,
               name: str | None = None, embeddings: Mapping[str, str | os.PathLike] | None = None,
               max_part_bytes: int = DEFAULT_MAX_PART_BYTES,
               **source_args: Any) -> tuple[str, Dataset]:
  """Reads a source and writes its users and items under `out`; returns (name, dataset).

  Args:
    out: the TFDS data_dir.
    source: a key of BUILDERS; `source_args` are its `read` arguments (path=, or reviews=,
      meta=, min_count=).
    dataset: what `read(**source_args)` gives, when the caller has read it already.
    name: the dataset's name; default the source's (made safe by `safe_dataset_name`).
    embeddings: modality -> .npy of float32 [items, d] in catalog order, stored per item.
    max_part_bytes: the estimated size above which a split is cut into another part.

  Returns `BUILDER/DATASET` (what `load_tfds` and `--config.data.tfds` take) and the Dataset.
  A part already written from the same source files (same checksums) is kept; otherwise it is
  written again.
  """
  if source not in BUILDERS:
    raise DataError(f"no TFDS builder for source '{source}' (one of {sorted(BUILDERS)})")
  cls = BUILDERS[source]
  if dataset is None:
    dataset = cls.read(**source_args)
  files = cls.source_files(**source_args)
  if embeddings:
    dataset, files = _with_embeddings(dataset, files, embeddings)
  dataset_name = safe_dataset_name(name or dataset.name)
  checksums = {rel: _file_checksum(path) for rel, path in sorted(files.items())}
  for part in (USERS, ITEMS):
    config = tfds.core.BuilderConfig(name=config_name(dataset_name, part),
                                     description=f"{part} of {dataset.name}")
    builder = cls(dataset=dataset, source_checksums=checksums, max_part_bytes=max_part_bytes,
                  config=config, data_dir=os.fspath(out))
    _prepare(builder)
  return f"{cls.name}/{dataset_name}", dataset


def _prepare(builder: LrmBuilder) -> None:
  mode = (tfds.download.GenerateMode.REUSE_DATASET_IF_EXISTS if _is_current(builder)
          else tfds.download.GenerateMode.REUSE_CACHE_IF_EXISTS)  # regenerates the data
  # No download happens; a throwaway download_dir keeps TFDS from creating DIR/downloads.
  with tempfile.TemporaryDirectory() as downloads:
    builder.download_and_prepare(download_dir=downloads,
                                 download_config=tfds.download.DownloadConfig(download_mode=mode))


def _is_current(builder: LrmBuilder) -> bool:
  """Whether the folder holds this part already, written from the same source files."""
  # Compared with the file, not `builder.info`: TFDS fills the info from the folder if it exists.
  path = pathlib.Path(builder.data_dir) / "metadata.json"
  try:
    return json.loads(path.read_text()) == builder.expected_metadata()
  except (OSError, ValueError):
    return False


def _with_embeddings(dataset: Dataset, files: dict[str, pathlib.Path],
                     embeddings: Mapping[str, str | os.PathLike]
                     ) -> tuple[Dataset, dict[str, pathlib.Path]]:
  arrays = {}
  for modality, path in embeddings.items():
    try:
      arrays[modality] = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
      raise DataError(f"cannot read .npy: {e}", path=path) from None
  catalog = dataset.catalog.with_embeddings(**arrays)  # checks shapes and finiteness
  files = {**files, **{f"embeddings/{m}.npy": pathlib.Path(p) for m, p in embeddings.items()}}
  return Dataset(name=dataset.name, catalog=catalog, sequences=dataset.sequences,
                 meta=dataset.meta, users=dataset.users), files


# ------------------------------------------------------------------------------------------
# Features and records


def _array(dtype, shape=(None,)) -> tfds.features.Tensor:
  # BYTES stores the array's raw bytes. The default goes through tf.train.Example, whose float
  # lists are float32: float64 timestamps would silently lose precision.
  return tfds.features.Tensor(shape=shape, dtype=dtype, encoding=tfds.features.Encoding.BYTES)


def _user_features(dataset: Dataset) -> tfds.features.FeaturesDict:
  seqs = dataset.sequences
  features: dict[str, Any] = {"user_id": np.int64, "length": np.int64,
                              "item_ids": _array(np.int64)}
  if seqs.timestamps is not None:
    features["timestamps"] = _array(np.float64)
  if seqs.event_types is not None:
    features["event_types"] = _array(np.int32)
  for name in seqs.signals:
    features[SIGNAL_PREFIX + name] = _array(np.float32)
  if dataset.users is not None:
    features["attributes"] = tfds.features.Text()
  return tfds.features.FeaturesDict(features)


def _item_features(dataset: Dataset) -> tfds.features.FeaturesDict:
  catalog = dataset.catalog
  features: dict[str, Any] = {"item_id": np.int64, "fields": tfds.features.Text()}
  if catalog.timestamps is not None:
    features["timestamp"] = _array(np.float64, shape=())
  for modality, emb in catalog.embeddings.items():
    features[EMBEDDING_PREFIX + modality] = _array(np.float32, shape=(emb.shape[1],))
  return tfds.features.FeaturesDict(features)


def _user_records(dataset: Dataset, start: int, end: int) -> Iterator[dict[str, Any]]:
  seqs, users = dataset.sequences, dataset.users
  for u in range(start, end):
    a, b = int(seqs.offsets[u]), int(seqs.offsets[u + 1])
    record: dict[str, Any] = {"user_id": int(seqs.user_ids[u]), "length": b - a,
                              "item_ids": seqs.items[a:b]}
    if seqs.timestamps is not None:
      record["timestamps"] = seqs.timestamps[a:b]
    if seqs.event_types is not None:
      record["event_types"] = seqs.event_types[a:b]
    for name, values in seqs.signals.items():
      record[SIGNAL_PREFIX + name] = values[a:b]
    if users is not None:
      record["attributes"] = _json({k: v[u] for k, v in users.fields.items()})
    yield record


def _item_records(dataset: Dataset, start: int, end: int) -> Iterator[dict[str, Any]]:
  catalog = dataset.catalog
  for r in range(start, end):
    record: dict[str, Any] = {"item_id": int(catalog.item_ids[r]),
                              "fields": _json({k: v[r] for k, v in catalog.fields.items()})}
    if catalog.timestamps is not None:
      record["timestamp"] = catalog.timestamps[r]
    for modality, emb in catalog.embeddings.items():
      record[EMBEDDING_PREFIX + modality] = emb[r]
    yield record


def _json(record: Mapping[str, Any]) -> str:
  try:
    return json.dumps(record, ensure_ascii=False, default=_plain)
  except (TypeError, ValueError) as e:
    raise DataError(f"a field value cannot be written as JSON: {e}") from None


def _plain(value: Any) -> Any:
  if isinstance(value, np.generic):
    return value.item()
  if isinstance(value, (np.ndarray, tuple)):
    return list(value.tolist() if isinstance(value, np.ndarray) else value)
  raise TypeError(f"{type(value).__name__} is not JSON serialisable")


# ------------------------------------------------------------------------------------------
# Parts and metadata


def _user_record_bytes(dataset: Dataset) -> np.ndarray:
  """Serialised size per user, over-estimated: int64 as 10-byte varints, 64 bytes of keys."""
  seqs = dataset.sequences
  per_event = 10 + (8 if seqs.timestamps is not None else 0) + 4 * len(seqs.signals) + (
      4 if seqs.event_types is not None else 0)
  sizes = 64 + per_event * seqs.lengths
  if dataset.users is not None:
    sizes = sizes + 32 * (1 + len(dataset.users.fields))
  return sizes


def _item_record_bytes(dataset: Dataset) -> np.ndarray:
  catalog = dataset.catalog
  # The fields' JSON length is only known once written; their str() is close and cheap.
  text = np.array([sum(len(str(v[r])) + len(k) + 6 for k, v in catalog.fields.items())
                   for r in range(len(catalog))], dtype=np.int64)
  dims = sum(emb.shape[1] for emb in catalog.embeddings.values())
  return 64 + 2 * text + 4 * dims


def split_into_parts(sizes: np.ndarray, max_bytes: int) -> list[tuple[int, int]]:
  """Consecutive [start, end) row ranges, each holding at most `max_bytes` (one row at least).

  Shape: sizes int [n] bytes per row.
  """
  if len(sizes) == 0:
    raise DataError("nothing to write: the dataset has no users or no items")
  bounds, start, total = [], 0, 0
  for r, size in enumerate(np.asarray(sizes).tolist()):
    if r > start and total + size > max_bytes:
      bounds.append((start, r))
      start, total = r, 0
    total += size
  bounds.append((start, len(sizes)))
  return bounds


def _metadata(dataset: Dataset, checksums: Mapping[str, Any], part: str) -> dict[str, Any]:
  """What `load_tfds` needs beyond the features, and the source files' checksums."""
  seqs = dataset.sequences
  return {
      "record_format": RECORD_FORMAT,
      "part": part,
      "name": dataset.name,
      "meta": dict(dataset.meta),
      "fields": list(dataset.catalog.fields),
      "user_fields": [] if dataset.users is None else list(dataset.users.fields),
      "signals": list(seqs.signals),
      "event_type_names": list(seqs.event_type_names),
      "counts": {"users": len(seqs), "items": len(dataset.catalog),
                 "interactions": int(seqs.num_events)},
      "source_files": dict(checksums),
  }


def _file_checksum(path: pathlib.Path) -> dict[str, Any]:
  h = hashlib.sha256()
  try:
    with open(path, "rb") as f:
      while chunk := f.read(1 << 20):
        h.update(chunk)
  except OSError as e:
    raise DataError(f"cannot read: {e.strerror}", path=path) from None
  return {"bytes": pathlib.Path(path).stat().st_size, "sha256": h.hexdigest()}
