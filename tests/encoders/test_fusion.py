"""Fusing modalities: normalisation, weights, concat and projection, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.encoders import fusion


def _cos(x):
  x = x / np.linalg.norm(x, axis=1, keepdims=True)
  return x @ x.T


@pytest.fixture
def parts():
  rng = np.random.default_rng(0)
  # Very different scales and widths: fusion must not let `audio` dominate by size.
  return {"text": rng.standard_normal((20, 8)).astype(np.float32),
          "audio": (1000 * rng.standard_normal((20, 32))).astype(np.float64)}


def test_concat_is_the_weighted_mean_of_cosines(parts):
  out = fusion.fuse(parts, weights={"text": 3.0, "audio": 1.0})
  assert out.shape == (20, 40) and out.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
  want = (3 * _cos(parts["text"]) + _cos(parts["audio"])) / 4
  np.testing.assert_allclose(out @ out.T, want, atol=1e-5)
  # Input order is kept: the text block comes first.
  np.testing.assert_allclose(out[:, :8] / np.linalg.norm(out[:, :8], axis=1, keepdims=True),
                             parts["text"] / np.linalg.norm(parts["text"], axis=1, keepdims=True),
                             atol=1e-5)


def test_equal_weights_by_default(parts):
  out = fusion.fuse(parts)
  np.testing.assert_allclose(out @ out.T, (_cos(parts["text"]) + _cos(parts["audio"])) / 2,
                             atol=1e-5)


def test_zero_weight_drops_a_modality(parts):
  out = fusion.fuse(parts, weights={"audio": 0.0})
  np.testing.assert_allclose(out @ out.T, _cos(parts["text"]), atol=1e-5)


def test_projection_reduces_deterministically(parts):
  a = fusion.fuse(parts, method="projection", dim=16, seed=1)
  assert a.shape == (20, 16) and a.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(a, fusion.fuse(parts, method="projection", dim=16, seed=1))
  assert not np.allclose(a, fusion.fuse(parts, method="projection", dim=16, seed=2))


def test_projection_widening_is_an_isometry(parts):
  concat = fusion.fuse(parts)
  wide = fusion.fuse(parts, method="projection", dim=64)
  np.testing.assert_allclose(wide @ wide.T, concat @ concat.T, atol=1e-5)
  same = fusion.fuse(parts, method="projection")  # default dim: the summed width
  assert same.shape == (20, 40)
  np.testing.assert_allclose(same @ same.T, concat @ concat.T, atol=1e-5)


def test_orthogonal_projection_columns_are_orthonormal():
  q = fusion.orthogonal_projection(50, 10, seed=0)
  np.testing.assert_allclose(q.T @ q, np.eye(10), atol=1e-5)
  q = fusion.orthogonal_projection(10, 50, seed=0)
  np.testing.assert_allclose(q @ q.T, np.eye(10), atol=1e-5)


def test_standardize_removes_a_shared_offset():
  rng = np.random.default_rng(1)
  # A huge common offset makes every raw cosine ~1; standardising per dimension removes it.
  emb = (rng.standard_normal((50, 6)) + 100.0).astype(np.float32)
  raw = fusion.fuse({"x": emb})
  std = fusion.fuse({"x": emb}, standardize=True)
  assert (raw @ raw.T).min() > 0.99
  assert (std @ std.T).min() < 0.0


def test_single_modality_is_normalised():
  emb = np.array([[3.0, 4.0], [0.0, 2.0]], np.float32)
  np.testing.assert_allclose(fusion.fuse({"x": emb}), [[0.6, 0.8], [0.0, 1.0]], atol=1e-6)


def test_mismatched_rows(parts):
  parts["audio"] = parts["audio"][:19]
  with pytest.raises(DataError, match="'audio' has 19 rows but 'text' has 20"):
    fusion.fuse(parts)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_rows_are_named(parts, bad):
  parts["text"][[4, 11], 2] = bad
  with pytest.raises(DataError, match=r"'text' has NaN or inf in 2 rows, first \[4, 11\]"):
    fusion.fuse(parts)


def test_bad_method_dim_and_weights(parts):
  with pytest.raises(ConfigError, match="unknown fusion method 'sum'") as e:
    fusion.fuse(parts, method="sum")
  assert e.value.field == "embed.fuse"
  with pytest.raises(ConfigError, match="concat gives 40 dims"):
    fusion.fuse(parts, dim=16)
  with pytest.raises(ConfigError, match="positive integer"):
    fusion.fuse(parts, method="projection", dim=0)
  with pytest.raises(ConfigError, match=r"unknown modalities \['video'\]"):
    fusion.fuse(parts, weights={"video": 1.0})
  with pytest.raises(ConfigError, match=">= 0"):
    fusion.fuse(parts, weights={"text": -1.0})
  with pytest.raises(ConfigError, match="not all 0"):
    fusion.fuse(parts, weights={"text": 0.0, "audio": 0.0})


def test_bad_shapes_and_dtypes():
  with pytest.raises(DataError, match="at least one modality"):
    fusion.fuse({})
  with pytest.raises(DataError, match=r"'x' has shape \(5,\)"):
    fusion.fuse({"x": np.zeros(5)})
  with pytest.raises(DataError, match="dtype <U1"):
    fusion.fuse({"x": np.array([["a"], ["b"]])})
