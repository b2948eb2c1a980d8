"""A vocabulary of SID tokens: one token per (level, code), plus special and user tokens.

Layout (ids): 0 pad, 1 bos, 2 eos, then `num_user_tokens` hashed user tokens (TIGER hashed
user ids into 2,000), then level 0's codes, level 1's codes, ... So a code is a token only at
its own level: (level 0, code 5) and (level 1, code 5) are different tokens, as in TIGER.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from lrm.core.errors import ConfigError, DataError

PAD, BOS, EOS = 0, 1, 2
NUM_SPECIAL = 3


def stable_hash(values: np.ndarray, seed: int = 0) -> np.ndarray:
  """A deterministic 64-bit mix (splitmix64) of integers; the same in every process.

  Shape: values int [...] -> uint64 [...].
  """
  with np.errstate(over="ignore"):
    z = np.asarray(values).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15) * np.uint64(seed + 1)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


@dataclasses.dataclass(frozen=True)
class SIDVocab:
  """Token ids for SIDs of `codebook_sizes` (one size per level, the collision level included)."""
  codebook_sizes: tuple[int, ...]
  num_user_tokens: int = 2000
  user_hash_seed: int = 0

  def __post_init__(self):
    sizes = tuple(int(k) for k in self.codebook_sizes)
    if not sizes or min(sizes) < 1:
      raise ConfigError("codebook_sizes", f"need one positive size per level, got {sizes}")
    if self.num_user_tokens < 0:
      raise ConfigError("num_user_tokens", f"must be >= 0, got {self.num_user_tokens}")
    object.__setattr__(self, "codebook_sizes", sizes)

  @property
  def num_levels(self) -> int:
    return len(self.codebook_sizes)

  @property
  def user_offset(self) -> int:
    return NUM_SPECIAL

  @property
  def level_offsets(self) -> tuple[int, ...]:
    start = NUM_SPECIAL + self.num_user_tokens
    return tuple(int(x) for x in start + np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]]))

  @property
  def size(self) -> int:
    return NUM_SPECIAL + self.num_user_tokens + sum(self.codebook_sizes)

  def encode_codes(self, codes: Any) -> np.ndarray:
    """SID codes -> token ids. Shape: int [..., L] -> int32 [..., L]."""
    codes = np.asarray(codes)
    if codes.shape[-1:] != (self.num_levels,):
      raise DataError(f"codes have {codes.shape[-1:]} levels, the vocabulary {self.num_levels}")
    sizes = np.asarray(self.codebook_sizes)
    if codes.size and ((codes < 0) | (codes >= sizes)).any():
      raise DataError(f"codes out of range for codebook sizes {self.codebook_sizes}")
    return (codes + np.asarray(self.level_offsets)).astype(np.int32)

  def decode_tokens(self, tokens: Any) -> np.ndarray:
    """Token ids -> SID codes; a token of the wrong level is an error. Shape as encode_codes."""
    tokens = np.asarray(tokens)
    codes = tokens - np.asarray(self.level_offsets)
    if tokens.size and ((codes < 0) | (codes >= np.asarray(self.codebook_sizes))).any():
      raise DataError("tokens are not SID tokens of their level")
    return codes.astype(np.int32)

  def user_tokens(self, user_ids: Any) -> np.ndarray:
    """Hashed user tokens (TIGER's user-id hashing). Shape: int [...] -> int32 [...]."""
    if self.num_user_tokens == 0:
      raise ConfigError("num_user_tokens", "is 0: this vocabulary has no user tokens")
    h = stable_hash(np.asarray(user_ids), self.user_hash_seed) % np.uint64(self.num_user_tokens)
    return (h.astype(np.int64) + self.user_offset).astype(np.int32)

  def level_slice(self, level: int) -> slice:
    """The token ids of one level's codes (for per-level output heads and masks)."""
    start = self.level_offsets[level]
    return slice(start, start + self.codebook_sizes[level])
