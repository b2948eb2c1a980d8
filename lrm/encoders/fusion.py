"""Fuses several modalities' embeddings of the same items into one vector per item.

Each modality is normalised on its own (optionally standardised per dimension first, then each
row L2-normalised), scaled by the square root of its share of the weights, and the blocks are
either concatenated or mapped by a fixed seeded orthogonal projection to `dim`. With unit
blocks, the cosine similarity of two fused vectors (concat) is the weighted mean of the
modalities' cosine similarities, so no modality dominates by its scale or its dimension.
Modalities are taken in the order given (a dict keeps insertion order).
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from lrm.core.errors import ConfigError, DataError

METHODS = ("concat", "projection")


def _check(embeddings: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
  if not embeddings:
    raise DataError("fusion needs at least one modality")
  out: dict[str, np.ndarray] = {}
  rows = None
  for name, emb in embeddings.items():
    emb = np.asarray(emb)
    if emb.ndim != 2 or emb.shape[1] == 0:
      raise DataError(f"modality '{name}' has shape {emb.shape}, expected [n, d] with d > 0")
    if not np.issubdtype(emb.dtype, np.number) or np.issubdtype(emb.dtype, np.complexfloating):
      raise DataError(f"modality '{name}' has dtype {emb.dtype}, expected a real number type")
    if rows is None:
      rows, first = emb.shape[0], name
    elif emb.shape[0] != rows:
      raise DataError(f"modality '{name}' has {emb.shape[0]} rows but '{first}' has {rows}: "
                      "every modality needs one row per item, in the same order")
    emb = emb.astype(np.float32)
    finite = np.isfinite(emb).all(axis=1)
    if not finite.all():
      bad = np.flatnonzero(~finite)
      raise DataError(f"modality '{name}' has NaN or inf in {len(bad)} rows, first "
                      f"{bad[:10].tolist()}")
    out[name] = emb
  return out


def _normalise(emb: np.ndarray, standardize: bool) -> np.ndarray:
  """Shape: emb [n, d] -> float32 [n, d] with unit rows (all-zero rows stay zero)."""
  emb = emb.astype(np.float64)
  if standardize:
    emb = (emb - emb.mean(axis=0)) / np.maximum(emb.std(axis=0), 1e-8)
  norms = np.linalg.norm(emb, axis=1, keepdims=True)
  return (emb / np.maximum(norms, 1e-12)).astype(np.float32)


def orthogonal_projection(in_dim: int, out_dim: int, seed: int) -> np.ndarray:
  """A fixed [in_dim, out_dim] matrix with orthonormal columns (or rows, if out_dim > in_dim).

  Reducing, it keeps the part of each vector in a random subspace; widening, it is an exact
  isometry. Depends only on (in_dim, out_dim, seed).
  """
  rng = np.random.default_rng(seed)
  big, small = max(in_dim, out_dim), min(in_dim, out_dim)
  q, r = np.linalg.qr(rng.standard_normal((big, small)))
  q = q * np.sign(np.diag(r))[None]  # unique QR: uniformly (Haar) distributed
  return (q if in_dim >= out_dim else q.T).astype(np.float32)


def fuse(embeddings: Mapping[str, np.ndarray], *, method: str = "concat",
         dim: int | None = None, weights: Mapping[str, float] | None = None,
         standardize: bool = False, seed: int = 0) -> np.ndarray:
  """Fused, L2-normalised embeddings of the same n items.

  Args:
    embeddings: modality name -> [n, d_m] (any real dtype).
    method: "concat" (dim must be None or the summed width) or "projection" (to `dim`, default
      the summed width).
    weights: modality -> relative weight (>= 0, default 1); a modality's block is scaled by
      sqrt(w / sum w), so its share of the fused cosine similarity is w / sum w.
    standardize: zero-mean, unit-variance per dimension before each modality's L2 norm.
    seed: seed of the projection.

  Shape: -> float32 [n, dim or sum(d_m)].
  """
  if method not in METHODS:
    raise ConfigError("embed.fuse", f"unknown fusion method '{method}'; "
                      f"use one of {list(METHODS)}")
  blocks = _check(embeddings)
  weights = dict(weights or {})
  unknown = sorted(set(weights) - set(blocks))
  if unknown:
    raise ConfigError("embed.fuse_weights", f"weights for unknown modalities {unknown}; "
                      f"modalities are {list(blocks)}")
  w = np.array([float(weights.get(name, 1.0)) for name in blocks])
  if not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
    raise ConfigError("embed.fuse_weights", f"weights must be finite, >= 0 and not all 0, got "
                      f"{dict(zip(blocks, w.tolist()))}")
  share = np.sqrt(w / w.sum())
  fused = np.concatenate([_normalise(emb, standardize) * s
                          for emb, s in zip(blocks.values(), share)], axis=1)
  width = fused.shape[1]
  if dim is not None and (isinstance(dim, bool) or not isinstance(dim, (int, np.integer))
                          or dim <= 0):
    raise ConfigError("embed.fuse_dim", f"must be a positive integer, got {dim!r}")
  if method == "concat":
    if dim is not None and dim != width:
      widths = ", ".join(f"{k}: {v.shape[1]}" for k, v in blocks.items())
      raise ConfigError("embed.fuse_dim", f"concat gives {width} dims ({widths}), got {dim}: "
                        "use method 'projection' to change the width")
  else:
    fused = fused @ orthogonal_projection(width, int(dim or width), seed)
  norms = np.linalg.norm(fused, axis=1, keepdims=True)
  return (fused / np.maximum(norms, 1e-12)).astype(np.float32)
