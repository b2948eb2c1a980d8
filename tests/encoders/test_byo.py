"""Bring-your-own .npy embeddings: loaded as float32, every bad file named with its fault."""

from __future__ import annotations

import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.encoders.byo import load_npy_embeddings


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_loads_float_matrices(tmp_path, dtype):
  emb = np.random.default_rng(0).standard_normal((7, 5)).astype(dtype)
  path = tmp_path / "emb.npy"
  np.save(path, emb)
  out = load_npy_embeddings(path, 7)
  assert out.dtype == np.float32 and out.shape == (7, 5)
  np.testing.assert_array_equal(out, emb.astype(np.float32))
  assert load_npy_embeddings(path).shape == (7, 5)  # row count unchecked when not given


def test_large_file_in_chunks(tmp_path, monkeypatch):
  from lrm.encoders import byo
  monkeypatch.setattr(byo, "_CHUNK_ROWS", 3)
  emb = np.arange(40, dtype=np.float64).reshape(10, 4)
  emb[[2, 7]] = np.nan
  np.save(tmp_path / "e.npy", emb)
  with pytest.raises(DataError, match=r"in 2 rows: \[2, 7\]"):
    load_npy_embeddings(tmp_path / "e.npy", 10)


def _save(tmp_path, array, **kw):
  path = tmp_path / "emb.npy"
  np.save(path, array, **kw)
  return path


def test_wrong_rows(tmp_path):
  path = _save(tmp_path, np.zeros((6, 4), np.float32))
  with pytest.raises(DataError, match=r"emb\.npy: has 6 rows but the catalog has 7 items"):
    load_npy_embeddings(path, 7)


@pytest.mark.parametrize("shape", [(6,), (2, 3, 4)])
def test_wrong_ndim(tmp_path, shape):
  path = _save(tmp_path, np.zeros(shape, np.float32))
  with pytest.raises(DataError, match=rf"emb\.npy: has shape .* \(ndim {len(shape)}\)"):
    load_npy_embeddings(path, 6)


def test_zero_columns(tmp_path):
  with pytest.raises(DataError, match="zero dimensions"):
    load_npy_embeddings(_save(tmp_path, np.zeros((3, 0), np.float32)), 3)


def test_nan_and_inf_rows_are_named(tmp_path):
  emb = np.ones((9, 3), np.float32)
  emb[1, 0] = np.nan
  emb[5, 2] = -np.inf
  with pytest.raises(DataError, match=r"emb\.npy: has NaN or inf .* in 2 rows: \[1, 5\]"):
    load_npy_embeddings(_save(tmp_path, emb), 9)


def test_float64_beyond_float32_range(tmp_path):
  emb = np.ones((3, 2))
  emb[2, 1] = 1e300
  with pytest.raises(DataError, match=r"in 1 rows: \[2\]"):
    load_npy_embeddings(_save(tmp_path, emb), 3)


@pytest.mark.parametrize("array, dtype_name", [
    (np.array([["a", "b"], ["c", "d"]]), "<U1"),
    (np.zeros((2, 2), np.int64), "int64"),
    (np.zeros((2, 2), bool), "bool"),
    (np.zeros((2, 2), np.complex64), "complex64"),
])
def test_non_float_dtypes(tmp_path, array, dtype_name):
  with pytest.raises(DataError, match=rf"emb\.npy: has dtype {dtype_name}; expected float16"):
    load_npy_embeddings(_save(tmp_path, array), 2)


def test_pickled_objects_are_refused(tmp_path):
  array = np.empty((2, 2), object)
  array[:] = [[1.0, {"x": 1}], [2.0, 3.0]]
  path = _save(tmp_path, array, allow_pickle=True)
  with pytest.raises(DataError, match=r"emb\.npy: holds pickled Python objects"):
    load_npy_embeddings(path, 2)


def test_missing_and_garbage_files(tmp_path):
  with pytest.raises(DataError, match=r"nope\.npy: no such file"):
    load_npy_embeddings(tmp_path / "nope.npy", 2)
  bad = tmp_path / "bad.npy"
  bad.write_bytes(b"this is not numpy")
  with pytest.raises(DataError, match=r"bad\.npy: not a readable \.npy file"):
    load_npy_embeddings(bad, 2)
  archive = tmp_path / "emb.npz"
  np.savez(archive, a=np.zeros((2, 2), np.float32))
  with pytest.raises(DataError, match=r"emb\.npz: is an \.npz archive"):
    load_npy_embeddings(archive, 2)
