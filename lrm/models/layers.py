"""Transformer building blocks shared by every model in lrm (pre-norm, Flax NNX).

Parameters are float32 and carry logical axis names (lrm/parallel/rules.py: vocab, embed,
heads, kv, mlp); built inside `with jax.set_mesh(mesh), nnx.logical_axis_rules(RULES):` they
are sharded when created, otherwise plain arrays. `dtype` is the compute dtype (bf16 on
accelerators): matmuls run in it, norms and softmax statistics stay float32.

Attention goes through `jax.nn.dot_product_attention`, so an accelerator uses its fused kernel
(`attention_impl="cudnn"` on NVIDIA GPUs with bf16); on CPU the XLA path is used.

Shape letters: b batch, t query length, s key length, d model width, h heads, k head dim,
m MLP width, v vocabulary.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable

import jax
import jax.numpy as jnp
from flax import nnx

DEFAULT_INIT = nnx.initializers.normal(0.02)
# Vocabulary tables get a multiple of this many rows, so the `vocab` axis divides any tensor
# or fsdp mesh size (a 2,787-token SID vocabulary cannot be split in 2); extra rows are
# never looked up or scored.
VOCAB_ROW_MULTIPLE = 128


def padded_rows(n: int) -> int:
  """`n` rounded up to a multiple of VOCAB_ROW_MULTIPLE."""
  return -(-int(n) // VOCAB_ROW_MULTIPLE) * VOCAB_ROW_MULTIPLE


def count_params(model: nnx.Module) -> int:
  """The number of trainable parameters (nnx.Param leaves) of a model."""
  return int(sum(math.prod(x.shape) for x in jax.tree_util.tree_leaves(nnx.state(model,
                                                                              nnx.Param))))


def param(init: Callable, names: tuple[str | None, ...]) -> Callable:
  """An initializer annotated with logical axis names (sharded only when a mesh is set)."""
  return nnx.with_partitioning(init, names)


def sharding_scope() -> contextlib.AbstractContextManager:
  """Annotated parameters are sharded eagerly only under a mesh; without one they stay plain."""
  if jax.sharding.get_abstract_mesh().empty:
    return nnx.use_eager_sharding(False)
  return contextlib.nullcontext()


def rms_norm(d: int, *, dtype: Any, rngs: nnx.Rngs) -> nnx.RMSNorm:
  return nnx.RMSNorm(d, epsilon=1e-6, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
                     scale_init=param(nnx.initializers.ones_init(), ("embed",)))


def embedding(num: int, d: int, *, names: tuple[str | None, str | None] = ("vocab", "embed"),
              dtype: Any, rngs: nnx.Rngs) -> nnx.Embed:
  return nnx.Embed(num, d, dtype=dtype, param_dtype=jnp.float32, rngs=rngs,
                   embedding_init=param(DEFAULT_INIT, names))


class Attention(nnx.Module):
  """Multi-head attention: queries from `x`, keys and values from `kv` (self-attention if None).

  q/k/v kernels are [d, h, k], the output kernel [h, k, d] (no biases, as in T5).
  """

  def __init__(self, d: int, num_heads: int, head_dim: int, *, dtype: Any,
               attention_impl: str | None, rngs: nnx.Rngs, dropout: float = 0.0):
    proj = lambda: nnx.LinearGeneral(
        d, (num_heads, head_dim), use_bias=False, dtype=dtype, param_dtype=jnp.float32,
        kernel_init=param(DEFAULT_INIT, ("embed", "heads", "kv")), rngs=rngs)
    self.query, self.key, self.value = proj(), proj(), proj()
    self.out = nnx.LinearGeneral(
        (num_heads, head_dim), d, axis=(-2, -1), use_bias=False, dtype=dtype,
        param_dtype=jnp.float32, kernel_init=param(DEFAULT_INIT, ("heads", "kv", "embed")),
        rngs=rngs)
    self.attention_impl = attention_impl
    # Dropout on the attention probabilities (RPG / GPT-2's attn_pdrop); None keeps the fused
    # kernel, which has no dropout, on every call.
    self.probs_dropout = nnx.Dropout(dropout, rngs=rngs) if dropout else None

  def __call__(self, x: jax.Array, kv: jax.Array | None = None, *,
               mask: jax.Array | None = None, is_causal: bool = False) -> jax.Array:
    """Shape: x [b, t, d], kv [b, s, d] or None, mask bool broadcastable to [b, h, t, s]
    (True = attend) -> [b, t, d]."""
    kv = x if kv is None else kv
    q, k, v = self.query(x), self.key(kv), self.value(kv)
    if self.probs_dropout is None or self.probs_dropout.deterministic:
      ctx = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal,
                                         implementation=self.attention_impl)
    else:
      ctx = attention_with_dropout(q, k, v, mask, is_causal, self.probs_dropout)
    return self.out(ctx)


def attention_with_dropout(q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array | None,
                           is_causal: bool, dropout: nnx.Dropout) -> jax.Array:
  """`jax.nn.dot_product_attention` written out, with dropout on the probabilities.

  Shape: q [b, t, h, k], k / v [b, s, h, k], mask bool broadcastable to [b, h, t, s]
  -> [b, t, h, k].
  """
  logits = jnp.einsum("bthk,bshk->bhts", q, k).astype(jnp.float32) * q.shape[-1] ** -0.5
  allowed = jnp.ones(logits.shape[-2:], bool) if mask is None else mask
  if is_causal:
    allowed = allowed & jnp.tril(jnp.ones(logits.shape[-2:], bool))
  probs = jax.nn.softmax(jnp.where(allowed, logits, jnp.finfo(jnp.float32).min), axis=-1)
  return jnp.einsum("bhts,bshk->bthk", dropout(probs).astype(v.dtype), v)


class MLP(nnx.Module):
  """d -> m -> d with an activation in between (ReLU as in T5 / TIGER, or GELU)."""

  def __init__(self, d: int, m: int, *, activation: str, dropout: float, dtype: Any,
               rngs: nnx.Rngs):
    self.up = nnx.Linear(d, m, use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                         kernel_init=param(DEFAULT_INIT, ("embed", "mlp")), rngs=rngs)
    self.down = nnx.Linear(m, d, use_bias=False, dtype=dtype, param_dtype=jnp.float32,
                           kernel_init=param(DEFAULT_INIT, ("mlp", "embed")), rngs=rngs)
    self.activation = {"relu": jax.nn.relu, "gelu": jax.nn.gelu}[activation]
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array) -> jax.Array:
    """Shape: [b, t, d] -> [b, t, d]."""
    return self.down(self.dropout(self.activation(self.up(x))))


class Block(nnx.Module):
  """Pre-norm transformer block: self-attention, optional cross-attention, MLP; residuals.

  x = x + drop(attn(norm(x))); [x = x + drop(cross(norm(x), memory))]; x = x + drop(mlp(norm(x)))
  """

  def __init__(self, d: int, num_heads: int, head_dim: int, mlp_dim: int, *, cross: bool,
               activation: str, dropout: float, dtype: Any, attention_impl: str | None,
               rngs: nnx.Rngs, attention_dropout: float = 0.0):
    attn = lambda: Attention(d, num_heads, head_dim, dtype=dtype,
                             attention_impl=attention_impl, rngs=rngs,
                             dropout=attention_dropout)
    self.self_norm = rms_norm(d, dtype=dtype, rngs=rngs)
    self.self_attention = attn()
    self.cross_norm = rms_norm(d, dtype=dtype, rngs=rngs) if cross else None
    self.cross_attention = attn() if cross else None
    self.mlp_norm = rms_norm(d, dtype=dtype, rngs=rngs)
    self.mlp = MLP(d, mlp_dim, activation=activation, dropout=dropout, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(dropout, rngs=rngs)

  def __call__(self, x: jax.Array, *, mask: jax.Array | None = None, is_causal: bool = False,
               memory: jax.Array | None = None,
               memory_mask: jax.Array | None = None) -> jax.Array:
    """Shape: x [b, t, d], mask [b, 1, t, t], memory [b', s, d], memory_mask [b', 1, 1, s]
    -> [b, t, d].

    `memory` may have fewer rows than `x` (b = b' * B: B beams per memory row, beam search):
    the beams' queries then attend to their row's memory as one longer query sequence, which
    is exact (queries are independent) and never repeats the memory per beam.
    """
    x = x + self.dropout(self.self_attention(self.self_norm(x), mask=mask, is_causal=is_causal))
    if self.cross_attention is not None:
      b, t, d = x.shape
      rows = memory.shape[0]
      q = self.cross_norm(x).reshape(rows, (b // rows) * t, d)
      ctx = self.cross_attention(q, memory, mask=memory_mask).reshape(b, t, d)
      x = x + self.dropout(ctx)
    return x + self.dropout(self.mlp(self.mlp_norm(x)))


def key_mask(valid: jax.Array) -> jax.Array:
  """A key-padding mask for attention. Shape: valid bool [b, s] -> [b, 1, 1, s]."""
  return valid[:, None, None, :]


def level_logits(hidden: jax.Array, table: jax.Array, start: int, size: int) -> jax.Array:
  """Logits over one SID level's tokens, tied to the input embedding rows [start, start+size).

  Scoring only the level's own codes is what makes the decoder's output a distribution over
  that level's codebook (a code token of another level can never be produced).

  Shape: hidden [..., d], table [v, d] -> [..., size] (float32).
  """
  rows = jax.lax.dynamic_slice_in_dim(table, start, size, axis=0).astype(hidden.dtype)
  return jnp.einsum("...d,kd->...k", hidden, rows).astype(jnp.float32)
