"""PLUM's SID-v2 tokenizer: several input embeddings, multi-resolution codebooks, co-occurrence.

An RQ-VAE (lrm/sid/rqvae.py, whose quantizer, codebook initialisation, dead-code restart,
progressive level masking, rotation trick and assignment this module reuses) with three changes,
each switchable for the ablation (PLUM, arXiv 2510.07784):

(a) **Several input embeddings, reconstructed separately.** The input row is the concatenation
    of M modality blocks (`modality_dims`, e.g. Amazon's title embedding and its brand +
    categories embedding). Each block has its own small MLP encoder; their outputs are
    concatenated and projected (an MLP) into the latent that is quantized. One decoder per
    modality reconstructs its block from the quantized latent; the reconstruction loss is the
    sum over modalities of each block's mean squared error, so a small block counts as much as
    a large one. With one block this is the plain RQ-VAE (SID-v1's fused input).
(b) **Multi-resolution codebooks**: `codebook_sizes` may fall with depth (PLUM: 2048, 1024,
    512, ...), with progressive masking (each example trains the first r levels, r uniform).
(c) **Co-occurrence contrastive loss**: items co-consumed in the training part (pairs from
    lrm/encoders/pairs.py) are pulled together with a symmetric in-batch InfoNCE; in-batch
    items that are known co-occurrences of the anchor, duplicates of its positive, or the
    anchor itself are masked out of the denominator. `cooccurrence_weight = 0` turns it off.

Where the co-occurrence term acts (issue 10's diagnosis, Amazon Beauty, 300 steps). The first
version took the InfoNCE on L2-normalised encoder latents (`cooccurrence_space="latent"`,
`cooccurrence_similarity="cosine"`) and collapsed the codes: uniqueness .95 -> .56-.62, first-
level perplexity 413 -> 124, second 159 -> 11. Beauty's co-consumption positives are noisy (the
loss stays near chance, 5.1 against ln 256 = 5.5), and for noisy positives the cheapest way down
for a fixed-temperature InfoNCE is to compress the spread of all similarities, i.e. to raise its
effective temperature: the latents crowd into a cone (mean cosine .68 at initialisation falls to
.09 with reconstruction alone but rises to .73 with the term, .86 at temperature .05), the same
at weight .01, .1 or 1 because the reconstruction gradient (a mean over 768 dims of unit rows,
~3e-3) is tiny next to it. The quantizer reads that cone through L2 distances and puts it on
few codes. Masking the anchor itself, a projection head, centring, or switching the term on
after 100 steps did not fix it (uniqueness .47-.55, measured). What does
(`cooccurrence_similarity="l2"`, `cooccurrence_space="quantized"`, the defaults): logits are
minus squared L2 distances, the quantizer's own metric, divided by their batch mean (with
gradient), so no shrinking or crowding of the whole geometry lowers the loss, only moving
co-consumed items closer than the others; and they are taken between the quantized latents
(the codewords' sum, straight-through to the encoder, no gradient to the codebooks), so the
term acts on which codes items get rather than on a direction the quantizer never sees.
benchmarks/README.md has the numbers.

The input to `train_sid_v2`, `rqvae.rqvae_assign` and the `sid` stage is the concatenated row
[n, sum(modality_dims)], so a `SIDv2` is an `RQVAE` everywhere codes are read.

Shape letters: n items, D input (all blocks), d_m a block, h latent, c level, L levels, p pairs.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import pathlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.core import artifacts
from lrm.core.config import dataclass_from_dict
from lrm.core.errors import ConfigError, DataError
from lrm.core.train_step import make_train_step
from lrm.encoders.contrastive import info_nce_from_logits
from lrm.encoders.pairs import false_negative_mask
from lrm.parallel.rules import sharding_context
from lrm.sid import rqvae
from lrm.sid.rqvae import RQVAE

STAGE = "sid_v2"
COOCCURRENCE_SIMILARITIES = ("l2", "cosine")
COOCCURRENCE_SPACES = ("quantized", "latent")


@dataclasses.dataclass(frozen=True)
class SIDv2Config(rqvae.RQVAEConfig):
  """RQVAEConfig's options (hidden_dims = the fusion MLP's hidden layers) plus SID-v2's.

  `input_dim` is derived: the sum of `modality_dims` (0 or that sum are accepted).
  """
  # Dimension of each input block (modality), in the order they are concatenated.
  modality_dims: tuple[int, ...] = (768,)
  # Hidden layers of each modality's own encoder (its decoder mirrors them).
  modality_hidden: tuple[int, ...] = (256,)
  # Output dimension of each modality encoder (the fusion MLP reads M times this).
  modality_out: int = 128
  # Weight of the co-occurrence InfoNCE (0: off) and its temperature.
  cooccurrence_weight: float = 0.1
  cooccurrence_temperature: float = 0.1
  # Similarity of the InfoNCE: "l2" (minus squared distance over its batch mean; scale-
  # invariant, the quantizer's metric) or "cosine" (unit vectors; the first version).
  cooccurrence_similarity: str = "l2"
  # What the InfoNCE compares: "quantized" (the codewords' sum, straight-through to the
  # encoder) or "latent" (the encoder output before quantization; the first version).
  cooccurrence_space: str = "quantized"
  # Co-occurrence pairs per step.
  cooccurrence_batch_size: int = 256
  # SID-v2 defaults: PLUM's multi-resolution sizes and progressive masking.
  codebook_sizes: tuple[int, ...] = (256, 128, 64)
  progressive_masking: bool = True
  hidden_dims: tuple[int, ...] = (256,)
  input_dim: int = 0

  def __post_init__(self):
    for name in ("modality_dims", "modality_hidden"):
      v = getattr(self, name)
      if isinstance(v, (list, tuple)):
        object.__setattr__(self, name, tuple(v))
    dims = self.modality_dims
    if not isinstance(dims, tuple) or not dims or any(
        isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1 for d in dims):
      raise ConfigError("modality_dims", f"must be a non-empty sequence of integers >= 1, got "
                        f"{dims!r}")
    if self.input_dim not in (0, sum(dims)):
      raise ConfigError("input_dim", f"{self.input_dim} is not the sum of modality_dims "
                        f"{dims} ({sum(dims)})")
    object.__setattr__(self, "input_dim", int(sum(dims)))
    super().__post_init__()
    if any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d < 1
           for d in self.modality_hidden):
      raise ConfigError("modality_hidden", f"must be integers >= 1, got {self.modality_hidden!r}")
    if isinstance(self.modality_out, bool) or not isinstance(self.modality_out, int) \
        or self.modality_out < 1:
      raise ConfigError("modality_out", f"must be an integer >= 1, got {self.modality_out!r}")
    for name, strict in (("cooccurrence_weight", False), ("cooccurrence_temperature", True)):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (
          v <= 0 if strict else v < 0):
        raise ConfigError(name, f"must be a finite number {'>' if strict else '>='} 0, got {v!r}")
    for name, allowed in (("cooccurrence_similarity", COOCCURRENCE_SIMILARITIES),
                          ("cooccurrence_space", COOCCURRENCE_SPACES)):
      if getattr(self, name) not in allowed:
        raise ConfigError(name, f"must be one of {allowed}, got {getattr(self, name)!r}")
    if isinstance(self.cooccurrence_batch_size, bool) or not isinstance(
        self.cooccurrence_batch_size, int) or self.cooccurrence_batch_size < 2:
      raise ConfigError("cooccurrence_batch_size", f"must be an integer >= 2, got "
                        f"{self.cooccurrence_batch_size!r}")

  @property
  def num_modalities(self) -> int:
    return len(self.modality_dims)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "SIDv2Config":
    return dataclass_from_dict(cls, values, "sid_v2")


class SIDv2Output(NamedTuple):
  """What `SIDv2.__call__` returns (RQVAEOutput's fields + per-modality reconstruction losses).

  Shape: reconstruction [n, D], codes int32 [n, L], latent / quantized [n, h],
  modality_losses [M], the rest scalars.
  """
  reconstruction: jax.Array
  codes: jax.Array
  latent: jax.Array
  quantized: jax.Array
  loss: jax.Array
  reconstruction_loss: jax.Array
  codebook_loss: jax.Array
  commitment_loss: jax.Array
  modality_losses: jax.Array


def latent_cosine(z: jax.Array) -> jax.Array:
  """Mean cosine over all ordered pairs of rows (self-pairs included), |mean unit row|^2: near
  0 for latents spread around the origin, near 1 when they crowd into one cone.

  Shape: z [n, h] -> scalar.
  """
  u = z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
  return jnp.sum(jnp.square(jnp.mean(u, axis=0)))


def split_modalities(x: jax.Array, dims: tuple[int, ...]) -> list[jax.Array]:
  """Shape: x [n, sum(dims)] -> [n, d_m] per block."""
  bounds = np.cumsum(dims)[:-1].tolist()
  return jnp.split(x, bounds, axis=-1) if bounds else [x]


def reconstruction_losses(x: jax.Array, reconstruction: jax.Array,
                          dims: tuple[int, ...]) -> jax.Array:
  """Per modality, the mean squared error of its block (mean over rows and the block's dims).

  Shape: x, reconstruction [n, sum(dims)] -> [M].
  """
  return jnp.stack([jnp.mean(jnp.square(a - b)) for a, b in
                    zip(split_modalities(x, dims), split_modalities(reconstruction, dims))])


def cooccurrence_logits(za: jax.Array, zb: jax.Array, similarity: str,
                        temperature: float) -> jax.Array:
  """logits[i, j] between anchor a_i and candidate b_j.

  "cosine": cos(a_i, b_j) / t. "l2": -|a_i - b_j|^2 / (t * mean over the batch of |a - b|^2),
  invariant to scaling all rows (the mean carries gradient, so shrinking the geometry cannot
  lower the loss).
  Shape: za, zb [p, h] -> [p, p].
  """
  if similarity == "cosine":
    norm = lambda z: z / jnp.maximum(jnp.linalg.norm(z, axis=-1, keepdims=True), 1e-12)
    return jnp.dot(norm(za), norm(zb).T, precision=jax.lax.Precision.HIGHEST) / temperature
  d2 = jnp.sum(jnp.square(za[:, None, :] - zb[None, :, :]), axis=-1)
  return -d2 / (temperature * (jnp.mean(d2) + 1e-12))


class SIDv2(RQVAE):
  """Per-modality encoders -> concat -> fusion MLP -> residual quantizer -> per-modality decoders.

  Inherits `quantize` and `lookup` from RQVAE (the same codebooks and nearest-code rule).
  """

  # RQVAE.__init__ builds one encoder; SID-v2 builds its own modules instead.
  def __init__(self, config: SIDv2Config, *, rngs: nnx.Rngs):  # pylint: disable=W0231
    self.config = config
    cfg = config
    eager = (nnx.use_eager_sharding(False) if not rqvae._mesh_is_set()
             else contextlib.nullcontext())
    hid = ("hidden",) * len(cfg.modality_hidden)
    with eager:
      self.modality_encoders = nnx.List([
          rqvae._mlp((d, *cfg.modality_hidden, cfg.modality_out), ("io", *hid, "io"), rngs)
          for d in cfg.modality_dims])
      fused = cfg.modality_out * cfg.num_modalities
      self.encoder = rqvae._mlp((fused, *cfg.hidden_dims, cfg.latent_dim),
                                ("io", *["hidden"] * len(cfg.hidden_dims), "io"), rngs)
      self.modality_decoders = nnx.List([
          rqvae._mlp((cfg.latent_dim, *cfg.modality_hidden[::-1], d), ("io", *hid, "io"), rngs)
          for d in cfg.modality_dims])
      init = nnx.with_partitioning(nnx.initializers.normal(1.0 / math.sqrt(cfg.latent_dim)),
                                   ("codebook", "embed"))
      self.codebooks = nnx.List([nnx.Param(init(rngs.params(), (k, cfg.latent_dim)))
                                 for k in cfg.codebook_sizes])

  def encode(self, x: jax.Array) -> jax.Array:
    """Shape: x [n, D] -> latent [n, h]."""
    blocks = split_modalities(x, self.config.modality_dims)
    hidden = [jax.nn.relu(rqvae._run_mlp(enc, b)) for enc, b in zip(self.modality_encoders,
                                                                    blocks)]
    return rqvae._run_mlp(self.encoder, jnp.concatenate(hidden, axis=-1))

  def decode(self, z: jax.Array) -> jax.Array:
    """Shape: z [n, h] -> reconstruction [n, D] (the blocks, concatenated)."""
    return jnp.concatenate([rqvae._run_mlp(dec, z) for dec in self.modality_decoders], axis=-1)

  def __call__(self, x: jax.Array, level_mask: jax.Array | None = None) -> SIDv2Output:
    """Forward pass with losses; as RQVAE.__call__ but the reconstruction loss is the sum of
    the per-modality losses. Shape: x [n, D], level_mask [n, L] or None -> SIDv2Output."""
    sg = jax.lax.stop_gradient
    cfg = self.config
    z = self.encode(x)
    codes, words, residuals = self.quantize(z)
    mask = jnp.ones(codes.shape, z.dtype) if level_mask is None else level_mask.astype(z.dtype)
    z_q = jnp.sum(words * mask[..., None], axis=1)
    per_level = lambda a: jnp.mean(jnp.sum(jnp.mean(a, -1) * mask, axis=1))
    codebook_loss = per_level(jnp.square(sg(residuals) - words))
    commitment_loss = per_level(jnp.square(residuals - sg(words)))
    z_st = rqvae._rotate_onto(z, z_q) if cfg.rotation_trick else z + sg(z_q - z)
    recon = self.decode(z_st)
    modality_losses = reconstruction_losses(x, recon, cfg.modality_dims)
    recon_loss = jnp.sum(modality_losses)
    loss = recon_loss + codebook_loss + cfg.beta * commitment_loss
    return SIDv2Output(recon, codes, z, z_q, loss, recon_loss, codebook_loss, commitment_loss,
                       modality_losses)

  def cooccurrence_embed(self, x: jax.Array) -> jax.Array:
    """What the co-occurrence term compares: the latent, or (`cooccurrence_space="quantized"`)
    the quantized latent, straight-through (value z_q, gradient to the encoder as for z).

    Shape: x [n, D] -> [n, h].
    """
    z = self.encode(x)
    if self.config.cooccurrence_space == "latent":
      return z
    _, words, _ = self.quantize(z)
    return z + jax.lax.stop_gradient(jnp.sum(words, axis=1) - z)

  def cooccurrence_loss(self, xa: jax.Array, xb: jax.Array, mask: jax.Array) -> jax.Array:
    """Symmetric in-batch InfoNCE of co-consumed pairs (a_i, b_i); see `cooccurrence_logits`.

    Shape: xa, xb [p, D], mask bool [p, p] (True: not a negative) -> scalar.
    """
    cfg = self.config
    za, zb = self.cooccurrence_embed(xa), self.cooccurrence_embed(xb)
    logits = cooccurrence_logits(za, zb, cfg.cooccurrence_similarity,
                                 cfg.cooccurrence_temperature)
    return 0.5 * (info_nce_from_logits(logits, mask) + info_nce_from_logits(logits.T, mask.T))


# ------------------------------------------------------------------------------- training


def _sid_v2_loss(model: SIDv2, x: jax.Array, key: jax.Array,
                 pairs: tuple[jax.Array, jax.Array, jax.Array] | None):
  """The RQ-VAE loss plus the weighted co-occurrence loss; aux = (metrics, code counts)."""
  cfg = model.config
  mask = (rqvae._level_mask(key, x.shape[0], cfg.num_levels, cfg.progressive_masking_mode)
          if cfg.progressive_masking else None)
  out = model(x, mask)
  cooc = model.cooccurrence_loss(*pairs) if pairs is not None else jnp.zeros(())
  loss = out.loss + cfg.cooccurrence_weight * cooc
  metrics = {"loss": loss, "reconstruction": out.reconstruction_loss,
             "codebook": out.codebook_loss, "commitment": out.commitment_loss,
             "cooccurrence": cooc, "modality_reconstruction": out.modality_losses,
             "latent_cosine": latent_cosine(out.latent)}
  return loss, (metrics, rqvae._code_counts(model, out.codes))


_train_step = make_train_step(_sid_v2_loss)


def _check_pairs(pairs: Any, n: int) -> np.ndarray:
  pairs = np.asarray(pairs)
  if pairs.ndim != 2 or pairs.shape[1] != 2 or not np.issubdtype(pairs.dtype, np.integer):
    raise DataError(f"co-occurrence pairs have shape {pairs.shape} / dtype {pairs.dtype}, "
                    "expected int [p, 2] (catalog rows)")
  if len(pairs) and (pairs.min() < 0 or pairs.max() >= n):
    raise DataError(f"co-occurrence pairs must be rows in [0, {n})")
  return pairs.astype(np.int64)


def train_sid_v2(x: Any, config: SIDv2Config, *, pairs: Any = None,
                 mesh: jax.sharding.Mesh | None = None,
                 show_progress: bool = True) -> tuple[SIDv2, dict[str, Any]]:
  """Trains SID-v2 on concatenated modality rows x, with co-occurrence `pairs` (int [p, 2]
  catalog rows of items co-consumed in the training part) when `cooccurrence_weight` > 0.

  Returns the model and its history (per step `loss`, `reconstruction`, `codebook`,
  `commitment`, `cooccurrence`, `modality_reconstruction` [steps, M], `latent_cosine` (see
  `latent_cosine`, of the step's batch); `utilisation`,
  `restarted`, `window_end` per restart window; `steps`, `batch_size`), as `train_rqvae`.
  Shape: x [n, D], pairs int [p, 2].
  """
  cfg = config
  if not isinstance(cfg, SIDv2Config):
    raise ConfigError("config", f"must be a SIDv2Config, got {type(cfg).__name__}")
  x = rqvae._check_input(x, cfg.input_dim)
  n = x.shape[0]
  use_pairs = cfg.cooccurrence_weight > 0
  if use_pairs:
    if pairs is None:
      raise ConfigError("cooccurrence_weight", f"is {cfg.cooccurrence_weight} but no "
                        "co-occurrence pairs were given (set it to 0 to train without)")
    pairs = _check_pairs(pairs, n)
    both = np.concatenate([pairs, pairs[:, ::-1]])
    keys = np.unique(both[:, 0] * n + both[:, 1])  # every (anchor, co-consumed) positive
    pair_batch = min(cfg.cooccurrence_batch_size, len(pairs))
    if pair_batch < 2:
      raise DataError(f"{len(pairs)} co-occurrence pairs: the loss needs at least 2")
  batch, sharding, init_size, steps = rqvae.batch_plan(cfg, n, mesh,
                                                    kmeans_init=cfg.kmeans_init)
  key = jax.random.key(cfg.seed)
  k_params, k_data, k_init, k_steps, k_restart, k_pairs = jax.random.split(key, 6)
  put = (lambda a: jax.device_put(a, sharding)) if sharding is not None else jnp.asarray

  with sharding_context(mesh):
    model = SIDv2(cfg, rngs=nnx.Rngs(params=k_params))
    batches = rqvae._Batches(n, batch, k_data)
    pair_batches = rqvae._Batches(len(pairs), pair_batch, k_pairs) if use_pairs else None
    if cfg.kmeans_init:
      init_rows = np.asarray(jax.random.permutation(jax.random.fold_in(k_data, 0), n))[:init_size]
      rqvae.init_codebooks(model, x[init_rows], key=k_init, iters=cfg.kmeans_iters)
    opt = nnx.Optimizer(model, rqvae.make_optimizer(cfg), wrt=nnx.Param)
    train_step = nnx.cached_partial(_train_step, model, opt)

    def inputs(step: int):
      xb = put(x[batches.next()])
      if not use_pairs:
        return xb, (None,)
      rows = pairs[pair_batches.next()]
      # Orient each pair at random so both directions are trained.
      flip = np.random.default_rng([cfg.seed, step]).random(len(rows)) < 0.5
      rows = np.where(flip[:, None], rows[:, ::-1], rows)
      # The anchor itself among the candidates is masked too (query_item = the anchor).
      fn = false_negative_mask(rows[:, 0], rows[:, 1], keys, n, query_item=rows[:, 0])
      return xb, ((jnp.asarray(x[rows[:, 0]]), jnp.asarray(x[rows[:, 1]]), jnp.asarray(fn)),)

    history = rqvae.run_training_steps(
        model, train_step, inputs, cfg=cfg, steps=steps, batch=batch, k_steps=k_steps,
        k_restart=k_restart, name="SID-v2", show_progress=show_progress)
  return model, history


# ----------------------------------------------------------------------------- save / load


def save(model: SIDv2, directory: str | os.PathLike) -> None:
  """Writes `directory/{params.npz, manifest.json}` (manifest last), as rqvae.save does."""
  cfg = model.config
  rqvae.save_params(model, directory, stage=STAGE, config=cfg.to_dict(),
                    counts={"levels": cfg.num_levels,
                            "codebook_sizes": list(cfg.codebook_sizes),
                            "modalities": cfg.num_modalities})


def load(directory: str | os.PathLike) -> tuple[SIDv2, SIDv2Config]:
  """Reads what `save` wrote; parameters restored bit for bit."""
  directory = pathlib.Path(directory)
  manifest = artifacts.read_manifest(directory)
  if manifest.get("stage") != STAGE:
    raise DataError(f"not a SID-v2 artifact (stage {manifest.get('stage')!r})",
                    path=directory / artifacts.MANIFEST)
  cfg = SIDv2Config.from_dict(manifest.get("config") or {})
  model = SIDv2(cfg, rngs=nnx.Rngs(0))
  rqvae.load_params(model, directory)
  return model, cfg


def prefix_sharing(codes: np.ndarray, pairs: np.ndarray, level: int = 1) -> float:
  """Share of pairs (a, b) whose codes agree on the first `level` levels.

  Shape: codes int [n, L], pairs int [p, 2] -> float.
  """
  codes, pairs = np.asarray(codes), np.asarray(pairs)
  if not len(pairs):
    return float("nan")
  same = (codes[pairs[:, 0], :level] == codes[pairs[:, 1], :level]).all(axis=1)
  return float(same.mean())
