"""SASRec (Kang & McAuley, 2018): a causal transformer over item ids, the ID-based baseline.

Trained here with cross-entropy over all items (full softmax) rather than the paper's one
sampled negative per position: it is the stronger, now-standard recipe (gSASRec / eSASRec
papers), and it scores the whole catalog exactly as the evaluation does.

Inputs use lrm.tasks.id_sequences' encoding: catalog row + 1, 0 = padding, left-padded so the
most recent item is the last position. The output layer is tied to the item embedding (rows
1 .. num_items, so padding can never be predicted; the table is padded at the end to a multiple
of ROW_MULTIPLE rows for sharding).

Differences from the paper, each deliberate: pre-norm blocks with RMSNorm (lrm/models/layers.py,
shared with the generative models), no biases, GELU by default; positions are counted from the
END of the sequence (the most recent item is position 0), so a history's prediction does not
depend on how much left padding it carries or on the window length.

Shape letters: b batch, l length, d model width, v items (num_items).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lrm.core.config import dataclass_from_dict
from lrm.core.errors import ConfigError
from lrm.models.layers import (DEFAULT_INIT, Block, embedding, level_logits, param, rms_norm,
                               sharding_scope)

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_ACTIVATIONS = ("gelu", "relu")
_ATTENTION_IMPLS = (None, "xla", "cudnn")
# The item table's rows are rounded up to this so its vocab axis divides any tensor-parallel
# mesh axis; the extra rows are never looked up nor scored.
ROW_MULTIPLE = 128


@dataclasses.dataclass(frozen=True)
class SASRecConfig:
  """SASRec architecture; defaults are the paper's Amazon setting widened to d = 64."""
  num_items: int                   # catalog size; the embedding has num_items + 1 rows (0 = pad)
  max_length: int = 50             # L: longest input, and the positional table's size
  d_model: int = 64
  num_heads: int = 2
  head_dim: int = 32
  mlp_dim: int = 256
  num_layers: int = 2
  dropout: float = 0.2             # on embeddings, attention / MLP outputs (paper: 0.2-0.5)
  activation: str = "gelu"         # "gelu" or "relu" (the paper's)
  dtype: str = "float32"           # compute dtype: "float32" or "bfloat16"; params stay float32
  attention_impl: str | None = None  # jax.nn.dot_product_attention's implementation

  def __post_init__(self):
    for name in ("num_items", "max_length", "d_model", "num_heads", "head_dim", "mlp_dim",
                 "num_layers"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")
    if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
        or not 0 <= self.dropout < 1:
      raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout!r}")
    if self.activation not in _ACTIVATIONS:
      raise ConfigError("activation", f"must be one of {list(_ACTIVATIONS)}, "
                        f"got {self.activation!r}")
    if self.dtype not in _DTYPES:
      raise ConfigError("dtype", f"must be one of {sorted(_DTYPES)}, got {self.dtype!r}")
    if self.attention_impl not in _ATTENTION_IMPLS:
      raise ConfigError("attention_impl", f"must be one of {list(_ATTENTION_IMPLS)}, "
                        f"got {self.attention_impl!r}")

  @classmethod
  def from_dict(cls, d: Mapping[str, Any] | Any, where: str = "model") -> "SASRecConfig":
    """From a mapping or ConfigDict; errors name `where.field`, unknown keys included."""
    return dataclass_from_dict(cls, d, where, required=("num_items",))


def attention_mask(valid: jax.Array) -> jax.Array:
  """Causal mask that also hides padded keys; padded queries attend to padded keys only.

  A padded query row with no key at all would be a softmax over nothing: the XLA path returns
  a finite average, but fused kernels may give NaN, which then leaks into gradients. Letting
  padding see earlier padding (always at least itself) keeps every row non-empty, and no real
  position ever sees a padded one, so real outputs are unaffected.

  Shape: valid bool [b, l] -> bool [b, 1, l, l] (True = attend).
  """
  l = valid.shape[1]
  causal = jnp.tril(jnp.ones((l, l), bool))
  keys = valid[:, None, :] | ~valid[:, :, None]     # [b, t, s]
  return (causal[None] & keys)[:, None]


class SASRec(nnx.Module):
  """Item + positional embeddings, `num_layers` causal pre-norm blocks, a final RMSNorm."""

  def __init__(self, cfg: SASRecConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    dtype = _DTYPES[cfg.dtype]
    with sharding_scope():
      rows = -(-(cfg.num_items + 1) // ROW_MULTIPLE) * ROW_MULTIPLE
      self.item_embed = embedding(rows, cfg.d_model, dtype=dtype, rngs=rngs)
      self.position_embed = nnx.Embed(
          cfg.max_length, cfg.d_model, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
          embedding_init=param(DEFAULT_INIT, (None, "embed")))
      self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)
      self.blocks = nnx.List([
          Block(cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cross=False,
                activation=cfg.activation, dropout=cfg.dropout, dtype=dtype,
                attention_impl=cfg.attention_impl, rngs=rngs)
          for _ in range(cfg.num_layers)])
      self.final_norm = rms_norm(cfg.d_model, dtype=dtype, rngs=rngs)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Hidden states; position t summarises items up to t (the next item's query).

    Shape: inputs int [b, l] (l <= max_length, 0 = padding, left-padded) -> [b, l, d].
    """
    l = inputs.shape[1]
    if l > self.config.max_length:
      raise ConfigError("max_length", f"inputs have length {l} > {self.config.max_length}")
    valid = inputs > 0
    positions = jnp.arange(l - 1, -1, -1)[None]        # most recent item = position 0
    # Scaled by sqrt(d) as in the paper (and the Transformer), so items outweigh positions.
    x = self.item_embed(inputs) * self.config.d_model ** 0.5
    x = self.dropout(x + self.position_embed(positions))
    mask = attention_mask(valid)
    for block in self.blocks:
      x = block(x, mask=mask)
    return self.final_norm(x)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Scores of every item (tied to the embedding rows 1..; column j = catalog row j).

    Shape: hidden [..., d] -> float32 [..., v].
    """
    table = self.item_embed.embedding[...]
    return level_logits(hidden, table, 1, self.config.num_items)


def sasrec_loss(model: SASRec, batch: Mapping[str, jax.Array],
                max_targets: int | None = None) -> tuple[jax.Array, dict]:
  """Mean full-softmax cross-entropy over the positions that have a target.

  Most positions of short users are padding, and the [b, l, v] logits dominate the step's cost;
  `max_targets` (static; positional-or-keyword so `nnx.value_and_grad(sasrec_loss)` accepts
  the function as is) scores only the first `max_targets` target positions of the batch
  (row-major), a fixed-size gather. Positions beyond it are left out of this step's loss: pick
  it above the largest batch's count (aux "dropped_targets" says when it was not).

  Shape: batch["inputs"], batch["targets"] int [b, l] (row + 1; target 0 = no target).
  Returns (loss, {"loss", "accuracy" (top-1 over target positions), "num_targets",
  "dropped_targets"}).
  """
  targets = batch["targets"]
  hidden = model(batch["inputs"])                                      # [b, l, d]
  has_target = targets > 0
  total = has_target.sum()
  if max_targets is not None:
    (flat,) = jnp.nonzero(has_target.reshape(-1), size=max_targets, fill_value=0)
    kept = jnp.arange(max_targets) < total
    hidden = hidden.reshape(-1, hidden.shape[-1])[flat]                # [max_targets, d]
    targets = jnp.where(kept, targets.reshape(-1)[flat], 0)
    has_target = targets > 0
  logits = model.logits(hidden)                                        # [..., v]
  labels = jnp.maximum(targets - 1, 0)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
  weight = has_target.astype(jnp.float32)
  count = weight.sum()
  denom = jnp.maximum(count, 1.0)                    # a batch of padding only gives 0, not NaN
  loss = (ce * weight).sum() / denom
  correct = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
  accuracy = (correct * weight).sum() / denom
  return loss, {"loss": loss, "accuracy": accuracy, "num_targets": count,
                "dropped_targets": total - count}


def score_items(model: SASRec, inputs: jax.Array) -> jax.Array:
  """Scores of every item as the next one after each history (the last position's logits).

  For full ranking: `rank_full_scores(scores, catalog.item_ids, k)` (column j = catalog row j).

  Shape: inputs int [b, l] left-padded -> float32 [b, v].
  """
  return model.logits(model(inputs)[:, -1])
