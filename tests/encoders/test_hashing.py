"""HashingEncoder: deterministic everywhere, normalised, and meaning something."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.encoders.hashing import HashingEncoder

TEXTS = [
    "OPI Nail Lacquer, Simmer and Shimmer, 0.5-Fluid Ounce; OPI; Makeup > Nails > Nail Polish",
    "OPI Nail Lacquer, Simmer & Shimmer, 0.5 fl oz; OPI; Makeup > Nails > Nail Polish",
    "Waterproof Mascara Black; Maybelline; Makeup > Eyes > Mascara",
    "Argan Oil Shampoo for Dry Hair; Hair Care > Shampoos",
    "",
    "Ünïcödé テキスト 🙂",
]


def _digest(emb: np.ndarray) -> str:
  return hashlib.sha256(np.ascontiguousarray(emb, np.float32).tobytes()).hexdigest()


def test_shape_dtype_normalised():
  emb = HashingEncoder().encode(TEXTS)
  assert emb.shape == (len(TEXTS), 384) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  assert HashingEncoder(dim=64).encode(["a b"]).shape == (1, 64)
  assert HashingEncoder().encode([]).shape == (0, 384)


def test_deterministic_within_and_across_processes():
  enc = HashingEncoder()
  first = enc.encode(TEXTS)
  np.testing.assert_array_equal(first, HashingEncoder().encode(TEXTS))
  # Chunking does not change the result.
  np.testing.assert_array_equal(first, HashingEncoder(chunk_size=2).encode(TEXTS))
  # A fresh interpreter with a different str-hash seed gives the same bytes.
  code = ("import hashlib, sys, numpy as np; from lrm.encoders.hashing import HashingEncoder; "
          f"e = HashingEncoder().encode({TEXTS!r}); "
          "sys.stdout.write(hashlib.sha256(np.ascontiguousarray(e, np.float32).tobytes())"
          ".hexdigest())")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                       env={"PYTHONHASHSEED": "12345", "PATH": "/usr/bin:/bin"})
  assert out.stdout == _digest(first)


def test_pinned_values():
  # Artifacts built by earlier runs must stay comparable: a change here changes every
  # hashing embedding ever written. Update only on purpose.
  emb = HashingEncoder().encode(["red nail polish"])[0]
  np.testing.assert_allclose(emb[:4], PINNED, atol=1e-6)


PINNED = np.array([0.01636729, 0.01770696, -0.02266938, 0.01783189], np.float32)


def test_near_duplicates_are_closer_than_unrelated():
  emb = HashingEncoder().encode(TEXTS)
  sims = emb @ emb.T
  assert sims[0, 1] > 0.6
  assert sims[0, 1] > sims[0, 2] + 0.3 and sims[0, 1] > sims[0, 3] + 0.3
  # Shared word pieces count: "eyelashes" is close to "eyelash".
  a, b, c = HashingEncoder().encode(["false eyelashes", "false eyelash", "garden hose"])
  assert a @ b > a @ c + 0.3


def test_empty_and_wordless_texts():
  enc = HashingEncoder()
  emb = enc.encode(["", "", "   ", "!!!", "nail"])
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  np.testing.assert_array_equal(emb[0], emb[1])  # the same fixed vector for every empty text
  assert abs(emb[0] @ emb[4]) < 0.5


def test_case_insensitive():
  enc = HashingEncoder()
  a, b = enc.encode(["Nail Polish", "nail polish"])
  np.testing.assert_array_equal(a, b)


def test_bad_input():
  enc = HashingEncoder()
  with pytest.raises(DataError, match="single str"):
    enc.encode("text")
  with pytest.raises(DataError, match="text 1 is NoneType"):
    enc.encode(["a", None])
  with pytest.raises(ConfigError, match="num_buckets"):
    HashingEncoder(num_buckets=1000)
  with pytest.raises(ConfigError, match="dim"):
    HashingEncoder(dim=0)
  with pytest.raises(ConfigError, match="char_ngrams"):
    HashingEncoder(char_ngrams=(5, 3))


def test_describe():
  d = HashingEncoder(dim=128, seed=7).describe()
  assert d["kind"] == "hashing" and d["dims"] == 128 and d["seed"] == 7
