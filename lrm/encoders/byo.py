"""Bring-your-own embeddings: a float `.npy` matrix with one row per catalog item.

The file is opened memory-mapped (never unpickled), its header checked before any data is read,
then converted to float32 chunk by chunk, so a wrong file fails fast and a large one does not
need twice its size in memory.
"""

from __future__ import annotations

import os
import pathlib

import numpy as np

from lrm.core.errors import DataError

FLOAT_DTYPES = (np.float16, np.float32, np.float64)
_CHUNK_ROWS = 65536


def _open_npy(path: pathlib.Path) -> np.ndarray:
  """Memory-maps an .npy file; nothing is read, and nothing is ever unpickled."""
  with open(path, "rb") as f:
    magic = f.read(6)
  if magic.startswith(b"PK\x03\x04"):
    raise DataError("is an .npz archive; save one matrix with np.save", path=path)
  if magic != b"\x93NUMPY":  # np.load would take it for a pickle
    raise DataError("not a readable .npy file (no NumPy header)", path=path)
  try:
    return np.load(path, mmap_mode="r", allow_pickle=False)
  except ValueError as e:
    if "object" in str(e).lower() or "pickle" in str(e).lower():
      raise DataError("holds pickled Python objects; save a numeric array instead "
                      "(np.save(path, emb.astype(np.float32)))", path=path) from None
    raise DataError(f"not a readable .npy file: {e}", path=path) from None
  except (OSError, EOFError) as e:
    raise DataError(f"not a readable .npy file: {e}", path=path) from None


def load_npy_embeddings(path: str | os.PathLike, expected_rows: int | None = None) -> np.ndarray:
  """Loads and checks an embedding matrix.

  Row r must be the item at catalog row r. Raises DataError naming the file for: a missing or
  unreadable file, pickled objects, a non-floating dtype, ndim != 2, zero columns, a row count
  other than `expected_rows`, and NaN/inf (naming the rows).

  Shape: -> float32 [n, d].
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError("no such file (bring-your-own embeddings must be a .npy file)", path=path)
  array = _open_npy(path)
  if array.dtype.type not in FLOAT_DTYPES:
    raise DataError(f"has dtype {array.dtype}; expected float16, float32 or float64 "
                    "(convert with .astype(np.float32))", path=path)
  if array.ndim != 2:
    raise DataError(f"has shape {array.shape} (ndim {array.ndim}); expected a 2-d matrix "
                    "[items, dims]", path=path)
  rows, dims = array.shape
  if dims == 0:
    raise DataError(f"has shape {array.shape}: zero dimensions per row", path=path)
  if expected_rows is not None and rows != expected_rows:
    raise DataError(f"has {rows} rows but the catalog has {expected_rows} items; row r must "
                    "be the item at catalog row r", path=path)
  out = np.empty((rows, dims), np.float32)
  bad_rows: list[np.ndarray] = []
  for start in range(0, rows, _CHUNK_ROWS):
    chunk = np.asarray(array[start:start + _CHUNK_ROWS])
    with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf: reported
      out[start:start + len(chunk)] = chunk
    finite = np.isfinite(out[start:start + len(chunk)]).all(axis=1)
    if not finite.all():
      bad_rows.append(start + np.flatnonzero(~finite))
  if bad_rows:
    bad = np.concatenate(bad_rows)
    raise DataError(f"has NaN or inf (or values beyond float32's range) in {len(bad)} rows: "
                    f"{bad[:20].tolist()}{' ...' if len(bad) > 20 else ''}", path=path)
  return out
