"""Residual k-means (RQ-KMeans): Semantic IDs by k-means on successive residuals.

Level 0 clusters the embeddings; level c clusters the residual left after levels < c
(x - sum of the chosen centroids so far). Codebook sizes may differ per level (multi-resolution,
e.g. (2048, 1024, 512)). Assignment is greedy per level (nearest centroid of the current
residual), deterministic. The single-level case is the cluster-ID feature of two-tower models
(`cluster_ids_fit`, e.g. 1000 clusters).

Residuals are Euclidean: with metric "cosine" the inputs are L2-normalised first, then every
level is L2 k-means on the residuals (for unit inputs, L2 and cosine rank level-0 centroids
alike up to the centroid norms; spherical centroids could not reconstruct residuals). The
training codes of a fit (without `balanced`) equal `rq_assign` of the training rows.

Shape letters: n items, d dim, k codebook, c level (L levels).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh

from lrm.core import artifacts
from lrm.core.errors import ConfigError, DataError
from lrm.sid import kmeans as km

CODEBOOKS_FILE = "codebooks.npz"
STAGE = "rq_kmeans"


@dataclasses.dataclass(frozen=True, eq=False)
class RQKMeansModel:
  """Fitted residual k-means.

  Attributes:
    codebooks: per level, float32 [k_c, d].
    metric: "l2" or "cosine" (inputs normalised before level 0).
    codes: int32 [n, L], the training rows' codes (None after `load`).
    inertia: per level, the level's k-means inertia on its residuals.
  """
  codebooks: tuple[np.ndarray, ...]
  metric: str = "l2"
  codes: np.ndarray | None = None
  inertia: tuple[float, ...] = ()

  @property
  def levels(self) -> int:
    return len(self.codebooks)

  @property
  def dim(self) -> int:
    return int(self.codebooks[0].shape[1])

  @property
  def codebook_sizes(self) -> tuple[int, ...]:
    return tuple(int(c.shape[0]) for c in self.codebooks)


RQKMeans = RQKMeansModel


def _check_sizes(codebook_sizes: Any) -> tuple[int, ...]:
  try:
    sizes = tuple(codebook_sizes)
  except TypeError:
    raise ConfigError("codebook_sizes", f"must be a sequence of positive integers, "
                      f"got {codebook_sizes!r}") from None
  if not sizes or any(not isinstance(s, (int, np.integer)) or isinstance(s, bool) or s < 1
                      for s in sizes):
    raise ConfigError("codebook_sizes", f"must be a non-empty sequence of positive integers, "
                      f"got {codebook_sizes!r}")
  return tuple(int(s) for s in sizes)


def _prepare_input(x: Any, metric: str) -> np.ndarray:
  x = km._check_x(x)
  km._check_metric(metric)
  if metric == "cosine":
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  return x.astype(np.float32)


def rq_kmeans_fit(x: Any, codebook_sizes: Sequence[int], *, key: jax.Array, iters: int = 25,
                  metric: str = "l2", batch_size: int | None = None, balanced: bool = False,
                  init_codebooks: Sequence[Any] | None = None, mesh: Mesh | None = None,
                  tol: float | None = 1e-6, init: str = "kmeans++") -> RQKMeansModel:
  """Fits residual k-means with one codebook per level.

  Args:
    x: the embeddings. Shape: [n, d].
    codebook_sizes: k_c per level, coarse first, e.g. (256, 256, 256) or (2048, 1024, 512).
    key: `jax.random` key; level c uses `fold_in(key, c)`.
    metric: "l2", or "cosine" (rows L2-normalised first; levels are then L2 k-means).
    iters, batch_size, balanced, mesh, tol, init: as `kmeans_fit`, per level.
    init_codebooks: warm start, one float32 [k_c, d] per level (e.g. the previous retrain's,
      which keeps codes stable across retrains).

  Shape: x [n, d] -> codebooks [k_c, d] per level, codes [n, L].
  """
  sizes = _check_sizes(codebook_sizes)
  x = _prepare_input(x, metric)
  n, d = x.shape
  if init_codebooks is not None:
    init_codebooks = list(init_codebooks)
    if len(init_codebooks) != len(sizes):
      raise ConfigError("init_codebooks", f"{len(init_codebooks)} codebooks for "
                        f"{len(sizes)} levels")
  residual = x.copy()
  codebooks, codes, inertia = [], [], []
  for level, k in enumerate(sizes):
    if k > n:
      raise ConfigError("codebook_sizes", f"level {level} has {k} codes for only {n} rows")
    warm = None if init_codebooks is None else init_codebooks[level]
    res = km.kmeans_fit(residual, k, key=jax.random.fold_in(key, level), iters=iters,
                        metric="l2", batch_size=batch_size, init=init,
                        init_centroids=warm, balanced=balanced, mesh=mesh, tol=tol)
    a, cb = res.assignments, res.centroids
    residual -= cb[a]
    codebooks.append(cb)
    codes.append(a)
    inertia.append(float(np.einsum("nd,nd->", residual, residual, dtype=np.float64)))
  return RQKMeansModel(codebooks=tuple(codebooks), metric=metric,
                       codes=np.stack(codes, axis=1).astype(np.int32), inertia=tuple(inertia))


def cluster_ids_fit(x: Any, num_clusters: int, *, key: jax.Array, iters: int = 25,
                    metric: str = "l2", batch_size: int | None = None, balanced: bool = False,
                    mesh: Mesh | None = None, tol: float | None = 1e-6) -> RQKMeansModel:
  """Single-level k-means cluster IDs (a trainable cluster-ID feature, e.g. 1000 clusters).

  Shape: x [n, d] -> a 1-level model; `model.codes[:, 0]` are the cluster ids, int32 [n].
  """
  return rq_kmeans_fit(x, (num_clusters,), key=key, iters=iters, metric=metric,
                       batch_size=batch_size, balanced=balanced, mesh=mesh, tol=tol)


def rq_assign(model: RQKMeansModel, x: Any) -> np.ndarray:
  """Greedy codes: per level, the nearest centroid (Euclidean) of the current residual.

  Shape: x [n, d] -> int32 [n, L].
  """
  x = _prepare_input(x, model.metric)
  if x.shape[1] != model.dim:
    raise DataError(f"x has dim {x.shape[1]}, the model has dim {model.dim}")
  residual = x.copy()
  codes = []
  for cb in model.codebooks:
    a = km.kmeans_assign(residual, cb, metric="l2")
    residual -= cb[a]
    codes.append(a)
  return np.stack(codes, axis=1).astype(np.int32)


def rq_reconstruct(model: RQKMeansModel, codes: Any) -> np.ndarray:
  """Sum of the chosen centroids, level by level. Shape: codes [n, c<=L] -> float32 [n, d]."""
  codes = np.asarray(codes)
  if codes.ndim != 2 or codes.shape[1] > model.levels or not np.issubdtype(codes.dtype,
                                                                          np.integer):
    raise DataError(f"codes must be integer [n, <= {model.levels}], got {codes.dtype} "
                    f"{codes.shape}")
  out = np.zeros((codes.shape[0], model.dim), np.float32)
  for c in range(codes.shape[1]):
    k = model.codebooks[c].shape[0]
    if codes.size and (codes[:, c].min() < 0 or codes[:, c].max() >= k):
      raise DataError(f"level {c} codes must be in [0, {k})")
    out += model.codebooks[c][codes[:, c]]
  return out


def residual_errors(model: RQKMeansModel, x: Any) -> np.ndarray:
  """Relative reconstruction error after each level: ||x - x_hat_<=c||^2 / ||x||^2 (summed
  over rows; x normalised first for cosine).

  Shape: x [n, d] -> float64 [L].
  """
  xp = _prepare_input(x, model.metric)
  codes = rq_assign(model, xp)
  total = float(np.einsum("nd,nd->", xp, xp, dtype=np.float64))
  out = []
  for c in range(1, model.levels + 1):
    r = xp - rq_reconstruct(model, codes[:, :c])
    out.append(float(np.einsum("nd,nd->", r, r, dtype=np.float64)) / max(total, 1e-30))
  return np.asarray(out)


def save(model: RQKMeansModel, directory: str | os.PathLike, *, config: Any = None) -> None:
  """Writes codebooks.npz (and codes, when known) then manifest.json, atomically."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  arrays = {f"codebook_{c}": cb for c, cb in enumerate(model.codebooks)}
  if model.codes is not None:
    arrays["codes"] = model.codes
  with artifacts.atomic_path(directory / CODEBOOKS_FILE) as tmp:
    with open(tmp, "wb") as f:
      np.savez(f, **arrays)
  artifacts.write_manifest(directory, stage=STAGE, config=config,
                           counts={"levels": model.levels, "dim": model.dim},
                           codebook_sizes=list(model.codebook_sizes), metric=model.metric,
                           inertia=list(model.inertia))


def load(directory: str | os.PathLike) -> RQKMeansModel:
  """Reads a model written by `save`."""
  directory = pathlib.Path(directory)
  manifest = artifacts.read_manifest(directory)
  if manifest.get("stage") != STAGE:
    raise DataError(f"not an RQ-KMeans artifact (stage {manifest.get('stage')!r})",
                    path=directory / artifacts.MANIFEST)
  path = directory / CODEBOOKS_FILE
  if not path.exists():
    raise DataError("codebooks file missing", path=path)
  levels = int(manifest["counts"]["levels"])
  with np.load(path, allow_pickle=False) as z:
    codebooks = tuple(np.asarray(z[f"codebook_{c}"], np.float32) for c in range(levels))
    codes = np.asarray(z["codes"], np.int32) if "codes" in z.files else None
  return RQKMeansModel(codebooks=codebooks, metric=manifest.get("metric", "l2"), codes=codes,
                       inertia=tuple(manifest.get("inertia", ())))
