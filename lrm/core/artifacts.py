"""Artifacts on disk: atomic writes and JSON manifests.

Every stage writes its outputs under temporary names and renames them into place, so a crash
never leaves a half-written file that looks complete. The manifest is written last: its
presence marks the artifact as complete.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import io
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import uuid
from importlib import metadata
from typing import Any, Iterator, Mapping

import jax
import numpy as np

from lrm.core.errors import DataError

MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
  """Yields a temporary path beside `path`; renames it onto `path` only if the block succeeds."""
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
  os.close(fd)
  tmp = pathlib.Path(tmp)
  try:
    yield tmp
    os.replace(tmp, path)
  finally:
    if tmp.exists():
      tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
  with atomic_path(path) as tmp:
    with open(tmp, "wb") as f:
      f.write(data)
      f.flush()
      os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
  atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
  atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


# Every benchmark record carries these (None where one does not apply, e.g. `split` of a speed
# benchmark); benchmarks/README.md's table is read from them.
RECORD_FIELDS = ("benchmark", "dataset", "split", "model", "variant", "metrics", "train",
                 "device", "wall_s", "commit", "command", "seed")


def benchmark_record(benchmark: str, *, dataset: str | None, metrics: Any,
                     split: str | None = None, model: str | None = None,
                     variant: str | None = None, train: Mapping[str, Any] | None = None,
                     wall_s: float | None = None, seed: Any = None, **extra: Any) -> dict:
  """One benchmark run's record: the shared fields (`RECORD_FIELDS`) first, then `extra`.

  `device`, `commit` and `command` describe this process unless `extra` names them (a merged
  record lists its inputs' devices and commits). `train` holds at least `train_wall_s` when the
  run trains.
  """
  if train is not None and "train_wall_s" not in train:
    raise ValueError(f"{benchmark} record: train needs train_wall_s, got {sorted(train)}")
  record = {"benchmark": benchmark, "dataset": dataset, "split": split, "model": model,
            "variant": variant, "metrics": metrics, "train": train,
            "device": device_description()[0],
            "wall_s": None if wall_s is None else round(float(wall_s), 1),
            "commit": git_commit(), "command": " ".join(["python", *sys.argv]), "seed": seed}
  record.update(extra)
  return record


def write_benchmark_result(out_dir: str | os.PathLike, stem: str, record: Any) -> pathlib.Path:
  """Writes one benchmark run to `out_dir/<stem>_<YYYYmmdd-HHMMSS>.json` (atomically, the
  folder made if needed), prints and returns the path: the naming benchmarks/results uses.

  `record` comes from `benchmark_record` (ValueError when a shared field is missing).
  """
  missing = [f for f in RECORD_FIELDS if f not in record]
  if missing:
    raise ValueError(f"{stem}: benchmark record lacks {missing} (build it with "
                     "benchmark_record)")
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  path = pathlib.Path(out_dir) / f"{stem}_{stamp}.json"
  path.parent.mkdir(parents=True, exist_ok=True)
  atomic_write_json(path, record)
  print(f"wrote {path}")
  return path


def save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
  """Writes an .npy file atomically."""
  buf = io.BytesIO()
  np.save(buf, np.asarray(array), allow_pickle=False)
  atomic_write_bytes(path, buf.getvalue())


def _json_default(obj: Any) -> Any:
  if isinstance(obj, np.generic):
    return obj.item()
  if isinstance(obj, np.ndarray):
    return obj.tolist()
  if isinstance(obj, pathlib.PurePath):
    return str(obj)
  if hasattr(obj, "to_dict"):  # ml_collections.ConfigDict
    return obj.to_dict()
  raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def package_versions() -> dict[str, str]:
  """Versions of the packages whose behaviour an artifact depends on."""
  out = {"python": platform.python_version()}
  for name in ("lrm", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint", "grain", "numpy",
               "tokenizers", "safetensors"):
    try:
      out[name] = metadata.version(name)
    except metadata.PackageNotFoundError:
      pass
  return out


@functools.cache
def git_commit() -> str | None:
  """The project's commit, when run from a git checkout (for benchmark records).

  Read once per process, at the first call: a long benchmark calls it as it starts, so its
  record names the code that ran even if the checkout moves on before it writes.
  """
  root = pathlib.Path(__file__).resolve().parents[2]
  try:
    out = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, timeout=5, check=True)
    dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    return out.stdout.strip() + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return None


def cpu_name() -> str:
  """The CPU model, as /proc/cpuinfo names it."""
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "unknown CPU"


def device_description() -> tuple[str, str]:
  """(what the jax devices are, a short slug for file names), for benchmark records."""
  devices = jax.devices()
  if devices[0].platform == "cpu":
    cores = os.cpu_count()
    return f"{cpu_name()}, {cores} cores, {len(devices)} jax CPU device(s)", f"cpu{cores}"
  return f"{len(devices)} x {devices[0].device_kind}", f"{devices[0].platform}{len(devices)}"


def write_manifest(directory: str | os.PathLike, *, stage: str, config: Any = None,
                   counts: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
  """Writes `directory/manifest.json` (last, atomically) and returns its content.

  Every manifest gets a fresh `id`; a later stage records the ids of the artifacts it read
  (`inputs=`), so `is_complete` notices when an input was rebuilt.
  """
  manifest = {
      "stage": stage,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "command": " ".join(sys.argv),
      "versions": package_versions(),
      "commit": git_commit(),
      "config": config,
      "counts": counts or {},
      **extra,
      "id": uuid.uuid4().hex,
  }
  atomic_write_json(pathlib.Path(directory) / MANIFEST, manifest)
  return manifest


def read_json(path: str | os.PathLike) -> Any:
  """Parses a JSON file; invalid JSON is a DataError naming the file and line."""
  path = pathlib.Path(path)
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise DataError(f"invalid JSON: {e.msg}", path=path, line=e.lineno) from None


def read_manifest(directory: str | os.PathLike) -> dict[str, Any]:
  path = pathlib.Path(directory) / MANIFEST
  if not path.exists():
    raise DataError("no manifest.json: the artifact is missing or was not completed", path=path)
  return read_json(path)


def _normalise(obj: Any) -> Any:
  return json.loads(json.dumps(obj, default=_json_default))


def artifact_id(directory: str | os.PathLike) -> str:
  """What identifies an input artifact: its manifest id, or the absolute path of a folder
  made elsewhere (e.g. `../shared/data`, which has no manifest)."""
  path = pathlib.Path(directory)
  try:
    return str(json.loads((path / MANIFEST).read_text())["id"])
  except (OSError, json.JSONDecodeError, KeyError):
    return str(path.resolve())


def is_complete(directory: str | os.PathLike, config: Any, inputs: Any = None, *,
                defaults: Mapping[str, Any] | None = None) -> bool:
  """True when `directory` holds a finished artifact made from the same `config` and inputs.

  The manifest is written last, so its presence means every file before it is whole; the config
  comparison makes a changed setting redo the stage, and the `inputs` comparison (ids of the
  artifacts the stage read, see `artifact_id`) makes a rebuilt input redo it, instead of
  silently reusing stale output.

  `defaults` (a stage spec's default field values): a field the manifest's config lacks was
  added after the artifact was written, and still matches when `config` holds its default (the
  stage made the same output then), so adding a field does not redo old runs.
  """
  path = pathlib.Path(directory) / MANIFEST
  if not path.exists():
    return False
  try:
    manifest = json.loads(path.read_text())
  except json.JSONDecodeError:
    return False
  expected = _normalise(config)
  saved = manifest.get("config")
  if defaults is not None and isinstance(expected, dict) and isinstance(saved, dict):
    default = _normalise(dict(defaults))
    expected = {k: v for k, v in expected.items()
                if k in saved or k not in default or v != default[k]}
  return saved == expected and manifest.get("inputs") == _normalise(inputs)
