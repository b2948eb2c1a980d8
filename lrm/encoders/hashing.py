"""A dependency-free text encoder for when no model weights exist: hashed n-grams, projected.

Features of a lower-cased text: word unigrams and bigrams, and character 3- to 5-grams inside
each word padded with spaces (" nail " -> " na", "nai", ..., "il "), so shared word pieces
("eyelash", "eyelashes") overlap. Each feature is hashed with a fixed 64-bit polynomial hash
and finalizer (never Python's salted `hash()`), given a sign and a bucket among `num_buckets`,
weighted by sublinear term frequency (1 + log tf), then the sparse vector is multiplied by a
fixed seeded Gaussian matrix [num_buckets, dim] and L2-normalised.

Everything is vectorised numpy over a chunk of texts; the same text gives the same vector in
every process and on every machine. Memory: the projection (num_buckets * dim * 4 bytes, 48 MiB
at the defaults) plus a bounded working set per chunk.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

import numpy as np
import scipy.sparse
from tqdm.auto import tqdm

from lrm.core.errors import ConfigError
from lrm.encoders.texts import check_texts

_WORD_RE = re.compile(r"\w+")
_U64 = np.uint64
# Odd 64-bit constants (splitmix64 / golden ratio) for the polynomial hash and the finalizer.
_POLY = _U64(0x100000001B3)  # FNV-1a 64-bit prime
_GOLDEN = _U64(0x9E3779B97F4A7C15)
# Salts keep the feature kinds apart: the word "nail" and the 4-gram "nail" differ.
_SALT_WORD, _SALT_BIGRAM, _SALT_EMPTY = _U64(0x1), _U64(0x2), _U64(0x3)
# tf counting packs (text in chunk, top 44 hash bits) into one uint64 key.
_MAX_CHUNK = 1 << 20


def _mix64(h: np.ndarray) -> np.ndarray:
  """splitmix64's finalizer: spreads every input bit over all output bits (uint64, wraps)."""
  h = h ^ (h >> _U64(30))
  h = h * _U64(0xBF58476D1CE4E5B9)
  h = h ^ (h >> _U64(27))
  h = h * _U64(0x94D049BB133111EB)
  return h ^ (h >> _U64(31))


def _powers(n: int) -> np.ndarray:
  """POLY ** k for k < n, uint64 with wrap-around."""
  out = np.ones(max(n, 1), np.uint64)
  with np.errstate(over="ignore"):  # wrap-around is the point
    for k in range(1, n):
      out[k] = out[k - 1] * _POLY
  return out


def _sparse_matmul(rows: np.ndarray, cols: np.ndarray, values: np.ndarray,
                   matrix: np.ndarray, num_rows: int) -> np.ndarray:
  """Sparse [num_rows, k] (COO triplets) @ dense [k, d] -> float32 [num_rows, d].

  scipy (a dependency, installed with jax) runs it ~20x faster than numpy's segment sums.
  """
  sparse = scipy.sparse.csr_matrix((values, (rows, cols)), shape=(num_rows, matrix.shape[0]))
  return np.asarray(sparse @ matrix, np.float32)


class HashingEncoder:
  """Hashed word and character n-grams -> fixed random projection -> L2-normalised vectors.

  Args:
    dim: output dimension.
    num_buckets: hashed feature space (a power of two); the projection is [num_buckets, dim].
    seed: seed of the projection.
    char_ngrams: (min, max) character n-gram sizes within words; (0, 0) disables them.
    word_weight: weight of word unigram/bigram features relative to character n-grams.
    chunk_size: texts hashed at once (bounds the working memory).
  """

  name = "hashing"

  def __init__(self, dim: int = 384, *, num_buckets: int = 1 << 15, seed: int = 0,
               char_ngrams: tuple[int, int] = (3, 5), word_weight: float = 1.0,
               chunk_size: int = 256):
    if dim <= 0:
      raise ConfigError("dim", f"must be positive, got {dim}")
    if num_buckets <= 0 or num_buckets & (num_buckets - 1):
      raise ConfigError("num_buckets", f"must be a power of two, got {num_buckets}")
    lo, hi = char_ngrams
    if (lo, hi) != (0, 0) and not 1 <= lo <= hi:
      raise ConfigError("char_ngrams",
                        f"must be (min, max) with 1 <= min <= max, got {char_ngrams}")
    if word_weight < 0:
      raise ConfigError("word_weight", f"must be >= 0, got {word_weight}")
    if not 0 < chunk_size <= _MAX_CHUNK:
      raise ConfigError("chunk_size", f"must be in [1, {_MAX_CHUNK}], got {chunk_size}")
    self.dim = int(dim)
    self.num_buckets = int(num_buckets)
    self.seed = int(seed)
    self.char_ngrams = (int(lo), int(hi))
    self.word_weight = float(word_weight)
    self.chunk_size = int(chunk_size)
    self._projection: np.ndarray | None = None

  @property
  def projection(self) -> np.ndarray:
    """The fixed [num_buckets, dim] Gaussian matrix (made on first use)."""
    if self._projection is None:
      rng = np.random.default_rng(self.seed)
      self._projection = rng.standard_normal((self.num_buckets, self.dim), dtype=np.float32)
    return self._projection

  def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
             show_progress: bool = False) -> np.ndarray:
    """Embeddings of `texts` in input order (batch_size is accepted for the Encoder protocol).

    Shape: -> float32 [n, dim], rows L2-normalised (an empty text gets a fixed unit vector).
    """
    del batch_size  # chunking is by chunk_size: the result does not depend on it
    texts = check_texts(texts)
    out = np.zeros((len(texts), self.dim), np.float32)
    with tqdm(total=len(texts), unit="items", desc="encode (hashing)",
              disable=not show_progress) as bar:
      for start in range(0, len(texts), self.chunk_size):
        chunk = texts[start:start + self.chunk_size]
        out[start:start + len(chunk)] = self._encode_chunk(chunk)
        bar.update(len(chunk))
    return out

  def features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sparse weighted features: (text index, bucket, signed weight), sorted by text.

    Shape: -> int64 [f], int64 [f], float32 [f].
    """
    docs, hashes, weights = self._hash_features(texts)
    # One entry per distinct (text, feature): tf counts, then sublinear weights.
    key = (docs.astype(np.uint64) << _U64(44)) | (hashes >> _U64(20))
    key, first, counts = np.unique(key, return_index=True, return_counts=True)
    docs = (key >> _U64(44)).astype(np.int64)
    h = hashes[first]
    buckets = (h & _U64(self.num_buckets - 1)).astype(np.int64)
    signs = np.where((h >> _U64(63)) == _U64(1), -1.0, 1.0).astype(np.float32)
    values = signs * weights[first] * (1.0 + np.log(counts)).astype(np.float32)
    return docs, buckets, values

  def _hash_features(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every feature occurrence: (text index, 64-bit hash, kind weight)."""
    words_per_text = [_WORD_RE.findall(t.lower()) for t in texts]
    n_words = np.fromiter((len(w) for w in words_per_text), np.int64, count=len(texts))
    words = [w for ws in words_per_text for w in ws]
    doc_of_word = np.repeat(np.arange(len(texts)), n_words)
    parts_doc, parts_hash, parts_weight = [], [], []

    if words:
      # All words padded with spaces, as one array of code points; segment = one padded word.
      codes = np.frombuffer("".join(f" {w} " for w in words).encode("utf-32-le"),
                            np.uint32).astype(np.uint64)
      seg_len = np.fromiter((len(w) + 2 for w in words), np.int64, count=len(words))
      seg_end = np.cumsum(seg_len)
      seg_start = seg_end - seg_len
      seg_of = np.repeat(np.arange(len(words)), seg_len)
      pos_in_seg = np.arange(len(codes)) - seg_start[seg_of]
      # Word hash: polynomial over the padded word, summed per segment (wraps mod 2**64).
      powers = _powers(int(seg_len.max()))
      terms = codes * powers[seg_len[seg_of] - 1 - pos_in_seg]
      word_hash = _mix64(np.add.reduceat(terms, seg_start) ^ _SALT_WORD)
      parts_doc.append(doc_of_word)
      parts_hash.append(word_hash)
      parts_weight.append(np.full(len(words), self.word_weight, np.float32))
      # Bigrams of consecutive words within a text.
      same_text = doc_of_word[1:] == doc_of_word[:-1]
      if same_text.any():
        left, right = word_hash[:-1][same_text], word_hash[1:][same_text]
        parts_doc.append(doc_of_word[1:][same_text])
        parts_hash.append(_mix64(left * _GOLDEN + right + _SALT_BIGRAM))
        parts_weight.append(np.full(len(left), self.word_weight, np.float32))
      # Character n-grams inside padded words.
      lo, hi = self.char_ngrams
      for n in range(lo, hi + 1) if lo else ():
        if len(codes) < n:
          continue
        starts = np.arange(len(codes) - n + 1)
        valid = starts + n <= seg_end[seg_of[starts]]
        starts = starts[valid]
        h = np.zeros(len(starts), np.uint64)
        for j in range(n):
          h = h * _POLY + codes[starts + j]
        parts_doc.append(doc_of_word[seg_of[starts]])
        parts_hash.append(_mix64(h ^ (_U64(n) << _U64(56))))
        parts_weight.append(np.ones(len(starts), np.float32))

    # Texts without any word share one fixed feature, so they still get a unit vector.
    empty = np.flatnonzero(n_words == 0)
    if len(empty):
      parts_doc.append(empty)
      parts_hash.append(np.full(len(empty), _mix64(np.array([_SALT_EMPTY]))[0], np.uint64))
      parts_weight.append(np.ones(len(empty), np.float32))
    return (np.concatenate(parts_doc).astype(np.int64), np.concatenate(parts_hash),
            np.concatenate(parts_weight))

  def _encode_chunk(self, texts: Sequence[str]) -> np.ndarray:
    docs, buckets, values = self.features(texts)
    dense = _sparse_matmul(docs, buckets, values, self.projection, len(texts))
    norms = np.linalg.norm(dense, axis=1, keepdims=True)
    return (dense / np.maximum(norms, 1e-12)).astype(np.float32)

  def describe(self) -> dict[str, Any]:
    return {
        "kind": "hashing",
        "name": self.name,
        "dims": self.dim,
        "num_buckets": self.num_buckets,
        "seed": self.seed,
        "char_ngrams": list(self.char_ngrams),
        "word_ngrams": [1, 2],
        "word_weight": self.word_weight,
        "dtype": "float32",
        "max_seq_length": None,
        "path": None,
    }
