"""The `sid` stage: item embeddings -> a SID table, the fitted tokenizer and a quality report.

  DIR/codes.npy        int32 [items, levels (+1 collision level)], catalog order
  DIR/item_ids.npy     int64 [items]
  DIR/table.json       levels, codebook sizes, collision settings
  DIR/tokenizer/       the fitted RQ-KMeans codebooks, RQ-VAE / SID-v2 parameters or OPQ model
                       (for `assign`)
  DIR/report.json      the quality report
  DIR/manifest.json    written last

Method `opq` (RPG's long SIDs, lrm/sid/pq.py): `num_codebooks` unordered codes of
`codebook_size` each on PCA(-whitened) coordinates, fitted on `fit_rows` (the training split's
items) and assigned to every item; no collision level by default (a long code is almost always
unique, and RPG has none), `opq_collision_level` adds one where the text cannot tell items apart.

The prefix trie a decoder needs is rebuilt from codes.npy by `lrm.sid.trie.trie_from_table`
(under a second for a million items), so it is not stored twice.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any, Mapping

import jax
import numpy as np

from lrm.core import artifacts
from lrm.core.config import section_fields
from lrm.core.errors import ConfigError, DataError
from lrm.data import read_dataset
from lrm.data.splits import leave_one_out
from lrm.data.types import Catalog, Sequences
from lrm.encoders.pairs import co_consumption_rows
from lrm.sid import pq, quality as quality_lib, rq_kmeans, rqvae, sid_v2
from lrm.sid.table import SIDTable, with_collision_level

METHODS = ("rq_kmeans", "rq_vae", "kmeans", "sid_v2", "opq")
# Options of `sid.sid_v2` the stage reads itself (the others are SIDv2Config fields).
SID_V2_STAGE_OPTIONS = ("pairs_data", "pair_window")
TOKENIZER_DIR = "tokenizer"
# fit_opq's argument -> the SIDSpec field that sets it (for ConfigError names).
_OPQ_ARG_FIELDS = {"num_codebooks": "num_codebooks", "codebook_size": "codebook_size",
                   "pca_dim": "pca_dim", "rotation_iters": "opq_iters", "kmeans_iters": "iters"}


@dataclasses.dataclass(frozen=True)
class SIDSpec:
  """How to build SIDs (the `sid` section of a config)."""
  # rq_kmeans | rq_vae | kmeans (one level of cluster ids) | sid_v2 | opq (product quantisation)
  method: str = "rq_kmeans"
  levels: int = 3                 # semantic levels (ignored by kmeans: one level; opq: see below)
  codebook_size: int = 256        # codes per level
  codebook_sizes: tuple[int, ...] = ()  # per-level sizes (multi-resolution); overrides the two above
  collision_level: bool = True    # append TIGER's collision-breaking level
  metric: str = "l2"              # l2 | cosine (k-means methods)
  iters: int = 25                 # Lloyd iterations per level
  batch_size: int = 0             # k-means mini-batch rows (0: full batch)
  balanced: bool = False          # capacity-constrained k-means assignment
  # opq (RPG's long SIDs): num_codebooks x codebook_size codes, one per subspace of the PCA
  # coordinates; l2 only, full-batch k-means (`iters` per subspace). No collision level unless
  # `opq_collision_level`: a long code is almost always unique when the text tells items apart
  # (Beauty: 99.6%), but not when it cannot (Sports has no titles: 32.5% of items unique).
  num_codebooks: int = 32         # opq: codebooks m, the SID length (replaces levels)
  pca_dim: int = 0                # opq: PCA dims kept, a multiple of m (0: input dim rounded down)
  whiten: bool = True             # opq: scale each PCA coordinate to unit variance
  opq_iters: int = 0              # opq: rotation rounds (Procrustes + codebook refit); 0: plain PQ
  opq_collision_level: bool = False  # opq: append the collision level too (with collision_level)
  seed: int = 0                   # root of every random choice
  rqvae: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # RQVAEConfig overrides
  # SIDv2Config overrides (lrm/sid/sid_v2.py; the embeddings are its modality blocks
  # concatenated, `modality_dims` says how to split them), plus `pairs_data` (a dataset folder
  # whose leave-one-out training part gives the co-occurrence pairs when none are passed) and
  # `pair_window` (positions apart that still count as co-consumed, default 3).
  sid_v2: Mapping[str, Any] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if self.method not in METHODS:
      raise ConfigError("sid.method", f"'{self.method}' is not one of {METHODS}")
    if self.metric not in ("l2", "cosine"):
      raise ConfigError("sid.metric", f"must be 'l2' or 'cosine', got '{self.metric}'")
    for name in ("levels", "codebook_size", "iters"):
      if getattr(self, name) < 1:
        raise ConfigError(f"sid.{name}", f"must be >= 1, got {getattr(self, name)}")
    if any(int(k) < 1 for k in self.codebook_sizes):
      raise ConfigError("sid.codebook_sizes", f"sizes must be >= 1, got {self.codebook_sizes}")
    if self.batch_size < 0:
      raise ConfigError("sid.batch_size", f"must be >= 0, got {self.batch_size}")
    if self.num_codebooks < 1:
      raise ConfigError("sid.num_codebooks", f"must be >= 1, got {self.num_codebooks}")
    for name in ("pca_dim", "opq_iters"):
      if getattr(self, name) < 0:
        raise ConfigError(f"sid.{name}", f"must be >= 0, got {getattr(self, name)}")
    if self.method == "opq":
      self._check_opq()
    object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
    object.__setattr__(self, "rqvae", dict(self.rqvae))
    object.__setattr__(self, "sid_v2", dict(self.sid_v2))

  def _check_opq(self) -> None:
    if self.pca_dim % self.num_codebooks:
      raise ConfigError("sid.pca_dim", f"{self.pca_dim} is not divisible by "
                        f"sid.num_codebooks={self.num_codebooks}")
    if self.codebook_sizes:
      raise ConfigError("sid.codebook_sizes", "opq has num_codebooks codebooks of "
                        "codebook_size codes each; leave codebook_sizes empty")
    if self.metric != "l2":
      raise ConfigError("sid.metric", "opq quantises PCA coordinates in l2; got "
                        f"'{self.metric}' (normalise the embeddings upstream instead)")
    if self.balanced or self.batch_size:
      raise ConfigError("sid.balanced" if self.balanced else "sid.batch_size",
                        "opq fits full-batch, unbalanced k-means per subspace")

  @property
  def uses_collision_level(self) -> bool:
    """Whether the table gets the collision level (opq: only with `opq_collision_level`)."""
    return self.collision_level and (self.method != "opq" or self.opq_collision_level)

  @property
  def sizes(self) -> tuple[int, ...]:
    if self.method == "opq":
      return (self.codebook_size,) * self.num_codebooks
    if self.method == "kmeans":
      return (self.codebook_sizes[0] if self.codebook_sizes else self.codebook_size,)
    return self.codebook_sizes or (self.codebook_size,) * self.levels

  @classmethod
  def from_config(cls, cfg: Any) -> "SIDSpec":
    d = section_fields(cls, cfg, "sid")
    if "codebook_sizes" in d:
      d["codebook_sizes"] = tuple(d["codebook_sizes"] or ())
    return cls(**d)

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True, eq=False)
class SIDResult:
  table: SIDTable
  # RQKMeansModel or (RQVAE, RQVAEConfig) or (SIDv2, SIDv2Config) or PQModel
  tokenizer: Any
  report: dict[str, Any]
  fit_s: float


def _rqvae_config(spec: SIDSpec, dim: int):
  try:
    return rqvae.RQVAEConfig(**{**spec.rqvae, "input_dim": dim, "codebook_sizes": spec.sizes,
                                "seed": spec.seed})
  except TypeError as e:
    raise ConfigError("sid.rqvae", str(e)) from None
  except ConfigError as e:
    raise ConfigError(f"sid.rqvae.{e.field}", str(e).split(": ", 1)[-1]) from None


def _sid_v2_config(spec: SIDSpec, dim: int):
  options = {k: v for k, v in spec.sid_v2.items() if k not in SID_V2_STAGE_OPTIONS}
  options.setdefault("modality_dims", (dim,))
  if sum(options["modality_dims"]) != dim:
    raise ConfigError("sid.sid_v2.modality_dims", f"{tuple(options['modality_dims'])} sum to "
                      f"{sum(options['modality_dims'])}, but the embeddings have {dim} columns")
  try:
    return sid_v2.SIDv2Config(**{**options, "input_dim": dim, "codebook_sizes": spec.sizes,
                                 "seed": spec.seed})
  except TypeError as e:
    raise ConfigError("sid.sid_v2", str(e)) from None
  except ConfigError as e:
    raise ConfigError(f"sid.sid_v2.{e.field}", str(e).split(": ", 1)[-1]) from None


def cooccurrence_rows(spec: SIDSpec, item_ids: np.ndarray, cooccurrence: Any) -> np.ndarray | None:
  """Co-occurrence pairs (int [p, 2] rows of item_ids) for sid_v2: `cooccurrence` as given
  (pairs of rows, or training Sequences), else from `sid.sid_v2.pairs_data`'s leave-one-out
  training part; None when neither is there."""
  window = int(spec.sid_v2.get("pair_window", 3))
  catalog = Catalog(item_ids=np.asarray(item_ids))
  if cooccurrence is None and spec.sid_v2.get("pairs_data"):
    cooccurrence = leave_one_out(read_dataset(spec.sid_v2["pairs_data"]).sequences).train
  if cooccurrence is None:
    return None
  if isinstance(cooccurrence, Sequences):
    return co_consumption_rows(cooccurrence, catalog, window=window)
  return np.asarray(cooccurrence, np.int64)


def fit_row_index(fit_rows: Any, n: int) -> np.ndarray:
  """`fit_rows` (a bool mask [n] or row indices; None: every row) as sorted unique int64 rows.

  Raises DataError naming `fit_rows` for a wrong shape, out-of-range rows or no rows.
  """
  if fit_rows is None:
    return np.arange(n, dtype=np.int64)
  rows = np.asarray(fit_rows)
  if rows.dtype == bool:
    if rows.shape != (n,):
      raise DataError(f"fit_rows: a bool mask must have shape ({n},), got {rows.shape}")
    rows = np.flatnonzero(rows)
  elif rows.ndim != 1 or (rows.size and not np.issubdtype(rows.dtype, np.integer)):
    raise DataError(f"fit_rows must be a bool mask or 1-d int row indices, got {rows.dtype} "
                    f"{rows.shape}")
  rows = np.unique(rows.astype(np.int64))
  if rows.size and (rows[0] < 0 or rows[-1] >= n):
    raise DataError(f"fit_rows must lie in [0, {n}), got rows {rows[0]}..{rows[-1]}")
  if not rows.size:
    raise DataError("fit_rows selects no rows")
  return rows


def _fit_opq(x: np.ndarray, spec: SIDSpec):
  """`pq.fit_opq` with the spec's settings; ConfigErrors renamed to the `sid` field."""
  try:
    return pq.fit_opq(x, num_codebooks=spec.num_codebooks, codebook_size=spec.codebook_size,
                      pca_dim=spec.pca_dim, whiten=spec.whiten, rotation_iters=spec.opq_iters,
                      kmeans_iters=spec.iters, seed=spec.seed)
  except ConfigError as e:
    field = _OPQ_ARG_FIELDS.get(e.field, e.field)
    message = str(e).split(": ", 1)[-1]
    if e.field == "codebook_size":
      message += " (the fit_rows items)"
    raise ConfigError(f"sid.{field}", message) from None


def _prefix_levels(spec: SIDSpec) -> tuple[int, ...]:
  """Prefix lengths of the coherence numbers: every level; for opq's unordered codes, the
  first 1, 2, 4, ... codebooks and all of them (how fast codes separate items)."""
  L = len(spec.sizes)
  if spec.method != "opq":
    return tuple(range(1, L + 1))
  return tuple(sorted({2 ** i for i in range(L.bit_length()) if 2 ** i <= L} | {L}))


def fit_sids(embeddings: np.ndarray, spec: SIDSpec, *, item_ids: np.ndarray,
             categories: np.ndarray | None = None, mesh=None,
             show_progress: bool = True, cooccurrence: Any = None,
             fit_rows: Any = None) -> SIDResult:
  """Fits the tokenizer, codes every item, builds the table and its quality report.

  `cooccurrence` (sid_v2 only): training-part Sequences, or int [p, 2] rows of co-consumed
  items; without it, `sid.sid_v2.pairs_data` is read when set.
  `fit_rows` (opq only): the rows to fit on (bool mask [n] or row indices, e.g. the items of
  the training split); every row is then assigned. The report's `fit_items` counts them.
  Shape: embeddings [n, d]; item_ids int [n]; categories int [n] (-1 unknown) or None.
  """
  x = np.asarray(embeddings, np.float32)
  if x.ndim != 2 or x.shape[0] != len(item_ids):
    raise DataError(f"embeddings have shape {x.shape}, expected ({len(item_ids)}, d)")
  if not np.isfinite(x).all():
    raise DataError("embeddings contain NaN or inf")
  if fit_rows is not None and spec.method != "opq":
    raise ValueError(f"fit_rows: only method opq fits on a subset of rows, got "
                     f"'{spec.method}'")
  rows = fit_row_index(fit_rows, len(x))
  key = jax.random.key(spec.seed)
  start = time.perf_counter()
  if spec.method == "opq":
    tokenizer = _fit_opq(x[rows], spec)
    codes = pq.assign(tokenizer, x)
    target, recon = x, pq.reconstruct(tokenizer, codes)
  elif spec.method == "rq_vae":
    model, _ = rqvae.train_rqvae(x, _rqvae_config(spec, x.shape[1]), mesh=mesh,
                                 show_progress=show_progress)
    codes = rqvae.rqvae_assign(model, x)
    tokenizer = (model, _rqvae_config(spec, x.shape[1]))
    target, recon = x, rqvae.rqvae_reconstruct(model, codes)
  elif spec.method == "sid_v2":
    cfg = _sid_v2_config(spec, x.shape[1])
    pairs = cooccurrence_rows(spec, item_ids, cooccurrence) if cfg.cooccurrence_weight else None
    if cfg.cooccurrence_weight and pairs is None:
      raise ConfigError("sid.sid_v2.cooccurrence_weight", f"is {cfg.cooccurrence_weight} but no "
                        "co-occurrence pairs were given: set sid.sid_v2.pairs_data to the dataset "
                        "folder, pass the training sequences, or set it to 0")
    model, _ = sid_v2.train_sid_v2(x, cfg, pairs=pairs, mesh=mesh, show_progress=show_progress)
    codes = rqvae.rqvae_assign(model, x)
    tokenizer = (model, cfg)
    target, recon = x, rqvae.rqvae_reconstruct(model, codes)
  else:
    tokenizer = rq_kmeans.rq_kmeans_fit(
        x, spec.sizes, key=key, iters=spec.iters, metric=spec.metric,
        batch_size=spec.batch_size or None, balanced=spec.balanced, mesh=mesh)
    codes = tokenizer.codes
    # RQ-KMeans reconstructs the (normalised, for cosine) input it clustered.
    target = x if spec.metric == "l2" else x / np.maximum(
        np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    recon = rq_kmeans.rq_reconstruct(tokenizer, codes)
  fit_s = time.perf_counter() - start
  table = SIDTable(item_ids=np.asarray(item_ids), codes=codes, codebook_sizes=spec.sizes)
  if spec.uses_collision_level:
    table = with_collision_level(table)
  report = quality_lib.quality_report(
      codes, spec.sizes, embeddings=target, reconstruction=recon, categories=categories,
      prefix_levels=_prefix_levels(spec), seed=spec.seed)
  report["method"] = spec.method
  report["fit_s"] = round(fit_s, 3)
  report["fit_items"] = int(len(rows))
  report["mean_perplexity"] = float(np.mean([lv["perplexity"] for lv in report["levels"]]))
  if spec.method == "opq":
    report["opq"] = {"pca_dim": tokenizer.pca_dim, "sub_dim": tokenizer.sub_dim,
                     "whiten": spec.whiten, "opq_iters": spec.opq_iters,
                     "distortion": list(tokenizer.distortion)}
  report["collision_level_size"] = int(table.collision_size) if spec.uses_collision_level else 0
  report["unique_with_collision_level"] = (
      bool(len(np.unique(table.full_codes, axis=0)) == table.num_items))
  return SIDResult(table=table, tokenizer=tokenizer, report=report, fit_s=fit_s)


def assign_codes(tokenizer: Any, embeddings: np.ndarray) -> np.ndarray:
  """Codes of (new) items under a fitted tokenizer, without refitting. Shape: -> int32 [n, L]."""
  if isinstance(tokenizer, rq_kmeans.RQKMeansModel):
    return rq_kmeans.rq_assign(tokenizer, embeddings)
  if isinstance(tokenizer, pq.PQModel):
    return pq.assign(tokenizer, embeddings)
  model, _ = tokenizer  # RQVAE or SIDv2 (an RQVAE)
  return rqvae.rqvae_assign(model, np.asarray(embeddings, np.float32))


def write_sids(out_dir: str | pathlib.Path, result: SIDResult, spec: SIDSpec, *,
               embeddings_path: str | None = None, inputs: Any = None) -> dict[str, Any]:
  """Writes the tokenizer, report.json, then the table with the manifest last."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / artifacts.MANIFEST).unlink(missing_ok=True)
  if spec.method == "rq_vae":
    model, cfg = result.tokenizer
    rqvae.save(model, cfg, out_dir / TOKENIZER_DIR)
  elif spec.method == "sid_v2":
    sid_v2.save(result.tokenizer[0], out_dir / TOKENIZER_DIR)
  elif spec.method == "opq":
    result.tokenizer.save(out_dir / TOKENIZER_DIR, config=spec.to_dict())
  else:
    rq_kmeans.save(result.tokenizer, out_dir / TOKENIZER_DIR, config=spec.to_dict())
  quality_lib.write_report(out_dir, result.report)
  return result.table.save(out_dir, config=spec.to_dict(), method=spec.method,
                           embeddings=embeddings_path, fit_s=round(result.fit_s, 3),
                           quality_summary=summary(result.report), inputs=inputs,
                           fit_items=result.report.get("fit_items"))


def load_tokenizer(sid_dir: str | pathlib.Path) -> Any:
  """The fitted tokenizer of a `sid` artifact (RQKMeansModel, (RQVAE, RQVAEConfig),
  (SIDv2, SIDv2Config) or PQModel)."""
  sid_dir = pathlib.Path(sid_dir)
  method = artifacts.read_manifest(sid_dir).get("method")
  if method == "opq":
    return pq.PQModel.load(sid_dir / TOKENIZER_DIR)
  if method == "rq_vae":
    return rqvae.load(sid_dir / TOKENIZER_DIR)
  if method == "sid_v2":
    return sid_v2.load(sid_dir / TOKENIZER_DIR)
  return rq_kmeans.load(sid_dir / TOKENIZER_DIR)


def is_complete(sid_dir: str | pathlib.Path, spec: SIDSpec, inputs: Any = None) -> bool:
  """`artifacts.is_complete` for a sid artifact of `spec`. An artifact written before some
  fields existed still counts for a spec holding their defaults (its codes are the same), so
  adding a field does not refit old runs and unbind their trained checkpoints."""
  return artifacts.is_complete(sid_dir, spec.to_dict(), inputs, defaults=SIDSpec().to_dict())


def summary(report: dict[str, Any]) -> dict[str, Any]:
  """The headline numbers of a quality report (for manifests and result tables)."""
  coherence = {str(c["prefix"]): c.get("coherence")
               for c in report.get("category_coherence", []) or []}
  return {
      "level1_utilisation": report["levels"][0]["utilisation"],
      "collision_rate": report["collision_rate"],
      "max_group": report["max_group"],
      "reconstruction_error": report.get("reconstruction_error"),
      "coherence_ratio": coherence,
      "unique_with_collision_level": report.get("unique_with_collision_level"),
  }
