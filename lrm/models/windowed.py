"""What the windowed next-item models (SASRec, RPG) share: their config checks, the causal
pre-norm trunk over left-padded windows, and the compaction of target positions.

Both read lrm.tasks.id_sequences' windows: catalog row + 1, 0 = padding, left-padded so the
most recent item is the last position. Positions are counted from the END of the window (the
most recent item is position 0), so a history's prediction depends neither on how much left
padding it carries nor on the window length.

Shape letters: b batch, l length, d model width, P target positions.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.layers import DEFAULT_INIT, Block, param, rms_norm

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
ACTIVATIONS = ("gelu", "relu")
ATTENTION_IMPLS = (None, "xla", "cudnn")
TRUNK_INTS = ("num_items", "max_length", "d_model", "num_heads", "head_dim", "mlp_dim",
              "num_layers")


def check_trunk_config(cfg: Any, ints: tuple[str, ...] = ()) -> None:
  """The trunk's fields (and `ints`, more positive integers); errors name the field.

  Dropout rates: `dropout` on the attention and MLP outputs (and the MLP's hidden layer),
  `embed_dropout` on the input (None: `dropout`), `attention_dropout` on the attention
  probabilities (RPG's recipe: 0 / .5 / .5).
  """
  for name in TRUNK_INTS + ints:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(name, f"must be a positive integer, got {value!r}")
  for name in ("dropout", "embed_dropout", "attention_dropout"):
    rate = getattr(cfg, name)
    if rate is None and name == "embed_dropout":
      continue
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
      raise ConfigError(name, f"must be in [0, 1), got {rate!r}")
  for name, allowed in (("activation", ACTIVATIONS), ("dtype", tuple(DTYPES)),
                        ("attention_impl", ATTENTION_IMPLS)):
    if getattr(cfg, name) not in allowed:
      raise ConfigError(name, f"must be one of {list(allowed)}, got {getattr(cfg, name)!r}")


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


class WindowedTrunk(nnx.Module):
  """Positions from the end, `num_layers` causal pre-norm blocks, a final RMSNorm.

  A base class rather than a sub-module, so the parameters keep their flat names
  (`position_embed`, `blocks`, `final_norm`) in checkpoints.
  """

  def init_trunk(self, cfg: Any, *, rngs: nnx.Rngs) -> None:
    """Call inside `sharding_scope()`, after the model's input embeddings."""
    dtype = DTYPES[cfg.dtype]
    self.position_embed = nnx.Embed(
        cfg.max_length, cfg.d_model, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
        embedding_init=param(DEFAULT_INIT, (None, "embed")))
    embed_dropout = cfg.dropout if cfg.embed_dropout is None else cfg.embed_dropout
    self.dropout = nnx.Dropout(embed_dropout, rngs=rngs)
    self.blocks = nnx.List([
        Block(cfg.d_model, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cross=False,
              activation=cfg.activation, dropout=cfg.dropout, dtype=dtype,
              attention_impl=cfg.attention_impl, rngs=rngs,
              attention_dropout=cfg.attention_dropout)
        for _ in range(cfg.num_layers)])
    self.final_norm = rms_norm(cfg.d_model, dtype=dtype, rngs=rngs)

  def check_window(self, inputs: jax.Array) -> None:
    if inputs.shape[1] > self.config.max_length:
      raise ConfigError("max_length", f"inputs have length {inputs.shape[1]} > "
                        f"{self.config.max_length}")

  def run_trunk(self, x: jax.Array, valid: jax.Array) -> jax.Array:
    """Shape: x [b, l, d] (item embeddings), valid bool [b, l] -> [b, l, d]."""
    positions = jnp.arange(x.shape[1] - 1, -1, -1)[None]     # most recent item = position 0
    x = self.dropout(x + self.position_embed(positions))
    mask = attention_mask(valid)
    for block in self.blocks:
      x = block(x, mask=mask)
    return self.final_norm(x)


def compact_targets(hidden: jax.Array, targets: jax.Array, max_targets: int | None
                    ) -> tuple[jax.Array, jax.Array, jax.Array]:
  """The first `max_targets` target positions of the batch (row-major), a fixed-size gather.

  Most positions of short users are padding, and the output layer dominates a step; positions
  beyond `max_targets` are left out of this step's loss (the caller logs how many).

  Shape: hidden [b, l, d], targets int [b, l] (0 = no target) -> (hidden [P, d],
  targets [P], total targets before the cap []); unchanged when max_targets is None.
  """
  total = (targets > 0).sum()
  if max_targets is None:
    return hidden, targets, total
  (flat,) = jnp.nonzero((targets > 0).reshape(-1), size=max_targets, fill_value=0)
  kept = jnp.arange(max_targets) < total
  hidden = hidden.reshape(-1, hidden.shape[-1])[flat]
  return hidden, jnp.where(kept, targets.reshape(-1)[flat], 0), total
