"""Product quantisation (PQ) and optimised PQ (OPQ): long Semantic IDs of m parallel codes.

As RPG (Hou et al., KDD 2025) builds its long SIDs: the content embeddings are centred,
projected on their top d' principal components and (optionally) whitened; an orthogonal
rotation R [d', d'] (OPQ, identity when not learned) is applied; the d' coordinates are cut into
m contiguous subspaces of d'/m dims, and each subspace gets its own k-means codebook of k codes.
An item's SID is its m subspace codes, int32 [m]; the codes are unordered (no level refines
another), so every code can be predicted in parallel.

    y = ((x - mean) @ components / scale) @ rotation        [d'], cut into m blocks of d'/m

OPQ's rotation is the non-parametric alternation of Ge et al. (CVPR 2013): with R fixed, fit the
subspace codebooks and assign codes; with the codes fixed, R is the orthogonal Procrustes
solution R = U V^T of the SVD U S V^T = Z^T Y_hat (Z the PCA coordinates, Y_hat the
reconstruction in the rotated space). Each step can only lower the distortion in the rotated
space, so `distortion` does not rise over the rounds (up to float rounding).

JAX + numpy only (no faiss): the subspace k-means is `lrm.sid.kmeans.kmeans_fit` (jitted Lloyd
loop), PCA and Procrustes are d' x d' numpy eigen / SVD problems, and `assign` is one jitted,
row-chunked program applied to host blocks of rows, so millions of rows stream in bounded
memory. The subspaces are fitted one after another: on a 2-core CPU (12k rows, m = 32, k = 256,
12 dims each) the loop took 3 s against 6 s for one vmapped program, since each subspace's Lloyd
loop stops at its own convergence.

Shape letters: n items, d embedding dim, p PCA dim (d'), m codebooks (levels), k codebook size,
s subspace dim (p / m).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from lrm.core import artifacts
from lrm.core.errors import ConfigError, DataError
from lrm.sid import kmeans as km

STAGE = "opq"
ARRAYS_FILE = "pq.npz"
# Rows per host block of `assign` (one compiled program serves every block).
BLOCK_ROWS = 1 << 16
# Target float32 entries of one [rows, m, k] score chunk inside the jitted program (16 MiB).
_CHUNK_ELEMENTS = 1 << 22
# Whitening divides by sqrt(max(variance, _VAR_FLOOR * top variance)).
_VAR_FLOOR = 1e-10


@dataclasses.dataclass(frozen=True, eq=False)
class PQModel:
  """A fitted (optimised) product quantiser.

  Attributes:
    mean: float32 [d], the training rows' mean.
    components: float32 [d, p], principal directions (orthonormal columns), largest variance
      first.
    scale: float32 [p], what each PCA coordinate is divided by: its standard deviation when
      whitened, else ones.
    rotation: float32 [p, p], OPQ's orthogonal rotation (identity when not learned).
    codebooks: float32 [m, k, s], one k-means codebook per subspace of s = p / m dims.
    distortion: mean squared quantisation error per row in the rotated space, after the first
      codebook fit and after each rotation round (non-increasing up to float rounding).
    fit_items: rows the model was fitted on.
  """
  mean: np.ndarray
  components: np.ndarray
  scale: np.ndarray
  rotation: np.ndarray
  codebooks: np.ndarray
  distortion: tuple[float, ...] = ()
  fit_items: int = 0

  @property
  def dim(self) -> int:
    return int(self.components.shape[0])

  @property
  def pca_dim(self) -> int:
    return int(self.components.shape[1])

  @property
  def num_codebooks(self) -> int:
    return int(self.codebooks.shape[0])

  @property
  def codebook_size(self) -> int:
    return int(self.codebooks.shape[1])

  @property
  def sub_dim(self) -> int:
    return int(self.codebooks.shape[2])

  @property
  def codebook_sizes(self) -> tuple[int, ...]:
    return (self.codebook_size,) * self.num_codebooks

  def projection(self) -> np.ndarray:
    """x - mean -> rotated coordinates in one matrix: components / scale @ rotation.

    Shape: -> float32 [d, p].
    """
    w = (self.components.astype(np.float64) / self.scale.astype(np.float64)[None, :]) \
        @ self.rotation.astype(np.float64)
    return w.astype(np.float32)

  def save(self, directory: str | os.PathLike, *, config: Any = None) -> dict[str, Any]:
    """Writes pq.npz then manifest.json (the json half: sizes, distortion), atomically."""
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    arrays = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
              if isinstance(getattr(self, f.name), np.ndarray)}
    with artifacts.atomic_path(directory / ARRAYS_FILE) as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    return artifacts.write_manifest(
        directory, stage=STAGE, config=config,
        counts={"dim": self.dim, "pca_dim": self.pca_dim, "num_codebooks": self.num_codebooks,
                "codebook_size": self.codebook_size, "fit_items": self.fit_items},
        distortion=list(self.distortion))

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "PQModel":
    """Reads a model written by `save`; DataError names the file at fault."""
    directory = pathlib.Path(directory)
    manifest = artifacts.read_manifest(directory)
    if manifest.get("stage") != STAGE:
      raise DataError(f"not an OPQ artifact (stage {manifest.get('stage')!r})",
                      path=directory / artifacts.MANIFEST)
    path = directory / ARRAYS_FILE
    if not path.exists():
      raise DataError("arrays file missing", path=path)
    with np.load(path, allow_pickle=False) as z:
      missing = [n for n in ("mean", "components", "scale", "rotation", "codebooks")
                 if n not in z.files]
      if missing:
        raise DataError(f"no arrays {missing}", path=path)
      arrays = {n: np.asarray(z[n], np.float32)
                for n in ("mean", "components", "scale", "rotation", "codebooks")}
    model = cls(**arrays, distortion=tuple(manifest.get("distortion", ())),
                fit_items=int(manifest.get("counts", {}).get("fit_items", 0)))
    _check_model(model, path)
    return model


def _check_model(model: PQModel, path: Any = None) -> None:
  d, p = model.components.shape
  m, _, s = model.codebooks.shape
  if (model.mean.shape != (d,) or model.scale.shape != (p,) or model.rotation.shape != (p, p)
      or m * s != p):
    raise DataError(f"inconsistent shapes: mean {model.mean.shape}, components {(d, p)}, "
                    f"scale {model.scale.shape}, rotation {model.rotation.shape}, codebooks "
                    f"{model.codebooks.shape}", path=path)


# ----------------------------------------------------------------------------- checks


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
  if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < minimum:
    raise ConfigError(name, f"must be an integer >= {minimum}, got {value!r}")
  return int(value)


def resolve_pca_dim(dim: int, num_codebooks: int, pca_dim: int = 0) -> int:
  """The PCA dim p: `pca_dim`, or with 0 the input dim rounded down to a multiple of m.

  ConfigError names `pca_dim` when it exceeds `dim` or is not a multiple of `num_codebooks`,
  and `num_codebooks` when there are more codebooks than input dims.
  """
  m = _positive_int("num_codebooks", num_codebooks)
  pca_dim = _positive_int("pca_dim", pca_dim, minimum=0)
  if pca_dim == 0:
    if m > dim:
      raise ConfigError("num_codebooks", f"{m} codebooks for {dim}-d embeddings (each subspace "
                        "needs at least one dim)")
    return dim // m * m
  if pca_dim > dim:
    raise ConfigError("pca_dim", f"{pca_dim} is more than the {dim} input dims")
  if pca_dim % m:
    raise ConfigError("pca_dim", f"{pca_dim} is not divisible by num_codebooks={m}")
  return pca_dim


# ----------------------------------------------------------------------------- PCA, rotation


def _pca(x: np.ndarray, p: int, whiten: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Mean, top-p principal directions (sign fixed: largest |entry| positive) and scale.

  Covariance accumulated in float64 over row blocks. Shape: x [n, d] -> [d], [d, p], [p].
  """
  n, d = x.shape
  mean = x.sum(axis=0, dtype=np.float64) / n
  cov = np.zeros((d, d), np.float64)
  for start in range(0, n, BLOCK_ROWS):
    xb = x[start:start + BLOCK_ROWS].astype(np.float64) - mean
    cov += xb.T @ xb
  cov /= n
  var, vecs = np.linalg.eigh(cov)
  order = np.argsort(-var, kind="stable")[:p]
  var, vecs = np.maximum(var[order], 0.0), vecs[:, order]
  sign = np.sign(vecs[np.argmax(np.abs(vecs), axis=0), np.arange(p)])
  vecs = vecs * np.where(sign == 0, 1.0, sign)[None, :]
  if whiten:
    scale = np.sqrt(np.maximum(var, _VAR_FLOOR * max(float(var[0]), 1e-30)))
  else:
    scale = np.ones(p)
  return mean.astype(np.float32), vecs.astype(np.float32), scale.astype(np.float32)


def procrustes(z: np.ndarray, y: np.ndarray) -> np.ndarray:
  """The orthogonal R minimising ||z R - y||_F: U V^T of the SVD U S V^T = z^T y.

  Shape: z, y [n, p] -> float32 [p, p].
  """
  u, _, vt = np.linalg.svd(z.astype(np.float64).T @ y.astype(np.float64))
  return (u @ vt).astype(np.float32)


def _fit_codebooks(y: np.ndarray, m: int, k: int, *, key: jax.Array, iters: int,
                   init: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
  """k-means per subspace (subspace j: key fold_in(key, j), warm start init[j] if given).

  Shape: y [n, p] -> codebooks [m, k, s], codes int32 [n, m].
  """
  n, p = y.shape
  s = p // m
  books, codes = [], []
  for j in range(m):
    res = km.kmeans_fit(y[:, j * s:(j + 1) * s], k, key=jax.random.fold_in(key, j),
                        iters=iters, init_centroids=None if init is None else init[j])
    books.append(res.centroids)
    codes.append(res.assignments)
  return np.stack(books), np.stack(codes, axis=1).astype(np.int32)


def _decode(codebooks: np.ndarray, codes: np.ndarray) -> np.ndarray:
  """Concatenated chosen centroids. Shape: codebooks [m, k, s], codes [n, m] -> [n, m s]."""
  m = codebooks.shape[0]
  return codebooks[np.arange(m)[None, :], codes].reshape(len(codes), -1)


def _distortion(y: np.ndarray, y_hat: np.ndarray) -> float:
  r = y.astype(np.float64) - y_hat
  return float(np.einsum("np,np->", r, r) / len(y))


def fit_opq(x: Any, *, num_codebooks: int, codebook_size: int = 256, pca_dim: int = 0,
            whiten: bool = True, rotation_iters: int = 0, kmeans_iters: int = 25,
            seed: int = 0) -> PQModel:
  """Fits PCA (+ whitening), then m subspace k-means codebooks, with optional OPQ rotation.

  Args:
    x: the training rows (e.g. the training split's items). Shape: [n, d]; NaN/inf rejected.
    num_codebooks: m, the SID length.
    codebook_size: k codes per codebook, 1 <= k <= n.
    pca_dim: p, a multiple of m, at most d; 0 keeps d rounded down to a multiple of m.
    whiten: divide each PCA coordinate by its standard deviation.
    rotation_iters: OPQ rounds (Procrustes rotation, then warm-started codebooks); 0 is plain
      PQ on the PCA coordinates (rotation = identity).
    kmeans_iters: maximum Lloyd iterations of each subspace fit (warm-started refits stop early
      once converged).
    seed: the k-means++ seeding and subsampling key.

  Shape: x [n, d] -> a model with codebooks [m, k, p / m].
  """
  x = km._check_x(x, "x")
  n, d = x.shape
  m = _positive_int("num_codebooks", num_codebooks)
  k = _positive_int("codebook_size", codebook_size)
  if k > n:
    raise ConfigError("codebook_size", f"{k} codes for only {n} rows")
  p = resolve_pca_dim(d, m, pca_dim)
  rounds = _positive_int("rotation_iters", rotation_iters, minimum=0)
  iters = _positive_int("kmeans_iters", kmeans_iters)
  mean, components, scale = _pca(x, p, bool(whiten))
  z = (x - mean) @ (components / scale[None, :])                  # [n, p] PCA coordinates
  key = jax.random.key(int(seed))
  rotation = np.eye(p, dtype=np.float32)
  books, codes = _fit_codebooks(z, m, k, key=key, iters=iters, init=None)
  distortion = [_distortion(z, _decode(books, codes))]
  for _ in range(rounds):
    rotation = procrustes(z, _decode(books, codes))
    books, codes = _fit_codebooks(z @ rotation, m, k, key=key, iters=iters, init=books)
    distortion.append(_distortion(z @ rotation, _decode(books, codes)))
  return PQModel(mean=mean, components=components, scale=scale, rotation=rotation,
                 codebooks=books.astype(np.float32), distortion=tuple(distortion),
                 fit_items=n)


# ----------------------------------------------------------------------------- assign


def _chunk_rows(rows: int, m: int, k: int) -> int:
  """Rows per [rows, m, k] score chunk: about `_CHUNK_ELEMENTS` entries, at most `rows`."""
  return int(max(1, min(rows, max(64, _CHUNK_ELEMENTS // max(m * k, 1)))))


@functools.partial(jax.jit, static_argnames=("chunk",))
def _assign_block(x, mean, w, codebooks, *, chunk: int):
  """Nearest code per subspace (ties: lowest code), row chunk by row chunk.

  Shape: x [b, d] (b a multiple of chunk), mean [d], w [d, p], codebooks [m, k, s]
    -> int32 [b, m].
  """
  b, d = x.shape
  m, k, s = codebooks.shape
  half_sq = 0.5 * jnp.sum(codebooks * codebooks, axis=-1)                 # [m, k]
  ids = jnp.arange(k, dtype=jnp.int32)

  def one(xc):
    y = jnp.dot(xc - mean, w, precision=jax.lax.Precision.HIGHEST).reshape(-1, m, s)
    scores = jnp.einsum("cms,mks->cmk", y, codebooks,
                        precision=jax.lax.Precision.HIGHEST) - half_sq[None]
    best = jnp.max(scores, axis=-1, keepdims=True)
    return jnp.min(jnp.where(scores == best, ids, k), axis=-1)

  return jax.lax.map(one, x.reshape(b // chunk, chunk, d)).reshape(b, m)


def assign(model: PQModel, x: Any) -> np.ndarray:
  """Codes of any rows under a fitted model: per subspace, the nearest centroid (Euclidean, in
  the rotated space). Host blocks of `BLOCK_ROWS` rows, each one jitted call (padded to the
  same shape), so memory stays bounded however many rows there are.

  Shape: x [n, d] -> int32 [n, m].
  """
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[1] != model.dim:
    raise DataError(f"x must have shape (n, {model.dim}), got {x.shape}")
  n = x.shape[0]
  m, k = model.num_codebooks, model.codebook_size
  chunk = _chunk_rows(max(n, 1), m, k)
  block = min(BLOCK_ROWS // chunk * chunk or chunk, -(-max(n, 1) // chunk) * chunk)
  mean, w = jnp.asarray(model.mean), jnp.asarray(model.projection())
  books = jnp.asarray(model.codebooks)
  out = np.zeros((n, m), np.int32)
  for start in range(0, n, block):
    xb = km._check_x(x[start:start + block], "x")
    rows = len(xb)
    if rows < block:
      xb = np.concatenate([xb, np.zeros((block - rows, xb.shape[1]), np.float32)])
    out[start:start + rows] = np.asarray(_assign_block(jnp.asarray(xb), mean, w, books,
                                                       chunk=chunk))[:rows]
  return out


def reconstruct(model: PQModel, codes: Any) -> np.ndarray:
  """The rows the codes stand for, in the original embedding space (PCA truncation included):
  mean + ((y_hat R^T) * scale) components^T.

  Shape: codes [n, m] -> float32 [n, d].
  """
  codes = np.asarray(codes)
  m, k = model.num_codebooks, model.codebook_size
  if codes.ndim != 2 or codes.shape[1] != m or not np.issubdtype(codes.dtype, np.integer):
    raise DataError(f"codes must be integer [n, {m}], got {codes.dtype} {codes.shape}")
  if codes.size and (codes.min() < 0 or codes.max() >= k):
    raise DataError(f"codes must be in [0, {k})")
  y_hat = _decode(model.codebooks, codes)
  z_hat = (y_hat @ model.rotation.T) * model.scale[None, :]
  return (z_hat @ model.components.T + model.mean[None, :]).astype(np.float32)
