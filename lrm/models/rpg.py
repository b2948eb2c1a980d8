"""RPG (Hou et al., KDD 2025): a causal transformer over items that predicts every code of the
next item's (long) Semantic ID in parallel, learning at every position.

An item enters as the mean of its SID code embeddings; there is no item-ID table. The
transformer reads a user's window once (SASRec's windows, lrm/tasks/id_sequences.py) and at
every position one head per codebook predicts the next item's code in that codebook: a residual
block (x + silu(W x), W zero-initialised so each head starts as the identity), then cosine
logits against the codebook's own (tied) code embeddings divided by a temperature. The loss is
the per-codebook cross-entropy averaged over codebooks and target positions.

An item's score for ranking is the sum of its codes' log-probabilities: `score_items` ranks the
whole catalog exactly (one gather per codebook), `code_log_probs` gives the per-codebook
distributions a catalog-independent decoder (beam search over the code trie) reads.

Any SID table works (product-quantised codes with m codebooks, RQ codes with or without the
collision level): the code embeddings are [C, K, d] with K the largest codebook, and codes a
level does not have are masked out of its softmax. The table rides in the model as a
non-trainable `SIDCodes` variable (row 0 is padding), so checkpoints and decoders carry it.

Shape letters: b batch, l length, d model width, C codebooks (SID levels), K codes per
codebook (the largest), n items, P target positions.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.core.config import dataclass_from_dict
from lrm.core.errors import ConfigError
from lrm.models.layers import DEFAULT_INIT, Block, param, rms_norm, sharding_scope
from lrm.models.sasrec import attention_mask

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_ACTIVATIONS = ("gelu", "relu")
_ATTENTION_IMPLS = (None, "xla", "cudnn")
_INPUTS = ("mean",)
NEG_INF = -1e30   # finite, so a masked code's log-softmax stays finite in the gradient


class SIDCodes(nnx.Variable):
  """The SID table inside a model: int32 [n + 1, C], row 0 = padding. Never trained."""


@dataclasses.dataclass(frozen=True)
class RPGConfig:
  """RPG's architecture. RPG's published size is 2 layers at d 448; the CPU default is smaller."""
  num_items: int
  codebook_sizes: tuple[int, ...]  # codes per SID level, from the SID table
  max_length: int = 50             # L: longest input window, and the positional table's size
  d_model: int = 128
  num_heads: int = 4
  head_dim: int = 32
  mlp_dim: int = 512
  num_layers: int = 2
  dropout: float = 0.1             # on the input, attention / MLP outputs
  temperature: float = 0.03        # cosine logits / temperature (RPG: 0.03)
  activation: str = "gelu"
  dtype: str = "float32"
  attention_impl: str | None = None

  def __post_init__(self):
    for name in ("num_items", "max_length", "d_model", "num_heads", "head_dim", "mlp_dim",
                 "num_layers"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")
    sizes = tuple(self.codebook_sizes)
    if not sizes or any(isinstance(k, bool) or int(k) < 1 for k in sizes):
      raise ConfigError("codebook_sizes", f"must be positive integers, got {sizes!r}")
    object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in sizes))
    if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
        or not 0 <= self.dropout < 1:
      raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout!r}")
    if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
        or not self.temperature > 0:
      raise ConfigError("temperature", f"must be > 0, got {self.temperature!r}")
    if self.activation not in _ACTIVATIONS:
      raise ConfigError("activation", f"must be one of {list(_ACTIVATIONS)}, "
                        f"got {self.activation!r}")
    if self.dtype not in _DTYPES:
      raise ConfigError("dtype", f"must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
    if self.attention_impl not in _ATTENTION_IMPLS:
      raise ConfigError("attention_impl", f"must be one of {list(_ATTENTION_IMPLS)}, "
                        f"got {self.attention_impl!r}")

  @property
  def num_codebooks(self) -> int:
    return len(self.codebook_sizes)

  @property
  def max_codes(self) -> int:
    return max(self.codebook_sizes)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any] | Any, where: str = "model") -> "RPGConfig":
    """From a mapping or ConfigDict; errors name `where.field`, unknown keys included."""
    return dataclass_from_dict(cls, d, where, required=("num_items", "codebook_sizes"))


def padded_codes(codes: Any, codebook_sizes: Sequence[int]) -> np.ndarray:
  """The SID table as the model holds it: a padding row 0, then catalog rows.

  Shape: codes int [n, C] -> int32 [n + 1, C].
  """
  codes = np.asarray(codes)
  if codes.ndim != 2 or codes.shape[1] != len(codebook_sizes):
    raise ConfigError("codes", f"expected [items, {len(codebook_sizes)}] codes, "
                      f"got shape {codes.shape}")
  sizes = np.asarray(codebook_sizes)[None]
  if codes.size and (codes.min() < 0 or (codes >= sizes).any()):
    raise ConfigError("codes", "a code lies outside its codebook")
  return np.concatenate([np.zeros((1, codes.shape[1]), np.int32), codes.astype(np.int32)])


class RPG(nnx.Module):
  """Mean-of-codes input, `num_layers` causal pre-norm blocks, one residual head per codebook."""

  def __init__(self, cfg: RPGConfig, codes: Any, *, rngs: nnx.Rngs):
    """`codes`: the SID table in catalog order, int [num_items, C]."""
    self.config = cfg
    dtype = _DTYPES[cfg.dtype]
    table = padded_codes(codes, cfg.codebook_sizes)
    if len(table) != cfg.num_items + 1:
      raise ConfigError("num_items", f"{cfg.num_items} items but {len(table) - 1} SID rows")
    self.codes = SIDCodes(jnp.asarray(table))
    C, K, d = cfg.num_codebooks, cfg.max_codes, cfg.d_model
    with sharding_scope():
      self.code_embed = nnx.Param(param(DEFAULT_INIT, (None, "vocab", "embed"))(
          rngs.params(), (C, K, d), jnp.float32))
      self.position_embed = nnx.Embed(
          cfg.max_length, d, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
          embedding_init=param(DEFAULT_INIT, (None, "embed")))
      self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)
      self.blocks = nnx.List([
          Block(d, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cross=False,
                activation=cfg.activation, dropout=cfg.dropout, dtype=dtype,
                attention_impl=cfg.attention_impl, rngs=rngs)
          for _ in range(cfg.num_layers)])
      self.final_norm = rms_norm(d, dtype=dtype, rngs=rngs)
      # Zero-initialised: every head starts as the identity (RPG's ResBlock).
      self.head_kernel = nnx.Param(param(nnx.initializers.zeros_init(), (None, "embed", "mlp"))(
          rngs.params(), (C, d, d), jnp.float32))
      self.head_bias = nnx.Param(jnp.zeros((C, d), jnp.float32))

  def item_embeddings(self, rows: jax.Array) -> jax.Array:
    """Mean of each item's code embeddings. Shape: rows int [...] (catalog row + 1) -> [..., d]."""
    codes = self.codes[...][rows]                                     # [..., C]
    table = self.code_embed[...]
    level = jnp.arange(self.config.num_codebooks)
    return table[level, codes].mean(axis=-2)                          # [..., d]

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Hidden states; position t summarises items up to t (the next item's query).

    Shape: inputs int [b, l] (l <= max_length; catalog row + 1, 0 = padding, left-padded)
    -> [b, l, d].
    """
    cfg = self.config
    l = inputs.shape[1]
    if l > cfg.max_length:
      raise ConfigError("max_length", f"inputs have length {l} > {cfg.max_length}")
    valid = inputs > 0
    positions = jnp.arange(l - 1, -1, -1)[None]        # most recent item = position 0
    dtype = _DTYPES[cfg.dtype]
    x = self.item_embeddings(inputs).astype(dtype) * cfg.d_model ** 0.5
    x = jnp.where(valid[..., None], x, 0)
    x = self.dropout(x + self.position_embed(positions))
    mask = attention_mask(valid)
    for block in self.blocks:
      x = block(x, mask=mask)
    return self.final_norm(x)

  def code_logits(self, hidden: jax.Array) -> jax.Array:
    """Each codebook's logits for the next item: cosine(head_c(h), code) / temperature.

    Shape: hidden [..., d] -> float32 [..., C, K] (codes a level lacks: a large negative).
    """
    h = hidden.astype(jnp.float32)
    z = jnp.einsum("...d,cde->...ce", h, self.head_kernel[...]) + self.head_bias[...]
    states = h[..., None, :] + jax.nn.silu(z)                          # [..., C, d]
    states = states * jax.lax.rsqrt(jnp.sum(states * states, -1, keepdims=True) + 1e-12)
    table = self.code_embed[...]
    table = table * jax.lax.rsqrt(jnp.sum(table * table, -1, keepdims=True) + 1e-12)
    logits = jnp.einsum("...cd,ckd->...ck", states, table) / self.config.temperature
    sizes = self.config.codebook_sizes
    if min(sizes) == max(sizes):
      return logits
    has_code = jnp.arange(max(sizes))[None, :] < jnp.asarray(sizes)[:, None]   # [C, K]
    return jnp.where(has_code, logits, NEG_INF)

  def code_log_probs(self, hidden: jax.Array) -> jax.Array:
    """Shape: hidden [..., d] -> float32 [..., C, K], log-softmax within each codebook."""
    return jax.nn.log_softmax(self.code_logits(hidden), axis=-1)


def rpg_loss(model: RPG, batch: Mapping[str, jax.Array],
             max_targets: int | None = None) -> tuple[jax.Array, dict]:
  """Per-codebook cross-entropy, averaged over codebooks and every target position.

  `max_targets` (static) scores only the first `max_targets` target positions of the batch
  (row-major), as `sasrec_loss` does: most positions of short users are padding.

  Shape: batch["inputs"], batch["targets"] int [b, l] (catalog row + 1; target 0 = none).
  Returns (loss, {"loss", "code_accuracy" (top-1 per code), "item_accuracy" (all codes right),
  "num_targets", "dropped_targets"}).
  """
  targets = batch["targets"]
  hidden = model(batch["inputs"])                                      # [b, l, d]
  has_target = targets > 0
  total = has_target.sum()
  if max_targets is not None:
    (flat,) = jnp.nonzero(has_target.reshape(-1), size=max_targets, fill_value=0)
    kept = jnp.arange(max_targets) < total
    hidden = hidden.reshape(-1, hidden.shape[-1])[flat]                # [P, d]
    targets = jnp.where(kept, targets.reshape(-1)[flat], 0)
    has_target = targets > 0
  logits = model.code_logits(hidden)                                   # [..., C, K]
  labels = model.codes[...][targets]                                   # [..., C]
  picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  ce = (jax.nn.logsumexp(logits, axis=-1) - picked).mean(-1)
  weight = has_target.astype(jnp.float32)
  count = weight.sum()
  denom = jnp.maximum(count, 1.0)                    # a batch of padding only gives 0, not NaN
  loss = (ce * weight).sum() / denom
  # The target's logit is the largest (an argmax would cost a second pass over the logits).
  correct = jax.lax.stop_gradient(picked >= logits.max(axis=-1))       # [..., C]
  code_acc = (correct.mean(-1) * weight).sum() / denom
  item_acc = (correct.all(-1) * weight).sum() / denom
  return loss, {"loss": loss, "code_accuracy": code_acc, "item_accuracy": item_acc,
                "num_targets": count, "dropped_targets": total - count}


def last_log_probs(model: RPG, inputs: jax.Array) -> jax.Array:
  """Per-codebook log-probs of the item after each history (the last position).

  Shape: inputs int [b, l] left-padded -> float32 [b, C, K].
  """
  return model.code_log_probs(model(inputs)[:, -1])


def item_scores(log_probs: jax.Array, codes: jax.Array) -> jax.Array:
  """Every item's score: the sum of its codes' log-probs, one gather per codebook.

  Shape: log_probs [b, C, K], codes int [n, C] (catalog order) -> float32 [b, n].
  """
  total = jnp.zeros((log_probs.shape[0], codes.shape[0]), jnp.float32)
  for c in range(codes.shape[1]):
    total = total + jnp.take(log_probs[:, c], codes[:, c], axis=1)
  return total


def score_items(model: RPG, inputs: jax.Array) -> jax.Array:
  """Exact scores of every catalog item as the next one (column j = catalog row j).

  Shape: inputs int [b, l] left-padded -> float32 [b, n].
  """
  return item_scores(last_log_probs(model, inputs), model.codes[...][1:])
