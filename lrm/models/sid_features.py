"""Prefix n-gram embeddings of Semantic IDs (Singh et al. 2023; FLUID; "Beyond Item IDs").

An item with SID (c1, c2, c3) is represented by one learned row per *prefix*: a row for (c1),
one for (c1, c2), one for (c1, c2, c3). Level l's table is keyed by the whole prefix, never by
c_l alone, so the same c2 under two different c1 is two different rows (no sharing across
subtrees), and items that share a coarse prefix share that prefix's row: a new item inherits
what was learned for its neighbours, and no table grows with the catalog.

Keys: level l has prod(k_1..k_l) possible prefixes. While that fits in `max_rows`, the key is
exact (mixed radix: key_l = key_{l-1} * k_l + c_l). Deeper levels are hashed into `max_rows`
rows: a 32-bit chain hash h_l = mix(h_{l-1}, c_l, l) of the whole prefix, so a hashed key still
depends on every code above it; collisions are possible there and `collision_report` counts
them for a given set of codes.

Several code families (e.g. an item's SID and its room's SID, or RQ-KMeans and RQ-VAE codes)
each get their own tables. Outputs are summed ("sum": one vector per item) or kept as one token
per (family, level) ("tokens": late fusion, for rankers). Depth truncation (use only the first
few levels, as history tokens in "Beyond Item IDs") is the `levels` argument of a call or of a
family. A code < 0 marks padding: that prefix and every deeper one contribute zero.

Shape letters: c SID level, d embed width, n tokens per item (families x levels).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.layers import embedding, padded_rows, sharding_scope

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_COMBINE = ("sum", "tokens")
# murmur3's fmix32 constants and a golden-ratio multiplier for the chain hash.
_M1, _M2, _GOLDEN = 0x85EBCA6B, 0xC2B2AE35, 0x9E3779B9


@dataclasses.dataclass(frozen=True)
class CodeFamily:
  """One kind of SID: its codebook sizes (coarse first) and how its prefixes are keyed.

  `levels`: only the first `levels` prefixes get tables (depth truncation); None = all.
  `max_rows`: a level with more possible prefixes than this is hashed into `max_rows` rows;
  None = never hash (every level exact, which must fit in int32).
  """
  name: str
  codebook_sizes: tuple[int, ...]
  levels: int | None = None
  max_rows: int | None = 1 << 16

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise ConfigError("name", f"must be a non-empty string, got {self.name!r}")
    sizes = tuple(self.codebook_sizes)
    if not sizes or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1
                        for k in sizes):
      raise ConfigError(f"{self.name}.codebook_sizes",
                        f"must be a non-empty sequence of positive integers, got {sizes!r}")
    object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in sizes))
    if self.levels is not None and not 1 <= self.levels <= len(sizes):
      raise ConfigError(f"{self.name}.levels", f"must be in [1, {len(sizes)}], got {self.levels}")
    if self.max_rows is not None and (isinstance(self.max_rows, bool) or self.max_rows < 1
                                      or self.max_rows >= 2 ** 31):
      raise ConfigError(f"{self.name}.max_rows", f"must be in [1, 2^31), got {self.max_rows}")
    if self.max_rows is None and math.prod(sizes[:self.depth]) >= 2 ** 31:
      raise ConfigError(f"{self.name}.max_rows", "exact keys of every level overflow int32; "
                        "give max_rows to hash the deep levels")

  @property
  def depth(self) -> int:
    """Levels with a table."""
    return len(self.codebook_sizes) if self.levels is None else self.levels

  def exact_rows(self, level: int) -> int:
    """Possible prefixes of length level + 1."""
    return math.prod(self.codebook_sizes[:level + 1])

  def hashed(self, level: int) -> bool:
    return self.max_rows is not None and self.exact_rows(level) > self.max_rows

  def table_rows(self, level: int) -> int:
    """Rows level `level`'s keys can take (before padding to VOCAB_ROW_MULTIPLE)."""
    return self.max_rows if self.hashed(level) else self.exact_rows(level)


def _mix32(h: jax.Array) -> jax.Array:
  """murmur3's 32-bit finalizer (uint32, wraps): every input bit reaches every output bit."""
  h = h ^ (h >> 16)
  h = h * jnp.uint32(_M1)
  h = h ^ (h >> 13)
  h = h * jnp.uint32(_M2)
  return h ^ (h >> 16)


def prefix_rows(codes: jax.Array, family: CodeFamily, levels: int | None = None) -> jax.Array:
  """The table row of each prefix; -1 where the prefix holds a padding code (< 0).

  Row of level l: the exact mixed-radix key of (c_1..c_l) when the level is not hashed, else
  a chain hash of (c_1..c_l) modulo `max_rows`. Codes >= their codebook size are an error of
  the caller (checked by `check_codes`, not here, so this stays jittable).

  Shape: codes int [..., c >= levels] -> int32 [..., levels].
  """
  levels = family.depth if levels is None else levels
  if not 1 <= levels <= family.depth:
    raise ConfigError(f"{family.name}.levels", f"must be in [1, {family.depth}], got {levels}")
  if codes.shape[-1] < levels:
    raise ConfigError(f"{family.name}.codes", f"have {codes.shape[-1]} levels, "
                      f"{levels} are needed")
  codes = jnp.asarray(codes).astype(jnp.int32)
  valid = jnp.ones(codes.shape[:-1], bool)
  exact = jnp.zeros(codes.shape[:-1], jnp.int32)
  chain = jnp.zeros(codes.shape[:-1], jnp.uint32)
  out = []
  for level in range(levels):
    c = codes[..., level]
    valid = valid & (c >= 0)
    exact = exact * family.codebook_sizes[level] + c   # wraps only on hashed levels (unused)
    chain = _mix32(chain * jnp.uint32(_GOLDEN) + (c + 1).astype(jnp.uint32)
                   + jnp.uint32(level + 1) * jnp.uint32(_M2))
    if family.hashed(level):
      row = (chain % jnp.uint32(family.max_rows)).astype(jnp.int32)
    else:
      row = exact
    out.append(jnp.where(valid, row, -1))
  return jnp.stack(out, axis=-1)


def check_codes(codes: Any, family: CodeFamily) -> np.ndarray:
  """Host-side check of a code array against the family's codebook sizes.

  Shape: codes int [..., c] -> the same, as int32 numpy.
  """
  codes = np.asarray(codes)
  if codes.ndim < 1 or not np.issubdtype(codes.dtype, np.integer):
    raise ConfigError(f"{family.name}.codes", f"must be an integer array [..., c], got "
                      f"{codes.dtype} {codes.shape}")
  if codes.shape[-1] < family.depth:
    raise ConfigError(f"{family.name}.codes", f"have {codes.shape[-1]} levels, the family "
                      f"uses {family.depth}")
  for level in range(family.depth):
    k = family.codebook_sizes[level]
    if codes.size and codes[..., level].max() >= k:
      raise ConfigError(f"{family.name}.codes", f"level {level} has a code >= its codebook "
                        f"size {k}")
  return codes.astype(np.int32)


def collision_report(codes: Any, family: CodeFamily) -> list[dict[str, Any]]:
  """Per level: distinct prefixes among `codes`, rows they use, and hash collisions.

  `collisions` = distinct prefixes - distinct rows (prefixes that had to share a row with
  another); always 0 on exact levels.

  Shape: codes int [n, c] (no padding).
  """
  codes = check_codes(codes, family)
  if codes.ndim != 2 or (codes < 0).any():
    raise ConfigError(f"{family.name}.codes", "must be [n, c] without padding codes")
  rows = np.asarray(prefix_rows(jnp.asarray(codes), family))
  out = []
  for level in range(family.depth):
    prefixes = len(np.unique(codes[:, :level + 1], axis=0))
    used = len(np.unique(rows[:, level]))
    out.append({"level": level, "hashed": family.hashed(level),
                "table_rows": family.table_rows(level), "prefixes": prefixes,
                "rows_used": used, "collisions": prefixes - used})
  return out


class PrefixNGramEmbedding(nnx.Module):
  """One embedding table per (family, level) keyed by whole prefixes; summed or as tokens."""

  def __init__(self, families: Sequence[CodeFamily], d: int, *, combine: str = "sum",
               dtype: str = "float32", rngs: nnx.Rngs):
    families = tuple(families)
    if not families:
      raise ConfigError("families", "needs at least one code family")
    names = [f.name for f in families]
    if len(set(names)) != len(names):
      raise ConfigError("families", f"duplicate family names {names}")
    if combine not in _COMBINE:
      raise ConfigError("combine", f"must be one of {list(_COMBINE)}, got {combine!r}")
    if dtype not in _DTYPES:
      raise ConfigError("dtype", f"must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if isinstance(d, bool) or not isinstance(d, int) or d < 1:
      raise ConfigError("d", f"must be a positive integer, got {d!r}")
    self.families = families
    self.combine = combine
    self.d = d
    with sharding_scope():
      self.tables = nnx.List([
          nnx.List([embedding(padded_rows(f.table_rows(level)), d, dtype=_DTYPES[dtype],
                              rngs=rngs) for level in range(f.depth)])
          for f in families])

  def num_tokens(self, levels: Mapping[str, int] | int | None = None) -> int:
    return sum(self._levels(f, levels) for f in self.families)

  @staticmethod
  def _levels(family: CodeFamily, levels: Mapping[str, int] | int | None) -> int:
    if isinstance(levels, Mapping):
      levels = levels.get(family.name)
    return family.depth if levels is None else min(int(levels), family.depth)

  def __call__(self, codes: Mapping[str, jax.Array] | jax.Array, *,
               levels: Mapping[str, int] | int | None = None) -> jax.Array:
    """Embeddings of the codes' prefixes (padding prefixes give zero).

    `codes`: one array per family (a bare array when there is one family); `levels`: depth
    truncation, one int for every family or a mapping family -> levels.

    Shape: codes int [..., c] per family -> [..., d] ("sum") or [..., n, d] ("tokens").
    """
    if not isinstance(codes, Mapping):
      if len(self.families) != 1:
        raise ConfigError("codes", f"give a mapping over families "
                          f"{[f.name for f in self.families]}")
      codes = {self.families[0].name: codes}
    missing = [f.name for f in self.families if f.name not in codes]
    if missing:
      raise ConfigError("codes", f"missing code families {missing}")
    tokens = []
    for family, tables in zip(self.families, self.tables):
      depth = self._levels(family, levels)
      rows = prefix_rows(codes[family.name], family, depth)         # [..., depth]
      for level in range(depth):
        r = rows[..., level]
        e = tables[level](jnp.maximum(r, 0))
        tokens.append(jnp.where((r >= 0)[..., None], e, jnp.zeros_like(e)))
    if self.combine == "sum":
      return sum(tokens[1:], tokens[0])
    return jnp.stack(tokens, axis=-2)
