"""The bilingual SID language model: one Llama / Qwen-style decoder-only transformer that reads
and writes both text tokens and item SID tokens (YouTube's LRM / PLUM).

Architecture (the Llama / Qwen2 / Qwen3 recipe, so a pretrained text LM loads into it exactly,
see lrm/models/hf_loader.py): token embedding, pre-norm blocks of RMSNorm -> grouped-query
attention with rotary positions (rotate-half, as Hugging Face) -> residual, RMSNorm -> SwiGLU
MLP -> residual, a final RMSNorm, an output head tied to the embedding or separate. No biases
except the optional q/k/v bias of Qwen2; optional per-head q/k RMSNorm of Qwen3. Parameters are
float32 with logical axis names (vocab, embed, heads, kv, mlp: lrm/parallel/rules.py); `dtype`
is the compute dtype (bf16 on accelerators), norms, rotary angles, softmax statistics and logits
stay float32.

Batches (from lrm/tasks, all [b, l]): `tokens` int32, `targets` int32, `loss_mask` float32,
`segment_ids` int32 (1..n per packed row, 0 = padding), `positions` int32 (restart at 0 per
packed example; rotary angles come from them, so packing needs nothing else), `prefix` bool
(True on an example's bidirectional prefix). Query i may attend to key j iff they are in the same
non-zero segment and (position_j <= position_i, or both are in the prefix).

Attention runs through `jax.nn.dot_product_attention` with that boolean mask (`implementation`
from the config: None/"xla" materialise the scores, right on any backend; "cudnn" runs the
fused GPU kernel, which folds the mask into an additive bias).

Decoding: `init_cache` / `decode_step` is a key/value cache (prompt prefill, then one token at a
time). Text comes from `greedy_generate`: a scan over the cache, optionally under a token mask
(SID -> text). SIDs come from constrained beam search over the trie: `SIDDecoder` wraps an LM in
the beam interface of lrm/decode/beam.py and lrm/decode/generative.py (`init_decode` /
`decode_step`, as lrm/models/decoder_only.py): the prompt runs once per user and its
keys/values are the beams' shared context; each level reruns only the beam's at most L SID
tokens; level c's logits are over level c's codes only.

Shape letters: b batch, l / t query length, s key length (cache slots), d model width, h query
heads, g key/value heads, r = h / g queries per kv head, k head dim (in attention) or codes of a
level (in SID logits), m MLP width, v vocabulary, L SID levels, B beams.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.layers import param, sharding_scope
from lrm.parallel.rules import sharding_context

DTYPES = ("float32", "bfloat16")
ATTENTION_IMPLS = (None, "xla", "cudnn")
BATCH_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions", "prefix")


# -- configuration ---------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class LMConfig:
  """Architecture of the LM (fields settable as `model.<field>` in configs).

  `vocab_size` is the joint vocabulary's size (text + specials + SID tokens, padded by the vocab
  side to a multiple of 128 so the `vocab` axis shards); `sid_start` and `codebook_sizes` say
  where the SID tokens are (contiguous, level by level) and are needed only for SID decoding.
  """
  vocab_size: int
  d_model: int = 256
  num_layers: int = 4
  num_heads: int = 4
  num_kv_heads: int = 4               # grouped-query attention: num_heads % num_kv_heads == 0
  head_dim: int = 64
  mlp_dim: int = 1024                 # SwiGLU hidden width
  rope_theta: float = 10000.0
  norm_eps: float = 1e-6
  tie_embeddings: bool = True
  qkv_bias: bool = False              # Qwen2 checkpoints have q/k/v biases
  qk_norm: bool = False               # Qwen3's per-head RMSNorm of queries and keys
  init_std: float = 0.02
  dtype: str = "float32"              # compute dtype; parameters stay float32
  attention_impl: str | None = None   # None / "xla": materialised scores; "cudnn": fused GPU
  remat: bool = False                 # recompute each block in the backward pass (memory)
  # Training-only dropout on the input embeddings and on each block's attention and MLP
  # outputs (0 = off, and then the model holds no RNG stream); `model.eval()` turns it off.
  dropout: float = 0.0
  sid_start: int = 0                  # first SID token id
  codebook_sizes: tuple[int, ...] = ()  # codes per SID level; () = no SID decoding

  def __post_init__(self):
    for name in ("vocab_size", "d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim",
                 "mlp_dim"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"model.{name}", f"must be a positive integer, got {value!r}")
    if self.num_heads % self.num_kv_heads:
      raise ConfigError("model.num_kv_heads", f"{self.num_kv_heads} does not divide "
                        f"num_heads={self.num_heads}")
    if self.head_dim % 2:
      raise ConfigError("model.head_dim", f"rotary positions need an even head_dim, got "
                        f"{self.head_dim}")
    if not self.rope_theta > 0:
      raise ConfigError("model.rope_theta", f"must be > 0, got {self.rope_theta}")
    if not 0 < self.norm_eps < 1:
      raise ConfigError("model.norm_eps", f"must lie in (0, 1), got {self.norm_eps}")
    if not self.init_std > 0:
      raise ConfigError("model.init_std", f"must be > 0, got {self.init_std}")
    if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) \
        or not 0 <= self.dropout < 1:
      raise ConfigError("model.dropout", f"must lie in [0, 1), got {self.dropout!r}")
    if self.dtype not in DTYPES:
      raise ConfigError("model.dtype", f"'{self.dtype}' is not one of {DTYPES}")
    if self.attention_impl not in ATTENTION_IMPLS:
      raise ConfigError("model.attention_impl", f"'{self.attention_impl}' is not one of "
                        f"{ATTENTION_IMPLS}")
    object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in self.codebook_sizes))
    if any(k < 1 for k in self.codebook_sizes):
      raise ConfigError("model.codebook_sizes", f"need positive sizes, got {self.codebook_sizes}")
    if self.sid_start < 0:
      raise ConfigError("model.sid_start", f"must be >= 0, got {self.sid_start}")
    if self.sid_start + sum(self.codebook_sizes) > self.vocab_size:
      raise ConfigError("model.vocab_size", f"{self.vocab_size} rows cannot hold the SID tokens "
                        f"[{self.sid_start}, {self.sid_start + sum(self.codebook_sizes)})")

  @property
  def num_levels(self) -> int:
    return len(self.codebook_sizes)

  @property
  def level_offsets(self) -> tuple[int, ...]:
    """The token id of code 0 of every SID level."""
    out, start = [], self.sid_start
    for k in self.codebook_sizes:
      out.append(start)
      start += k
    return tuple(out)


# Named sizes (Llama-style widths, head_dim 64, GQA). Parameters at vocab 32,768, tied
# (`count_params`): 10m 14.3M (5.9M without the table), 100m 101M, 300m 317M, 1b 1.04B.
LM_SIZES: dict[str, dict[str, Any]] = {
    "10m": dict(d_model=256, num_layers=6, num_heads=4, num_kv_heads=2, head_dim=64,
                mlp_dim=1024),
    "100m": dict(d_model=768, num_layers=12, num_heads=12, num_kv_heads=4, head_dim=64,
                 mlp_dim=2048),
    "300m": dict(d_model=1024, num_layers=24, num_heads=16, num_kv_heads=8, head_dim=64,
                 mlp_dim=2816),
    "1b": dict(d_model=2048, num_layers=16, num_heads=32, num_kv_heads=8, head_dim=64,
               mlp_dim=8192),
}


def lm_config(size: str, vocab_size: int, **overrides: Any) -> LMConfig:
  """A named size (`LM_SIZES`) for a vocabulary, with any field overridden."""
  if size not in LM_SIZES:
    raise ConfigError("model.size", f"'{size}' is not one of {sorted(LM_SIZES)}")
  return LMConfig(vocab_size=vocab_size, **{**LM_SIZES[size], **overrides})


def count_params(cfg: LMConfig) -> dict[str, int]:
  """Parameter counts: `total`, `embedding` (the input table), `head` (the output matrix when
  untied, else 0), `non_embedding` (everything else: blocks and the final norm)."""
  d, h, g, k, m = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  attention = d * h * k * 2 + d * g * k * 2
  if cfg.qkv_bias:
    attention += (h + 2 * g) * k
  if cfg.qk_norm:
    attention += 2 * k
  block = attention + 3 * d * m + 2 * d
  embedding = cfg.vocab_size * d
  head = 0 if cfg.tie_embeddings else cfg.vocab_size * d
  non_embedding = cfg.num_layers * block + d
  return {"total": embedding + head + non_embedding, "embedding": embedding, "head": head,
          "non_embedding": non_embedding}


def flops_per_token(cfg: LMConfig, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward) for MFU: 6 x the parameters used in matmuls
  (blocks + the output head; the input lookup is not a matmul) plus the attention term
  12 x layers x heads x head_dim x seq_len (PaLM's, scores and weighted values, full square
  counted as PaLM does)."""
  counts = count_params(cfg)
  matmul = counts["non_embedding"] + cfg.vocab_size * cfg.d_model
  attention = 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * int(seq_len)
  return 6.0 * matmul + attention


# -- masks and rotary positions --------------------------------------------------------------

def attention_mask(segment_ids: jax.Array, positions: jax.Array, prefix: jax.Array) -> jax.Array:
  """Who may attend to whom in a packed batch: same non-zero segment, and causal by position
  unless query and key are both in the prefix.

  A padding query (segment 0) sees only itself, so no row of the mask is empty (its output is
  never scored).

  Shape: segment_ids int32 [b, l], positions int32 [b, l], prefix bool [b, l]
    -> bool [b, 1, l, l] (query, key; True = attend).
  """
  same = (segment_ids[:, :, None] == segment_ids[:, None, :]) & (segment_ids[:, None, :] != 0)
  causal = positions[:, None, :] <= positions[:, :, None]
  both_prefix = prefix[:, :, None] & prefix[:, None, :]
  mask = same & (causal | both_prefix)
  l = segment_ids.shape[1]
  return (mask | jnp.eye(l, dtype=bool)[None])[:, None]


def rope_angles(positions: jax.Array, head_dim: int, theta: float) -> tuple[jax.Array, jax.Array]:
  """cos and sin of the rotary angles in Hugging Face's layout (frequencies repeated twice).

  Shape: positions int [b, t] -> (float32 [b, t, 1, k], float32 [b, t, 1, k]).
  """
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles = positions.astype(jnp.float32)[..., None] * inv_freq                    # [b, t, k/2]
  angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
  return jnp.cos(angles), jnp.sin(angles)


def apply_rope(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
  """Rotary position embedding, rotate-half convention (HF Llama's `apply_rotary_pos_emb`):
  x * cos + rotate_half(x) * sin with rotate_half(x) = [-x2, x1], computed in float32.

  Shape: x [b, t, n, k], positions int [b, t] -> [b, t, n, k] (x's dtype).
  """
  k = x.shape[-1]
  cos, sin = rope_angles(positions, k, theta)
  x32 = x.astype(jnp.float32)
  rotated = jnp.concatenate([-x32[..., k // 2:], x32[..., :k // 2]], axis=-1)
  return (x32 * cos + rotated * sin).astype(x.dtype)


# -- modules ---------------------------------------------------------------------------------

class RMSNorm(nnx.Module):
  """x / sqrt(mean(x^2) + eps) * scale, statistics in float32 (as HF's LlamaRMSNorm)."""

  def __init__(self, d: int, eps: float, *, names: tuple[str | None, ...], dtype: Any,
               rngs: nnx.Rngs):
    self.scale = nnx.Param(param(nnx.initializers.ones_init(), names)(
        rngs.params(), (d,), jnp.float32))
    self.eps = eps
    self.dtype = dtype

  def __call__(self, x: jax.Array) -> jax.Array:
    """Shape: [..., d] -> [..., d] (compute dtype)."""
    x32 = x.astype(jnp.float32)
    y = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    return (y * self.scale[...]).astype(self.dtype)


class GQAttention(nnx.Module):
  """Grouped-query attention's projections: q [d, h, k], k / v [d, g, k], out [h, k, d]."""

  def __init__(self, cfg: LMConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.dtype)
    init = nnx.initializers.normal(cfg.init_std)

    def proj(heads: int) -> nnx.LinearGeneral:
      return nnx.LinearGeneral(
          cfg.d_model, (heads, cfg.head_dim), use_bias=cfg.qkv_bias, dtype=dtype,
          param_dtype=jnp.float32, kernel_init=param(init, ("embed", "heads", "kv")),
          bias_init=param(nnx.initializers.zeros_init(), ("heads", "kv")), rngs=rngs)

    self.query = proj(cfg.num_heads)
    self.key = proj(cfg.num_kv_heads)
    self.value = proj(cfg.num_kv_heads)
    self.out = nnx.LinearGeneral(
        (cfg.num_heads, cfg.head_dim), cfg.d_model, axis=(-2, -1), use_bias=False, dtype=dtype,
        param_dtype=jnp.float32, kernel_init=param(init, ("heads", "kv", "embed")), rngs=rngs)
    norm = lambda: RMSNorm(cfg.head_dim, cfg.norm_eps, names=("kv",), dtype=dtype, rngs=rngs)
    self.query_norm = norm() if cfg.qk_norm else None
    self.key_norm = norm() if cfg.qk_norm else None
    self.theta = cfg.rope_theta

  def project(self, x: jax.Array, positions: jax.Array
              ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Rotated queries and keys, and values.

    Shape: x [b, t, d] (normed), positions [b, t] -> (q [b, t, h, k], k [b, t, g, k],
      v [b, t, g, k]).
    """
    q, k, v = self.query(x), self.key(x), self.value(x)
    if self.query_norm is not None:
      q, k = self.query_norm(q), self.key_norm(k)
    return apply_rope(q, positions, self.theta), apply_rope(k, positions, self.theta), v


class SwiGLU(nnx.Module):
  """down(silu(gate(x)) * up(x)): d -> m -> d, no biases."""

  def __init__(self, cfg: LMConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.dtype)
    init = nnx.initializers.normal(cfg.init_std)
    linear = lambda a, b, names: nnx.Linear(a, b, use_bias=False, dtype=dtype,
                                            param_dtype=jnp.float32,
                                            kernel_init=param(init, names), rngs=rngs)
    self.gate = linear(cfg.d_model, cfg.mlp_dim, ("embed", "mlp"))
    self.up = linear(cfg.d_model, cfg.mlp_dim, ("embed", "mlp"))
    self.down = linear(cfg.mlp_dim, cfg.d_model, ("mlp", "embed"))

  def __call__(self, x: jax.Array) -> jax.Array:
    """Shape: [b, t, d] -> [b, t, d]."""
    return self.down(jax.nn.silu(self.gate(x)) * self.up(x))


class LMBlock(nnx.Module):
  """x = x + attn(norm(x)); x = x + mlp(norm(x))."""

  def __init__(self, cfg: LMConfig, *, rngs: nnx.Rngs):
    dtype = jnp.dtype(cfg.dtype)
    self.attention_norm = RMSNorm(cfg.d_model, cfg.norm_eps, names=("embed",), dtype=dtype,
                                  rngs=rngs)
    self.attention = GQAttention(cfg, rngs=rngs)
    self.mlp_norm = RMSNorm(cfg.d_model, cfg.norm_eps, names=("embed",), dtype=dtype, rngs=rngs)
    self.mlp = SwiGLU(cfg, rngs=rngs)
    self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs) if cfg.dropout > 0 else None

  def residual(self, y: jax.Array) -> jax.Array:
    """A sub-layer's output as added to the residual stream (dropped out when training)."""
    return y if self.dropout is None else self.dropout(y)

  def __call__(self, x: jax.Array, positions: jax.Array, mask: jax.Array, *,
               implementation: str | None, cache: tuple[jax.Array, jax.Array] | None = None,
               index: jax.Array | None = None
               ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """One block; with `cache` the new keys/values are written at slots [index, index + t)
    and the queries attend to all cache slots (as `mask` allows).

    Shape: x [b, t, d], positions [b, t], mask bool [b, 1, t, s], cache ([b, s, g, k],
      [b, s, g, k]) or None (then s = t) -> (x [b, t, d], (keys [b, s, g, k], values)).
    """
    q, k, v = self.attention.project(self.attention_norm(x), positions)
    if cache is not None:
      k = jax.lax.dynamic_update_slice_in_dim(cache[0], k.astype(cache[0].dtype), index, axis=1)
      v = jax.lax.dynamic_update_slice_in_dim(cache[1], v.astype(cache[1].dtype), index, axis=1)
    ctx = jax.nn.dot_product_attention(q, k, v, mask=mask, implementation=implementation)
    x = x + self.residual(self.attention.out(ctx))
    return x + self.residual(self.mlp(self.mlp_norm(x))), (k, v)


def _run_block(block: LMBlock, x, positions, mask, implementation):
  return block(x, positions, mask, implementation=implementation)[0]


_run_block_remat = nnx.remat(_run_block, static_argnums=(4,))


class KVCache(NamedTuple):
  """Keys/values of every layer for `s` slots per row, filled left to right.

  Attributes:
    keys, values: per layer [b, s, g, k] (compute dtype).
    valid: bool [b, s], slots holding a real token (prompt padding stays False).
    prefix: bool [b, s], slots in the bidirectional prefix.
    length: int32 [], slots used so far (the same for every row).
    next_position: int32 [b], the position the row's next real token gets.
  """
  keys: tuple[jax.Array, ...]
  values: tuple[jax.Array, ...]
  valid: jax.Array
  prefix: jax.Array
  length: jax.Array
  next_position: jax.Array


def lm_rngs(seed: int) -> nnx.Rngs:
  """The streams an LM is built with: `params` for the weights, `dropout` for training masks
  (the trainer reseeds it per step, so a resumed run draws the same masks)."""
  return nnx.Rngs(params=seed, dropout=seed + 1)


class LM(nnx.Module):
  """The decoder-only LM over the joint text + SID vocabulary."""

  def __init__(self, cfg: LMConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    dtype = jnp.dtype(cfg.dtype)
    init = nnx.initializers.normal(cfg.init_std)
    with sharding_scope():
      self.embed = nnx.Embed(cfg.vocab_size, cfg.d_model, dtype=dtype, param_dtype=jnp.float32,
                             embedding_init=param(init, ("vocab", "embed")), rngs=rngs)
      self.layers = nnx.List([LMBlock(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
      self.final_norm = RMSNorm(cfg.d_model, cfg.norm_eps, names=("embed",), dtype=dtype,
                                rngs=rngs)
      self.lm_head = None if cfg.tie_embeddings else nnx.Param(
          param(init, ("embed", "vocab"))(rngs.params(), (cfg.d_model, cfg.vocab_size),
                                          jnp.float32))
      self.embed_dropout = nnx.Dropout(cfg.dropout, rngs=rngs) if cfg.dropout > 0 else None

  # -- full forward ---------------------------------------------------------------------------

  def hidden(self, tokens: jax.Array, *, segment_ids: jax.Array | None = None,
             positions: jax.Array | None = None, prefix: jax.Array | None = None) -> jax.Array:
    """The final-normed hidden states. Defaults: one segment per row, positions 0..l-1, no
    prefix (plain causal LM).

    Shape: tokens int32 [b, l], segment_ids int32 [b, l], positions int32 [b, l], prefix bool
      [b, l] -> [b, l, d] (compute dtype).
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim != 2:
      raise ValueError(f"tokens must be [b, l], got shape {tokens.shape}")
    b, l = tokens.shape
    segment_ids = jnp.ones((b, l), jnp.int32) if segment_ids is None else segment_ids
    positions = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l)) \
        if positions is None else positions
    prefix = jnp.zeros((b, l), bool) if prefix is None else prefix
    for name, x in (("segment_ids", segment_ids), ("positions", positions), ("prefix", prefix)):
      if tuple(x.shape) != (b, l):
        raise ValueError(f"{name} has shape {tuple(x.shape)}, tokens {(b, l)}")
    mask = attention_mask(segment_ids, positions, prefix.astype(bool))
    impl = self.config.attention_impl
    x = self.embed(tokens.astype(jnp.int32))
    if self.embed_dropout is not None:
      x = self.embed_dropout(x)
    for block in self.layers:
      if self.config.remat:
        x = _run_block_remat(block, x, positions, mask, impl)
      else:
        x = _run_block(block, x, positions, mask, impl)
    return self.final_norm(x)

  def logits(self, hidden: jax.Array) -> jax.Array:
    """Output logits over the whole vocabulary. Shape: [..., d] -> float32 [..., v]."""
    return self.row_logits(hidden, 0, self.config.vocab_size)

  def row_logits(self, hidden: jax.Array, start: int, size: int) -> jax.Array:
    """Logits of the tokens [start, start + size) only (a SID level's codes).

    Shape: hidden [..., d] -> float32 [..., size].
    """
    if self.lm_head is None:
      rows = jax.lax.dynamic_slice_in_dim(self.embed.embedding[...], start, size, axis=0)
      return jnp.einsum("...d,vd->...v", hidden, rows.astype(hidden.dtype),
                        preferred_element_type=jnp.float32)
    cols = jax.lax.dynamic_slice_in_dim(self.lm_head[...], start, size, axis=1)
    return jnp.einsum("...d,dv->...v", hidden, cols.astype(hidden.dtype),
                      preferred_element_type=jnp.float32)

  def __call__(self, tokens: jax.Array, *, segment_ids: jax.Array | None = None,
               positions: jax.Array | None = None, prefix: jax.Array | None = None) -> jax.Array:
    """Next-token logits. Shape: [b, l] inputs (see `hidden`) -> float32 [b, l, v]."""
    return self.logits(self.hidden(tokens, segment_ids=segment_ids, positions=positions,
                                   prefix=prefix))

  # -- key/value cache ------------------------------------------------------------------------

  def init_cache(self, batch_size: int, max_length: int) -> KVCache:
    """An empty cache of `max_length` slots per row."""
    cfg = self.config
    shape = (batch_size, max_length, cfg.num_kv_heads, cfg.head_dim)
    zeros = lambda: tuple(jnp.zeros(shape, jnp.dtype(cfg.dtype)) for _ in range(cfg.num_layers))
    return KVCache(keys=zeros(), values=zeros(), valid=jnp.zeros((batch_size, max_length), bool),
                   prefix=jnp.zeros((batch_size, max_length), bool),
                   length=jnp.zeros((), jnp.int32),
                   next_position=jnp.zeros((batch_size,), jnp.int32))

  def cached_hidden(self, tokens: jax.Array, cache: KVCache, *, valid: jax.Array | None = None,
                    prefix: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
    """Runs `t` new tokens per row through the model against the cache and appends them.

    `valid` marks real tokens (False: padding, e.g. a left-padded prompt; such slots are never
    attended to and take no position). `prefix` marks bidirectional-prefix tokens; they see
    every prefix token of the same call, so a prefix must arrive in one call (the prompt).

    Shape: tokens int32 [b, t], valid / prefix bool [b, t] -> (hidden [b, t, d], cache).
    """
    tokens = jnp.asarray(tokens, jnp.int32)
    b, t = tokens.shape
    s = cache.valid.shape[1]
    if cache.valid.shape[0] != b:
      raise ValueError(f"tokens have {b} rows, the cache {cache.valid.shape[0]}")
    if not isinstance(cache.length, jax.core.Tracer) and int(cache.length) + t > s:
      raise ValueError(f"cache holds {s} slots, {int(cache.length)} used; {t} more do not fit")
    valid = jnp.ones((b, t), bool) if valid is None else jnp.asarray(valid, bool)
    prefix = jnp.zeros((b, t), bool) if prefix is None else jnp.asarray(prefix, bool)
    index = cache.length
    positions = cache.next_position[:, None] + jnp.cumsum(valid, axis=1, dtype=jnp.int32) - 1
    positions = jnp.maximum(positions, 0)
    all_valid = jax.lax.dynamic_update_slice_in_dim(cache.valid, valid, index, axis=1)
    all_prefix = jax.lax.dynamic_update_slice_in_dim(cache.prefix, prefix & valid, index, axis=1)
    query_slot = index + jnp.arange(t)
    key_slot = jnp.arange(s)
    # Cache slots are filled in position order, so causal by slot is causal by position.
    visible = ((key_slot[None, None, :] <= query_slot[None, :, None])
               | (all_prefix[:, None, :] & prefix[:, :, None]))
    mask = (visible & all_valid[:, None, :]) | (key_slot[None, None, :]
                                                == query_slot[None, :, None])
    mask = mask[:, None]                                                       # [b, 1, t, s]
    x = self.embed(tokens)
    keys, values = [], []
    for block, k, v in zip(self.layers, cache.keys, cache.values):
      # Decoding runs the materialised XLA path: fused kernels gain nothing for t = 1.
      x, (k, v) = block(x, positions, mask, implementation=None, cache=(k, v), index=index)
      keys.append(k)
      values.append(v)
    new = KVCache(keys=tuple(keys), values=tuple(values), valid=all_valid, prefix=all_prefix,
                  length=index + t,
                  next_position=cache.next_position + valid.sum(axis=1, dtype=jnp.int32))
    return self.final_norm(x), new

  def decode_step(self, tokens: jax.Array, cache: KVCache, *, valid: jax.Array | None = None,
                  prefix: jax.Array | None = None) -> tuple[jax.Array, KVCache]:
    """Logits of the next token after each of the `t` new tokens, and the grown cache.

    Shape: tokens int32 [b, t] (t = prompt length for prefill, 1 per generated token)
      -> (float32 [b, t, v], cache).
    """
    hidden, cache = self.cached_hidden(tokens, cache, valid=valid, prefix=prefix)
    return self.logits(hidden), cache


def lm_from_params(cfg: LMConfig, params: Mapping[str, Any],
                   mesh: jax.sharding.Mesh | None = None) -> LM:
  """An LM holding `params` (a pure dict as `nnx.to_pure_dict(nnx.state(model))` gives, any
  array leaves) as float32; with a mesh each parameter is placed by its logical axis names
  (lrm/parallel/rules.py), as a model built under `sharding_context(mesh)` would be.

  No random initialisation runs (the structure comes from `nnx.eval_shape`), so loading a
  large checkpoint costs only the copy.
  """
  with sharding_context(mesh):
    abstract = nnx.eval_shape(lambda: LM(cfg, rngs=nnx.Rngs(0)))
  graphdef, state = nnx.split(abstract)
  shapes = nnx.to_pure_dict(state)

  def place(path, spec, value):
    value = jnp.asarray(value, jnp.float32)
    if tuple(value.shape) != tuple(spec.shape):
      name = ".".join(str(getattr(k, "key", k)) for k in path)
      raise ValueError(f"parameter {name} has shape {tuple(value.shape)}, the config "
                       f"implies {tuple(spec.shape)}")
    sharding = getattr(spec, "sharding", None)
    if mesh is not None and isinstance(sharding, jax.sharding.NamedSharding):
      return jax.device_put(value, jax.sharding.NamedSharding(mesh, sharding.spec))
    return value

  values = jax.tree_util.tree_map_with_path(place, shapes, dict(params))
  nnx.replace_by_pure_dict(state, values)
  return nnx.merge(graphdef, state)


def _last_real(hidden: jax.Array, valid: jax.Array) -> jax.Array:
  """Each row's hidden state at its last real token (left or right padding).

  Shape: hidden [b, t, d], valid bool [b, t] -> [b, d].
  """
  t = valid.shape[1]
  last = t - 1 - jnp.argmax(jnp.asarray(valid, bool)[:, ::-1], axis=1)
  return jnp.take_along_axis(hidden, last[:, None, None], axis=1)[:, 0]


def greedy_generate(model: LM, prompt: jax.Array, prompt_valid: jax.Array, num_tokens: int, *,
                    prompt_prefix: jax.Array | None = None,
                    allowed: jax.Array | None = None) -> jax.Array:
  """Greedy continuation of padded prompts with the key/value cache: one prefill, then a
  `lax.scan` of one-token steps, so it traces to one loop whatever `num_tokens` is.

  The first token continues each row's last real prompt token (left padding: the last slot).
  `allowed` restricts what may be generated (SID -> text allows text, field markers and eos);
  the argmax runs over the allowed tokens only. Pure in arrays: call it under `jax.jit` /
  `nnx.jit` (lrm/jobs/lm/metrics.py `greedy_text` jits it once per architecture and length).

  Shape: prompt int32 [b, P], prompt_valid bool [b, P], prompt_prefix bool [b, P] or None,
    allowed bool [v] or None -> int32 [b, num_tokens].
  """
  if num_tokens < 1:
    raise ValueError(f"num_tokens must be >= 1, got {num_tokens}")
  prompt = jnp.asarray(prompt, jnp.int32)
  b, P = prompt.shape

  def pick(hidden):                                                      # [b, d] -> [b]
    logits = model.logits(hidden)
    if allowed is not None:
      logits = jnp.where(allowed, logits, -jnp.inf)
    return jnp.argmax(logits, axis=-1).astype(jnp.int32)

  # The last token is never fed back, so the cache needs P + num_tokens - 1 slots.
  cache = model.init_cache(b, P + num_tokens - 1)
  hidden, cache = model.cached_hidden(prompt, cache, valid=prompt_valid, prefix=prompt_prefix)
  first = pick(_last_real(hidden, prompt_valid))

  def step(carry, _):
    token, cache = carry
    hidden, cache = model.cached_hidden(token[:, None], cache)
    token = pick(hidden[:, 0])
    return (token, cache), token

  _, rest = jax.lax.scan(step, (first, cache), None, length=num_tokens - 1)
  return jnp.concatenate([first[:, None], rest.T], axis=1)


# -- loss ------------------------------------------------------------------------------------

def lm_loss(model: LM, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict]:
  """Masked next-token cross-entropy in float32: the mean over scored tokens (loss_mask > 0,
  weighted by it), with token accuracy and the number of scored tokens.

  Shape: batch[key] [b, l] for key in BATCH_KEYS.
  """
  missing = [k for k in BATCH_KEYS if k not in batch]
  if missing:
    raise KeyError(f"LM batch lacks {missing} (needs {BATCH_KEYS})")
  logits = model(batch["tokens"], segment_ids=batch["segment_ids"], positions=batch["positions"],
                 prefix=batch["prefix"])
  targets = batch["targets"].astype(jnp.int32)
  weight = batch["loss_mask"].astype(jnp.float32)
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
  count = weight.sum()
  denom = jnp.maximum(count, 1.0)
  loss = (ce * weight).sum() / denom
  hit = (jnp.argmax(logits, axis=-1) == targets).astype(jnp.float32)
  return loss, {"loss": loss, "token_accuracy": (hit * weight).sum() / denom,
                "scored_tokens": count}


# -- SID beam search interface ---------------------------------------------------------------

def _shared_prompt_attention(q: jax.Array, k_own: jax.Array, v_own: jax.Array,
                             prompt_k: jax.Array, prompt_v: jax.Array,
                             prompt_valid: jax.Array) -> jax.Array:
  """Attention of the beams' SID tokens over [their user's prompt, their own causal SID part].

  The prompt's keys/values are per user (row r of q belongs to user r // B) and never repeated
  per beam; one float32 softmax runs over both parts, which is exactly attention over the
  concatenated sequence.

  Shape: q [b*B, t, h, k], k_own / v_own [b*B, t, g, k], prompt_k / prompt_v [b, P, g, k],
    prompt_valid bool [b, P] -> [b*B, t, h, k].
  """
  bB, t, h, hk = q.shape
  b, P, g, _ = prompt_k.shape
  B, r = bB // b, h // g
  scale = hk ** -0.5
  neg = jnp.finfo(jnp.float32).min
  qg = q.reshape(bB, t, g, r, hk)
  s_prompt = jnp.einsum("bjtgrk,bsgk->bjgrts", qg.reshape(b, B, t, g, r, hk), prompt_k,
                        preferred_element_type=jnp.float32) * scale
  s_prompt = jnp.where(prompt_valid[:, None, None, None, None, :], s_prompt, neg)
  s_own = jnp.einsum("ntgrk,nsgk->ngrts", qg, k_own, preferred_element_type=jnp.float32) * scale
  s_own = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s_own, neg)
  probs = jax.nn.softmax(jnp.concatenate([s_prompt.reshape(bB, g, r, t, P), s_own], -1), -1)
  p_prompt = probs[..., :P].reshape(b, B, g, r, t, P).astype(prompt_v.dtype)
  p_own = probs[..., P:].astype(v_own.dtype)
  ctx = (jnp.einsum("bjgrts,bsgk->bjtgrk", p_prompt, prompt_v).reshape(bB, t, h, hk)
         + jnp.einsum("ngrts,nsgk->ntgrk", p_own, v_own).reshape(bB, t, h, hk))
  return ctx


class SIDDecoder(nnx.Module):
  """An LM seen through the beam interface of lrm/decode (`init_decode` / `decode_step`), so
  `lrm.decode.generative.recommend(SIDDecoder(lm), prompts, prompt_mask, trie)` drives it.

  The prompt (text and/or history SIDs, left- or right-padded; its last real token is the one
  whose next-token distribution is SID level 0) runs once per user; the SID tokens continue
  the positions after the prompt's last real token.
  """

  def __init__(self, lm: LM):
    if not lm.config.codebook_sizes:
      raise ConfigError("model.codebook_sizes", "SID decoding needs the SID levels' sizes")
    self.lm = lm
    self.config = lm.config

  def level_log_probs(self, hidden: jax.Array, level: int) -> jax.Array:
    """Log-softmax over level `level`'s codes only. Shape: [..., d] -> float32 [..., k]."""
    cfg = self.config
    logits = self.lm.row_logits(hidden, cfg.level_offsets[level], cfg.codebook_sizes[level])
    return jax.nn.log_softmax(logits, axis=-1)

  def init_decode(self, prompt: jax.Array, prompt_mask: jax.Array,
                  prompt_prefix: jax.Array | None = None) -> tuple[jax.Array, tuple]:
    """Runs the prompts once: the beams' initial state (their SID tokens, none yet) and the
    shared per-user context (every layer's prompt keys/values, the prompt mask, the next
    position, level 0's log-probs).

    Shape: prompt int32 [b, P], prompt_mask bool [b, P] (True = real token), prompt_prefix
      bool [b, P] or None (causal prompt) -> (int32 [b, L], context with leading dim b).
    """
    prompt = jnp.asarray(prompt, jnp.int32)
    b, P = prompt.shape
    cache = self.lm.init_cache(b, P)
    hidden, cache = self.lm.cached_hidden(prompt, cache, valid=prompt_mask, prefix=prompt_prefix)
    # The last real prompt token predicts level 0 (left padding: the last slot).
    context = (cache.keys, cache.values, cache.valid, cache.next_position,
               self.level_log_probs(_last_real(hidden, prompt_mask), 0))
    return jnp.zeros((b, self.config.num_levels), jnp.int32), context

  def decode_step(self, tokens: jax.Array, prev_codes: jax.Array, level: int, context: tuple
                  ) -> tuple[jax.Array, jax.Array]:
    """One beam-search step: log-probs of level `level`'s codes for every beam.

    Shape: tokens int32 [b*B, L] (the beams' SID tokens so far), prev_codes int32 [b*B]
      (level - 1's codes; ignored at level 0), context from `init_decode` (leading dim b)
      -> (float32 [b*B, k_level], tokens).
    """
    keys, values, prompt_valid, next_position, level0 = context
    bB = tokens.shape[0]
    B = bB // level0.shape[0]
    if level == 0:
      return jnp.repeat(level0, B, axis=0), tokens
    offsets = self.config.level_offsets
    tokens = tokens.at[:, level - 1].set(prev_codes + offsets[level - 1])
    own = tokens[:, :level]                                                  # [b*B, t]
    positions = jnp.repeat(next_position, B)[:, None] + jnp.arange(level, dtype=jnp.int32)
    x = self.lm.embed(own)
    for block, pk, pv in zip(self.lm.layers, keys, values):
      q, k, v = block.attention.project(block.attention_norm(x), positions)
      ctx = _shared_prompt_attention(q, k, v, pk, pv, prompt_valid)
      x = x + block.attention.out(ctx)
      x = x + block.mlp(block.mlp_norm(x))
    hidden = self.lm.final_norm(x[:, -1])
    return self.level_log_probs(hidden, level), tokens
