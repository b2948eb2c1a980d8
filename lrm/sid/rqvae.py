"""RQ-VAE semantic-ID tokenizer (TIGER, Rajput et al. 2023; PLUM SID-v2 options).

An MLP encoder maps a content embedding to a latent vector; a residual quantizer with L
codebooks picks, level by level, the codeword nearest to what is left of the latent (the
residual); an MLP decoder reconstructs the input from the sum of the chosen codewords. The codes
of an item are its Semantic ID, int32 [L], level 0 the coarsest.

Loss (per batch, means over examples and dimensions):
  reconstruction ||x - x_hat||^2
  + sum_c ||sg(r_c) - e_c||^2            (codebook: moves codewords to the residuals)
  + beta * sum_c ||r_c - sg(e_c)||^2     (commitment: keeps residuals near their codewords)
where r_0 = z (the latent), r_{c+1} = r_c - e_c and e_c is level c's chosen codeword. The
gradient of the reconstruction reaches the encoder through the quantizer either by the
straight-through estimator (z + sg(z_q - z)) or by the rotation trick (Fifty et al. 2024: z is
rotated onto z_q and rescaled, with the rotation and scale treated as constants, so the gradient
keeps the angle between z and z_q; the forward value is z_q exactly). Both act on the whole
quantizer output z -> z_q = sum_c e_c.

Codebooks are initialised by k-means (lrm.sid.kmeans) on the first training batch's residuals,
level by level. Dead codes (chosen fewer than `dead_code_threshold` times over the last
`dead_code_restart_every` steps) are re-initialised from random residuals of the current batch.
Progressive masking (PLUM SID-v2) trains each example (or each batch) with only the first r
levels, r uniform in 1..L, so that every prefix of a SID is a reconstruction on its own.

Parameters carry logical axis names (lrm/parallel/rules.py: embed, mlp, codebook). Built inside
`with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):` they are sharded when
created; without a mesh they are plain arrays. `train_rqvae(..., mesh=mesh)` does this and
shards each batch over the mesh's data axes (data parallel).

Usage:
  cfg = RQVAEConfig(input_dim=768)
  model, history = train_rqvae(embeddings, cfg)
  codes = rqvae_assign(model, embeddings)          # int32 [n, L]
  save(model, cfg, "out/rqvae"); model, cfg = load("out/rqvae")

Shape letters: n items (batch), d input dim, h latent dim, c level, k codebook size, L levels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import itertools
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from tqdm.auto import tqdm

from lrm.core import artifacts
from lrm.core.config import dataclass_from_dict
from lrm.core.errors import ConfigError, DataError
from lrm.core.train_step import make_train_step
from lrm.parallel import mesh as mesh_lib
from lrm.parallel.rules import LOGICAL_AXIS_RULES
from lrm.sid.kmeans import kmeans_fit

STAGE = "rqvae"
PARAMS_FILE = "params.npz"
MASKING_MODES = ("example", "batch")


# ----------------------------------------------------------------------------------- config


@dataclasses.dataclass(frozen=True)
class RQVAEConfig:
  """Options of the RQ-VAE and its training; validated on construction (ConfigError names the
  field). Defaults are TIGER's: 3 levels x 256 codes, 128-d latent, encoder 512-256-128."""
  # Dimension of the input content embeddings (d).
  input_dim: int = 768
  # Hidden layer sizes of the encoder MLP (the decoder mirrors them).
  hidden_dims: tuple[int, ...] = (512, 256)
  # Dimension of the latent vector that is quantized (h).
  latent_dim: int = 128
  # Codes per level, coarsest first; may differ per level (PLUM halves them with depth).
  codebook_sizes: tuple[int, ...] = (256, 256, 256)
  # Weight of the commitment loss.
  beta: float = 0.25
  # AdamW learning rate and weight decay (decay applies to the MLP kernels only).
  learning_rate: float = 1e-3
  weight_decay: float = 1e-4
  # Examples per training step (clamped to the data size; a multiple of the mesh's data axes).
  batch_size: int = 1024
  # Training steps; `epochs` > 0 overrides it with ceil(epochs * n / batch_size).
  steps: int = 20000
  epochs: float = 0.0
  # Rotation trick (Fifty et al. 2024) instead of the straight-through estimator.
  rotation_trick: bool = False
  # Every this many steps, re-initialise dead codes from random residuals of the batch (0: never).
  dead_code_restart_every: int = 100
  # A code chosen fewer than this many times over the last window is dead.
  dead_code_threshold: int = 1
  # Train with only the first r levels, r uniform in 1..L (PLUM SID-v2).
  progressive_masking: bool = False
  # "example": r drawn per example; "batch": one r per step for the whole batch.
  progressive_masking_mode: str = "example"
  # Initialise codebooks by k-means on the first batch's residuals (else random normal).
  kmeans_init: bool = True
  # Lloyd iterations of that k-means.
  kmeans_iters: int = 25
  # Examples the k-means initialisation sees (0: one batch); at least the largest codebook.
  kmeans_init_size: int = 0
  # Everything (parameters, batches, masks, restarts) is drawn from this seed.
  seed: int = 0

  def __post_init__(self):
    for name in ("hidden_dims", "codebook_sizes"):
      value = getattr(self, name)
      if isinstance(value, (list, tuple)):
        object.__setattr__(self, name, tuple(value))
    self._validate()

  def _validate(self) -> None:
    def positive_int(name: str, allow_zero: bool = False) -> None:
      v = getattr(self, name)
      low = 0 if allow_zero else 1
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < low:
        raise ConfigError(name, f"must be an integer >= {low}, got {v!r}")

    def number(name: str, *, low: float, strict: bool) -> None:
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not math.isfinite(v) \
          or (v <= low if strict else v < low):
        raise ConfigError(name, f"must be a finite number {'>' if strict else '>='} {low}, "
                          f"got {v!r}")

    def int_tuple(name: str, *, low: int, allow_empty: bool) -> None:
      v = getattr(self, name)
      if not isinstance(v, tuple) or (not v and not allow_empty) or any(
          isinstance(s, bool) or not isinstance(s, (int, np.integer)) or s < low for s in v):
        raise ConfigError(name, f"must be a {'' if allow_empty else 'non-empty '}sequence of "
                          f"integers >= {low}, got {v!r}")

    positive_int("input_dim")
    int_tuple("hidden_dims", low=1, allow_empty=True)
    positive_int("latent_dim")
    int_tuple("codebook_sizes", low=2, allow_empty=False)
    number("beta", low=0.0, strict=False)
    number("learning_rate", low=0.0, strict=True)
    number("weight_decay", low=0.0, strict=False)
    positive_int("batch_size")
    positive_int("steps")
    number("epochs", low=0.0, strict=False)
    for name in ("rotation_trick", "progressive_masking", "kmeans_init"):
      if not isinstance(getattr(self, name), (bool, np.bool_)):
        raise ConfigError(name, f"must be true or false, got {getattr(self, name)!r}")
    positive_int("dead_code_restart_every", allow_zero=True)
    positive_int("dead_code_threshold")
    if self.progressive_masking_mode not in MASKING_MODES:
      raise ConfigError("progressive_masking_mode",
                        f"must be one of {MASKING_MODES}, got {self.progressive_masking_mode!r}")
    positive_int("kmeans_iters")
    positive_int("kmeans_init_size", allow_zero=True)
    if 0 < self.kmeans_init_size < max(self.codebook_sizes):
      raise ConfigError("kmeans_init_size", f"{self.kmeans_init_size} examples cannot seed "
                        f"{max(self.codebook_sizes)} codes (0 means one batch)")
    if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)):
      raise ConfigError("seed", f"must be an integer, got {self.seed!r}")

  @property
  def num_levels(self) -> int:
    return len(self.codebook_sizes)

  def to_dict(self) -> dict[str, Any]:
    return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v)
            for f in dataclasses.fields(self)}

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> RQVAEConfig:
    return dataclass_from_dict(cls, values, "rqvae")


# ----------------------------------------------------------------------------------- model


class RQVAEOutput(NamedTuple):
  """What `RQVAE.__call__` returns (a pytree).

  Shape: reconstruction [n, d], codes int32 [n, L], latent / quantized [n, h], losses scalars.
  """
  reconstruction: jax.Array
  codes: jax.Array
  latent: jax.Array
  quantized: jax.Array
  loss: jax.Array
  reconstruction_loss: jax.Array
  codebook_loss: jax.Array
  commitment_loss: jax.Array


def _mesh_is_set() -> bool:
  return not jax.sharding.get_abstract_mesh().empty


def _axis(dim_kind: str) -> str:
  return "embed" if dim_kind == "io" else "mlp"


def _mlp(dims: Sequence[int], kinds: Sequence[str], rngs: nnx.Rngs) -> nnx.List:
  """Linear layers dims[i] -> dims[i+1]; `kinds` ("io" or "hidden") name each dim's axis."""
  layers = []
  for (a, b), (ka, kb) in zip(itertools.pairwise(dims), itertools.pairwise(kinds)):
    names = (_axis(ka), _axis(kb))
    if names[0] == names[1]:  # one mesh axis cannot shard both dims of a kernel
      names = (None, names[1])
    layers.append(nnx.Linear(
        a, b, rngs=rngs,
        kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), names),
        bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (names[1],))))
  return nnx.List(layers)


def _run_mlp(layers: nnx.List, x: jax.Array) -> jax.Array:
  for i, layer in enumerate(layers):
    x = layer(x)
    if i < len(layers) - 1:
      x = jax.nn.relu(x)
  return x


def _nearest(r: jax.Array, codebook: jax.Array) -> jax.Array:
  """Shape: r [n, h], codebook [k, h] -> int32 [n], index of the nearest codeword (L2)."""
  d2 = (jnp.sum(codebook * codebook, axis=-1)[None, :]
        - 2.0 * jnp.dot(r, codebook.T, precision=jax.lax.Precision.HIGHEST))
  return jnp.argmin(d2, axis=-1).astype(jnp.int32)


def _rotate_onto(z: jax.Array, q: jax.Array, eps: float = 1e-8) -> jax.Array:
  """Rotation trick: forward value q, gradient to z through a constant rotation and scale.

  With u = z/|z|, v = q/|q|, w = (u + v)/|u + v|, R = I - 2ww^T + 2vu^T maps u to v, and
  (|q|/|z|) R z = q. R and the scale are stop-gradient'd (Fifty et al. 2024, eq. 4).
  Shape: z, q [n, h] -> [n, h].
  """
  sg = jax.lax.stop_gradient
  z_norm = jnp.linalg.norm(z, axis=-1, keepdims=True)
  q_norm = jnp.linalg.norm(q, axis=-1, keepdims=True)
  u = sg(z / jnp.maximum(z_norm, eps))
  v = sg(q / jnp.maximum(q_norm, eps))
  w = u + v
  w = sg(w / jnp.maximum(jnp.linalg.norm(w, axis=-1, keepdims=True), eps))
  scale = sg(q_norm / jnp.maximum(z_norm, eps))
  rotated = z - 2.0 * w * jnp.sum(w * z, -1, keepdims=True) + 2.0 * v * jnp.sum(u * z, -1,
                                                                                 keepdims=True)
  out = scale * rotated
  return out + sg(q - out)  # exact forward value, unchanged gradient


class RQVAE(nnx.Module):
  """MLP encoder -> residual quantizer (L codebooks) -> MLP decoder."""

  def __init__(self, config: RQVAEConfig, *, rngs: nnx.Rngs):
    self.config = config
    cfg = config
    dims = (cfg.input_dim, *cfg.hidden_dims, cfg.latent_dim)
    kinds = ("io", *["hidden"] * len(cfg.hidden_dims), "io")
    eager = nnx.use_eager_sharding(False) if not _mesh_is_set() else contextlib.nullcontext()
    with eager:
      self.encoder = _mlp(dims, kinds, rngs)
      self.decoder = _mlp(dims[::-1], kinds[::-1], rngs)
      init = nnx.with_partitioning(nnx.initializers.normal(1.0 / math.sqrt(cfg.latent_dim)),
                                   ("codebook", "embed"))
      self.codebooks = nnx.List([nnx.Param(init(rngs.params(), (k, cfg.latent_dim)))
                                 for k in cfg.codebook_sizes])

  def encode(self, x: jax.Array) -> jax.Array:
    """Shape: x [n, d] -> latent [n, h]."""
    return _run_mlp(self.encoder, x)

  def decode(self, z: jax.Array) -> jax.Array:
    """Shape: z [n, h] -> reconstruction [n, d]."""
    return _run_mlp(self.decoder, z)

  def quantize(self, z: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Residual quantization of z, all levels.

    Shape: z [n, h] -> codes int32 [n, L], codewords [n, L, h] (e_c), residuals [n, L, h] (r_c).
    """
    codes, words, residuals = [], [], []
    r = z
    for cb in self.codebooks:
      table = cb[...]
      idx = _nearest(jax.lax.stop_gradient(r), jax.lax.stop_gradient(table))
      e = jnp.take(table, idx, axis=0)
      codes.append(idx)
      words.append(e)
      residuals.append(r)
      r = r - e
    return jnp.stack(codes, 1), jnp.stack(words, 1), jnp.stack(residuals, 1)

  def lookup(self, codes: jax.Array) -> jax.Array:
    """Sum of the codewords of the given levels (a prefix of the SID is fine).

    Shape: codes int32 [n, c] with c <= L -> [n, h].
    """
    out = 0.0
    for c in range(codes.shape[1]):
      out = out + jnp.take(self.codebooks[c][...], codes[:, c], axis=0)
    return out

  def __call__(self, x: jax.Array, level_mask: jax.Array | None = None) -> RQVAEOutput:
    """Forward pass with losses.

    `level_mask` (float or bool [n, L], 1 = level used) drops levels from the quantized latent
    and from the quantization losses (progressive masking); default: all levels.
    Shape: x [n, d] -> RQVAEOutput (reconstruction [n, d], codes int32 [n, L]).
    """
    sg = jax.lax.stop_gradient
    cfg = self.config
    z = self.encode(x)
    codes, words, residuals = self.quantize(z)
    if level_mask is None:
      mask = jnp.ones(codes.shape, z.dtype)
    else:
      mask = level_mask.astype(z.dtype)
    z_q = jnp.sum(words * mask[..., None], axis=1)
    per_level = lambda a: jnp.mean(jnp.sum(jnp.mean(a, -1) * mask, axis=1))
    codebook_loss = per_level(jnp.square(sg(residuals) - words))
    commitment_loss = per_level(jnp.square(residuals - sg(words)))
    if cfg.rotation_trick:
      z_st = _rotate_onto(z, z_q)
    else:
      z_st = z + sg(z_q - z)
    recon = self.decode(z_st)
    recon_loss = jnp.mean(jnp.square(x - recon))
    loss = recon_loss + codebook_loss + cfg.beta * commitment_loss
    return RQVAEOutput(recon, codes, z, z_q, loss, recon_loss, codebook_loss, commitment_loss)


# ------------------------------------------------------------------------------- training


def _check_input(x: Any, input_dim: int, *, what: str = "x") -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2 or x.shape[1] != input_dim:
    raise DataError(f"{what} has shape {x.shape}, expected [n, {input_dim}] (input_dim)")
  if x.shape[0] == 0:
    raise DataError(f"{what} has no rows")
  if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
    raise DataError(f"{what} has dtype {x.dtype}, expected real numbers")
  x = x.astype(np.float32)
  finite = np.isfinite(x).all(axis=1)
  if not finite.all():
    bad = np.flatnonzero(~finite)
    raise DataError(f"{what} has NaN or inf in {len(bad)} rows, first {bad[:10].tolist()}")
  return x


def _level_mask(key: jax.Array, n: int, levels: int, mode: str) -> jax.Array:
  """Progressive masking: r uniform in 1..L per example (or one per batch) -> bool [n, L]."""
  shape = (n, 1) if mode == "example" else (1, 1)
  r = jax.random.randint(key, shape, 1, levels + 1)
  return jnp.broadcast_to(jnp.arange(levels)[None, :] < r, (n, levels))


def _code_counts(model: RQVAE, codes: jax.Array) -> tuple[jax.Array, ...]:
  return tuple(jnp.bincount(codes[:, c], length=k)
               for c, k in enumerate(model.config.codebook_sizes))


def _rqvae_loss(model: RQVAE, x: jax.Array, key: jax.Array):
  """The RQ-VAE loss of batch x; aux = (metrics, per-level code counts)."""
  cfg = model.config
  if cfg.progressive_masking:
    mask = _level_mask(key, x.shape[0], cfg.num_levels, cfg.progressive_masking_mode)
  else:
    mask = None
  out = model(x, mask)
  metrics = {"loss": out.loss, "reconstruction": out.reconstruction_loss,
             "codebook": out.codebook_loss, "commitment": out.commitment_loss}
  return out.loss, (metrics, _code_counts(model, out.codes))


_train_step = make_train_step(_rqvae_loss)


@nnx.jit
def _restart_dead_codes(model: RQVAE, x: jax.Array, counts: tuple[jax.Array, ...],
                        threshold: int, key: jax.Array) -> jax.Array:
  """Codes chosen fewer than `threshold` times get random residuals of the batch x.

  Shape: x [n, d], counts int [k_c] per level -> int32 [L], codes restarted per level.
  """
  _, _, residuals = model.quantize(model.encode(x))
  restarted = []
  for c, cb in enumerate(model.codebooks):
    k = cb.shape[0]
    dead = counts[c] < threshold
    pick = jax.random.randint(jax.random.fold_in(key, c), (k,), 0, x.shape[0])
    cb[...] = jnp.where(dead[:, None], residuals[pick, c], cb[...])
    restarted.append(jnp.sum(dead))
  return jnp.stack(restarted).astype(jnp.int32)


def init_codebooks(model: RQVAE, x: Any, *, key: jax.Array, iters: int = 25) -> None:
  """k-means initialisation of the codebooks on the residuals of x, level by level (in place).

  Shape: x [n, d] with n >= the largest codebook.
  """
  cfg = model.config
  x = _check_input(x, cfg.input_dim)
  if x.shape[0] < max(cfg.codebook_sizes):
    raise DataError(f"k-means initialisation needs at least {max(cfg.codebook_sizes)} rows "
                    f"(the largest codebook), got {x.shape[0]}")
  r = np.asarray(jax.jit(model.encode)(jnp.asarray(x)), np.float32)
  for c, cb in enumerate(model.codebooks):
    k = cfg.codebook_sizes[c]
    fit = kmeans_fit(r, k, key=jax.random.fold_in(key, c), iters=iters)
    centroids = np.asarray(fit.centroids, np.float32)
    old = cb[...]
    new = jnp.asarray(centroids, old.dtype)
    if getattr(old, "sharding", None) is not None:
      new = jax.device_put(new, old.sharding)
    cb[...] = new
    idx = np.asarray(_nearest(jnp.asarray(r), new))
    r = r - centroids[idx]


def _num_steps(cfg: RQVAEConfig, n: int, batch: int) -> int:
  if cfg.epochs > 0:
    return max(1, math.ceil(cfg.epochs * n / batch))
  return cfg.steps


class _Batches:
  """Shuffled mini-batches without replacement; a fresh permutation per epoch (seeded)."""

  def __init__(self, n: int, batch: int, key: jax.Array):
    self.n, self.batch, self.key = n, batch, key
    self.epoch, self.pos, self.perm = -1, n, None

  def next(self) -> np.ndarray:
    if self.pos + self.batch > self.n:
      self.epoch += 1
      self.perm = np.asarray(jax.random.permutation(jax.random.fold_in(self.key, self.epoch),
                                                    self.n))
      self.pos = 0
    out = self.perm[self.pos:self.pos + self.batch]
    self.pos += self.batch
    return out


def make_optimizer(cfg: RQVAEConfig) -> optax.GradientTransformation:
  """AdamW; weight decay on the MLP kernels only (not biases, not codebooks)."""
  def decay_mask(params):
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "kernel" in jax.tree_util.keystr(path), params)
  return optax.adamw(cfg.learning_rate, weight_decay=cfg.weight_decay, mask=decay_mask)


_SHAPE_FIELDS = ("input_dim", "hidden_dims", "latent_dim", "codebook_sizes")


def _check_init_model(init_model: Any, cfg: RQVAEConfig) -> None:
  """A warm start needs a model whose parameter shapes are those `cfg` builds."""
  if not isinstance(init_model, RQVAE):
    raise ConfigError("init_model", f"must be an RQVAE, got {type(init_model).__name__}")
  for name in _SHAPE_FIELDS:
    have, want = getattr(init_model.config, name), getattr(cfg, name)
    if have != want:
      raise ConfigError(name, f"init_model has {name}={have!r} but the config asks for "
                        f"{want!r}; a warm start needs the same shapes")


def _copy_params(src: RQVAE, dst: RQVAE) -> None:
  """Copies every nnx.Param of src into dst (fresh buffers, dst's sharding; src untouched)."""
  src_flat = {"/".join(str(p) for p in path): v
              for path, v in nnx.to_flat_state(nnx.state(src, nnx.Param))}
  dst_flat = {"/".join(str(p) for p in path): v
              for path, v in nnx.to_flat_state(nnx.state(dst, nnx.Param))}
  if src_flat.keys() != dst_flat.keys():
    raise DataError(f"init_model's parameters do not match the config: missing "
                    f"{sorted(dst_flat.keys() - src_flat.keys())[:5]}, extra "
                    f"{sorted(src_flat.keys() - dst_flat.keys())[:5]}")
  for name, var in dst_flat.items():
    old, value = var[...], src_flat[name][...]
    if tuple(value.shape) != tuple(old.shape):
      raise DataError(f"init_model's {name} has shape {tuple(value.shape)}, expected "
                      f"{tuple(old.shape)}")
    new = jnp.array(jax.device_get(value), dtype=old.dtype, copy=True)
    if getattr(old, "sharding", None) is not None:
      new = jax.device_put(new, old.sharding)
    var[...] = new


def run_training_steps(model: RQVAE, train_step: Any, inputs: Any, *, cfg: Any, steps: int,
                       batch: int, k_steps: jax.Array, k_restart: jax.Array, name: str,
                       show_progress: bool) -> dict[str, Any]:
  """The step loop RQ-VAE and SID-v2 share: per-window code utilisation, dead-code restarts,
  the loss history; a non-finite loss is a DataError naming the step.

  `inputs(step) -> (x batch, extra args)` feeds `train_step(x, key, *extra)`, a
  `make_train_step` step bound to the model and optimizer, whose aux is (metrics, per-level
  code counts).
  """
  window = cfg.dead_code_restart_every or steps
  metrics_log: list[dict[str, jax.Array]] = []
  util_log, restart_log, window_end = [], [], []
  counts = None
  bar = tqdm(range(steps), desc=name.lower(), disable=not show_progress, leave=False)
  for step in bar:
    xb, extra = inputs(step)
    _, (metrics, step_counts) = train_step(xb, jax.random.fold_in(k_steps, step), *extra)
    metrics_log.append(metrics)
    counts = step_counts if counts is None else jax.tree.map(jnp.add, counts, step_counts)
    if show_progress and (step % 20 == 0 or step == steps - 1):
      bar.set_postfix(loss=f"{float(metrics['loss']):.4f}")
    if (step + 1) % window == 0 or step == steps - 1:
      util_log.append([float(jnp.mean(c > 0)) for c in counts])
      window_end.append(step + 1)
      if cfg.dead_code_restart_every and (step + 1) % window == 0 and step < steps - 1:
        restarted = _restart_dead_codes(model, xb, counts, cfg.dead_code_threshold,
                                        jax.random.fold_in(k_restart, step))
        restart_log.append(np.asarray(restarted).tolist())
      else:
        restart_log.append([0] * cfg.num_levels)
      counts = None
  bar.close()

  stacked = jax.device_get(jax.tree.map(lambda *v: jnp.stack(v), *metrics_log))
  history: dict[str, Any] = {k: np.asarray(v, np.float32) for k, v in stacked.items()}
  history.update(utilisation=np.asarray(util_log, np.float32),
                 restarted=np.asarray(restart_log, np.int32),
                 window_end=np.asarray(window_end, np.int32), steps=steps, batch_size=batch)
  if not np.isfinite(history["loss"]).all():
    raise DataError(f"{name} training diverged: non-finite loss at step "
                    f"{int(np.flatnonzero(~np.isfinite(history['loss']))[0])}")
  return history


def batch_plan(cfg: Any, n: int, mesh: jax.sharding.Mesh | None, *,
               kmeans_init: bool) -> tuple[int, Any, int, int]:
  """(batch, batch sharding or None, k-means init rows, steps) for `n` training rows.

  With a mesh the batch is rounded down to a multiple of the data-parallel size. Shared by
  RQ-VAE and SID-v2.
  """
  batch = min(cfg.batch_size, n)
  sharding = None
  if mesh is not None:
    dp = mesh_lib.data_parallel_size(mesh)
    batch = (batch // dp) * dp
    if batch == 0:
      raise ConfigError("batch_size", f"{min(cfg.batch_size, n)} examples per batch cannot be "
                        f"split over {dp} data-parallel devices")
    sharding = mesh_lib.batch_sharding(mesh, 2)
  init_size = min(cfg.kmeans_init_size or batch, n)
  if kmeans_init and init_size < max(cfg.codebook_sizes):
    raise DataError(f"k-means initialisation sees {init_size} rows but the largest codebook has "
                    f"{max(cfg.codebook_sizes)} codes: give more data or a larger batch_size / "
                    "kmeans_init_size")
  return batch, sharding, init_size, _num_steps(cfg, n, batch)


def train_rqvae(x: Any, config: RQVAEConfig, *, mesh: jax.sharding.Mesh | None = None,
                show_progress: bool = True,
                init_model: RQVAE | None = None) -> tuple[RQVAE, dict[str, Any]]:
  """Trains an RQ-VAE on content embeddings x.

  `init_model` warm-starts the training (a refit on a grown or changed catalog that keeps codes
  stable): the new model starts from a copy of its parameters (encoder, codebooks, decoder;
  `init_model` itself is not changed) and the k-means codebook initialisation is skipped. Its
  shapes (input_dim, hidden_dims, latent_dim, codebook_sizes) must be the config's (ConfigError
  naming the field otherwise); everything else comes from `config`, and batches, masks and
  restarts are still drawn from `config.seed`. The optimizer state starts fresh.

  Returns the model and its history: per step `loss`, `reconstruction`, `codebook`,
  `commitment` (float32 [steps]); per window of `dead_code_restart_every` steps (or one window
  over all steps when restarts are off) `window_end` (step), `utilisation` (float [windows, L]:
  share of each level's codes chosen in that window, before any restart) and `restarted`
  (int [windows, L]); and `steps`, `batch_size`.
  With a mesh, parameters are sharded by the logical-axis rules and each batch over the data
  axes (the batch is rounded down to a multiple of their size).
  Shape: x [n, d].
  """
  cfg = config
  if init_model is not None:
    _check_init_model(init_model, cfg)
  x = _check_input(x, cfg.input_dim)
  n = x.shape[0]
  kmeans_init = cfg.kmeans_init and init_model is None
  batch, sharding, init_size, steps = batch_plan(cfg, n, mesh, kmeans_init=kmeans_init)
  key = jax.random.key(cfg.seed)
  k_params, k_data, k_init, k_steps, k_restart = jax.random.split(key, 5)

  ctx = contextlib.ExitStack()
  if mesh is not None:
    ctx.enter_context(jax.set_mesh(mesh))
    ctx.enter_context(nnx.logical_axis_rules(LOGICAL_AXIS_RULES))
  with ctx:
    model = RQVAE(cfg, rngs=nnx.Rngs(params=k_params))
    batches = _Batches(n, batch, k_data)

    def put(rows: np.ndarray) -> jax.Array:
      xb = x[rows]
      return jax.device_put(xb, sharding) if sharding is not None else jnp.asarray(xb)

    if init_model is not None:
      _copy_params(init_model, model)
    elif cfg.kmeans_init:
      # The first batch (or more rows in the same shuffled order, see kmeans_init_size).
      init_rows = np.asarray(jax.random.permutation(jax.random.fold_in(k_data, 0), n))[:init_size]
      init_codebooks(model, x[init_rows], key=k_init, iters=cfg.kmeans_iters)
    opt = nnx.Optimizer(model, make_optimizer(cfg), wrt=nnx.Param)
    # Caches the graph traversal of (model, opt): ~10x less per-step overhead than nnx.jit alone.
    train_step = nnx.cached_partial(_train_step, model, opt)

    history = run_training_steps(
        model, train_step, lambda step: (put(batches.next()), ()), cfg=cfg, steps=steps,
        batch=batch, k_steps=k_steps, k_restart=k_restart, name="RQ-VAE",
        show_progress=show_progress)
  return model, history


# ---------------------------------------------------------------------------- inference


@nnx.jit
def _assign(model: RQVAE, x: jax.Array) -> jax.Array:
  codes, _, _ = model.quantize(model.encode(x))
  return codes


@nnx.jit
def _reconstruct(model: RQVAE, codes: jax.Array) -> jax.Array:
  return model.decode(model.lookup(codes))


def _chunked(fn, model: RQVAE, a: np.ndarray, chunk: int) -> np.ndarray:
  """Applies fn to fixed-size chunks of a (the last one padded), so one compile serves all."""
  n = a.shape[0]
  chunk = max(1, min(chunk, n))
  outs = []
  for start in range(0, n, chunk):
    part = a[start:start + chunk]
    m = part.shape[0]
    if m < chunk:
      part = np.concatenate([part, np.repeat(part[-1:], chunk - m, axis=0)])
    outs.append(np.asarray(fn(model, jnp.asarray(part)))[:m])
  return np.concatenate(outs)


def rqvae_assign(model: RQVAE, x: Any, *, chunk_size: int = 8192) -> np.ndarray:
  """Semantic IDs of x: the nearest codeword per level (deterministic).

  Shape: x [n, d] -> int32 [n, L].
  """
  x = _check_input(x, model.config.input_dim)
  return _chunked(_assign, model, x, chunk_size).astype(np.int32)


def rqvae_reconstruct(model: RQVAE, codes: Any, *, chunk_size: int = 8192) -> np.ndarray:
  """Decodes SIDs (or SID prefixes: the first c levels) back to the input space.

  Shape: codes int [n, c] with 1 <= c <= L -> float32 [n, d].
  """
  sizes = model.config.codebook_sizes
  codes = np.asarray(codes)
  if codes.ndim != 2 or not 1 <= codes.shape[1] <= len(sizes) or codes.shape[0] == 0:
    raise DataError(f"codes have shape {codes.shape}, expected [n, c] with n > 0 and "
                    f"1 <= c <= {len(sizes)}")
  if not np.issubdtype(codes.dtype, np.integer):
    raise DataError(f"codes have dtype {codes.dtype}, expected integers")
  for c in range(codes.shape[1]):
    bad = (codes[:, c] < 0) | (codes[:, c] >= sizes[c])
    if bad.any():
      raise DataError(f"codes of level {c} must lie in [0, {sizes[c]}), row "
                      f"{int(np.flatnonzero(bad)[0])} has {int(codes[bad, c][0])}")
  return _chunked(_reconstruct, model, codes.astype(np.int32), chunk_size).astype(np.float32)


# ----------------------------------------------------------------------------- save / load


def _flat_params(model: RQVAE) -> dict[str, np.ndarray]:
  state = nnx.state(model, nnx.Param)
  return {"/".join(str(p) for p in path): np.asarray(jax.device_get(v[...]))
          for path, v in nnx.to_flat_state(state)}


def save_params(model: nnx.Module, directory: str | os.PathLike, *, stage: str,
                config: Mapping[str, Any], counts: Mapping[str, Any]) -> None:
  """Writes `directory/{params.npz, manifest.json}`; the manifest (with the config) goes last,
  so a directory with a manifest is complete. Overwrites an earlier artifact. Shared by the
  RQ-VAE and SID-v2 artifacts."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  (directory / artifacts.MANIFEST).unlink(missing_ok=True)  # incomplete until written again
  params = _flat_params(model)
  buf = io.BytesIO()
  np.savez(buf, **params)
  artifacts.atomic_write_bytes(directory / PARAMS_FILE, buf.getvalue())
  artifacts.write_manifest(
      directory, stage=stage, config=dict(config),
      counts={**counts, "parameters": int(sum(v.size for v in params.values()))})


def load_params(model: nnx.Module, directory: str | os.PathLike) -> None:
  """Restores what `save_params` wrote into `model` (built from the manifest's config), bit
  for bit; names and shapes must match."""
  path = pathlib.Path(directory) / PARAMS_FILE
  try:
    with np.load(path, allow_pickle=False) as f:
      saved = {k: f[k] for k in f.files}
  except (OSError, ValueError) as e:
    raise DataError(f"unreadable parameters: {e}", path=path) from None
  flat = list(nnx.to_flat_state(nnx.state(model, nnx.Param)))
  names = ["/".join(str(p) for p in path_) for path_, _ in flat]
  if set(names) != set(saved):
    raise DataError(f"parameters do not match the config: missing "
                    f"{sorted(set(names) - set(saved))[:5]}, extra "
                    f"{sorted(set(saved) - set(names))[:5]}", path=path)
  for name, (_, var) in zip(names, flat):
    if saved[name].shape != tuple(var.shape):
      raise DataError(f"{name} has shape {saved[name].shape}, expected {tuple(var.shape)}",
                      path=path)
    var[...] = jnp.asarray(saved[name], var[...].dtype)


def save(model: RQVAE, config: RQVAEConfig | None, directory: str | os.PathLike) -> None:
  """Writes `directory/{params.npz, manifest.json}` (see `save_params`)."""
  config = model.config if config is None else config
  if config != model.config:
    raise ConfigError("config", "differs from the model's own config")
  save_params(model, directory, stage=STAGE, config=config.to_dict(),
              counts={"levels": config.num_levels,
                      "codebook_sizes": list(config.codebook_sizes)})


def load(directory: str | os.PathLike) -> tuple[RQVAE, RQVAEConfig]:
  """Reads what `save` wrote; the parameters are restored bit for bit."""
  directory = pathlib.Path(directory)
  manifest = artifacts.read_manifest(directory)
  if manifest.get("stage") != STAGE:
    raise DataError(f"not an RQ-VAE artifact (stage {manifest.get('stage')!r})",
                    path=directory / artifacts.MANIFEST)
  config = RQVAEConfig.from_dict(manifest.get("config") or {})
  model = RQVAE(config, rngs=nnx.Rngs(0))
  load_params(model, directory)
  return model, config
