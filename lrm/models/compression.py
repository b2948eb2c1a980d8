"""A Global-Aware Compression Transformer for very long user histories ("Beyond Item IDs").

Full self-attention over a history of T events costs O(T^2) time, and O(T^2) memory where the
scores are materialised. This encoder keeps every cost linear in T:

1. Temporal folding, no learned parameters: the left-padded history [b, T, d] is reshaped into
   W = T / F windows of F consecutive events, and each window into S summary tokens, each the
   masked mean of F / S consecutive events (`fold_mode="mean"`; S = F keeps every event), or
   their concatenation through one projection (`fold_mode="concat"`, the paper's reshape
   [L, d] -> [L/k, k*d] -> d). A summary token is padding when all its events are.
2. Summary tokens P = G global tokens + 1 query token (the target / candidate query; for
   next-item retrieval a learned token, plus an optional per-example vector). In every layer
   the P summary tokens attend over all P + W*S tokens (cost P * W * S), and each folded token
   attends within its window (`local_attention`, causal in time with `causal_window`) and to the
   G global tokens (`fold_reads_globals`): cost W * S * (S + G). Globals are `learned` rows, or
   `pooled` (the masked mean of a contiguous 1/G of the history, plus a learned row).
3. Readout: the query token's output (`readout="query"`), or the masked mean over all output
   positions (`"mean"`, the paper's user vector).

Pooling S < F events into one token is what loses quality (the next item depends most on the
latest events, and a mean blurs them). Two options restore full resolution where it matters
while every cost stays linear in T, still without learned folding parameters:
- `recent_windows` (R, default 1): the last R windows keep every event (S = F there); only
  older windows are pooled. Extra cost R * F tokens, constant in T.
- `summary_reads="events"`: the P summary tokens read every event instead of the folded
  tokens (cost P * T per layer). Event t enters layer l as x_t + (f_l - f_0) for the folded
  token f it was pooled into: its own input plus the context its window gathered so far
  (non-parametric unpooling; with S = F it is exactly the folded token).
Measured (benchmarks/README.md): R = 1 recovers most of the gap on MovieLens at a quarter of
the memory of no pooling; "events" costs ~4x the memory at T = 8k and did not win on CPU.

`mixer="full"` is the drop-in baseline with the same parameters and interface: causal
self-attention over the T events followed by the query token, through
`jax.nn.dot_product_attention(is_causal=True)` with no mask (the history is moved from left to
right padding first, so no real token ever sees padding and every padded row sees at least
one key), which lets the fused flash kernel run on GPUs (`attention_impl="cudnn"`).

Degenerate case (tested, with or without the two options above): one window (F = T), no
pooling (S = F, mean fold), no globals (G = 0), `local_attention` and `causal_window` on:
every event attends causally to the events before it and the query attends to all of them
and itself, which is exactly `mixer="full"` with the same parameters (the outputs agree to
float rounding).

Causality: the model predicts the item after the WHOLE history it is given (one user vector
per example); a (history, target) example only ever holds events strictly before its target
(lrm/tasks/long_history.py builds them so). Inside the history, folded tokens do not see later
windows, but the query and global tokens see everything, by design. Padding is masked
everywhere (a padded key is never attended by a real query; padded queries' outputs are never
read).

Sharding: activations are constrained with logical names (batch, length = the window axis,
embed) resolved by lrm/parallel/rules.py when a mesh is set (`jax.set_mesh`); otherwise plain.

`LongHistoryRecommender` puts it to use: history tokens = depth-truncated SID prefix n-gram
embeddings (lrm/models/sid_features.py) + log time-gap, log age, event-kind and log
position-from-end embeddings; the user vector scores every item by a dot product with item
embeddings built from the same prefix tables over all SID levels (ID-free: the catalog can
grow without new parameters); full-softmax cross-entropy.

Shape letters: b batch, t events (T), w windows (W), s summaries per window (S), p summary
tokens (G + 1), d model width, h heads, k head dim, c SID levels, n catalog items.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import optax
from flax import nnx
from jax.sharding import PartitionSpec

from lrm.core.config import dataclass_from_dict
from lrm.core.errors import ConfigError
from lrm.models.layers import (DEFAULT_INIT, MLP, Attention, embedding, param, rms_norm,
                               sharding_scope)
from lrm.models.sid_features import CodeFamily, PrefixNGramEmbedding
from lrm.parallel.rules import LOGICAL_AXIS_RULES

_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
_CHOICES = {"mixer": ("compress", "full"), "fold_mode": ("mean", "concat"),
            "global_init": ("learned", "pooled"), "readout": ("query", "mean"),
            "activation": ("gelu", "relu"), "dtype": tuple(_DTYPES),
            "attention_impl": (None, "xla", "cudnn"),
            "summary_reads": ("folded", "events")}
# Log2 buckets: time gaps / ages in seconds (0 = padding, 1 + floor(log2(1 + s)) capped), and
# positions from the end of the history.
NUM_TIME_BUCKETS = 40
NUM_POSITION_BUCKETS = 32


@dataclasses.dataclass(frozen=True)
class CompressionConfig:
  """The history encoder; defaults are a small CPU-sized model."""
  mixer: str = "compress"        # "compress" (this module) or "full" (causal self-attention)
  d_model: int = 64
  num_heads: int = 2
  head_dim: int = 32
  mlp_dim: int = 256
  num_layers: int = 2
  dropout: float = 0.1
  activation: str = "gelu"
  dtype: str = "float32"         # compute dtype; parameters stay float32
  attention_impl: str | None = None  # jax.nn.dot_product_attention's implementation
  fold: int = 16                 # F: events per window (T must be a multiple)
  summaries: int = 4             # S: tokens per window (divides F; S = F: no pooling)
  fold_mode: str = "mean"        # "mean" (non-parametric) or "concat" (+ one projection)
  num_globals: int = 8           # G: global tokens
  global_init: str = "learned"   # "learned" rows, or "pooled" history segments + rows
  local_attention: bool = True   # folded tokens attend within their window ...
  causal_window: bool = True     # ... to earlier tokens only
  fold_reads_globals: bool = True  # folded tokens attend to the global tokens
  readout: str = "query"         # "query" token output or "mean" over all outputs
  summary_reads: str = "folded"  # the summary tokens read "folded" tokens or every "event"
  recent_windows: int = 1        # R: the last R windows keep every event (S = F there)

  def __post_init__(self):
    for name in ("d_model", "num_heads", "head_dim", "mlp_dim", "num_layers", "fold",
                 "summaries"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")
    for name in ("num_globals", "recent_windows"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(name, f"must be an integer >= 0, got {value!r}")
    if not 0 <= self.dropout < 1:
      raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout!r}")
    for name, allowed in _CHOICES.items():
      if getattr(self, name) not in allowed:
        raise ConfigError(name, f"must be one of {list(allowed)}, got {getattr(self, name)!r}")
    if self.fold % self.summaries:
      raise ConfigError("summaries", f"{self.summaries} does not divide fold={self.fold}")
    if self.global_init == "pooled" and self.num_globals == 0:
      raise ConfigError("global_init", "'pooled' needs num_globals >= 1")

  @classmethod
  def from_dict(cls, d: Mapping[str, Any] | Any, where: str = "encoder") -> "CompressionConfig":
    return dataclass_from_dict(cls, d, where)


def constrain(x: jax.Array, names: tuple[str | None, ...]) -> jax.Array:
  """Sharding constraint from logical axis names (LOGICAL_AXIS_RULES) when a mesh is set.

  Activations name only batch and length (the window axis): their feature axis stays whole
  (the rules' `embed` -> fsdp is for parameters).
  """
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    return x
  rules = dict(LOGICAL_AXIS_RULES)
  spec, used = [], set()
  for name in names:
    axes = rules.get(name) if name else None
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    axes = tuple(a for a in axes if a in mesh.axis_names and a not in used)  # each axis once
    used.update(axes)
    spec.append(axes if axes else None)
  return jax.lax.with_sharding_constraint(x, PartitionSpec(*spec))


class CompressionBlock(nnx.Module):
  """Pre-norm block with one attention (shared by every token kind) and one MLP."""

  def __init__(self, cfg: CompressionConfig, *, rngs: nnx.Rngs):
    dtype = _DTYPES[cfg.dtype]
    self.cfg = cfg
    self.attention_norm = rms_norm(cfg.d_model, dtype=dtype, rngs=rngs)
    self.attention = Attention(cfg.d_model, cfg.num_heads, cfg.head_dim, dtype=dtype,
                               attention_impl=cfg.attention_impl, rngs=rngs)
    self.mlp_norm = rms_norm(cfg.d_model, dtype=dtype, rngs=rngs)
    self.mlp = MLP(cfg.d_model, cfg.mlp_dim, activation=cfg.activation, dropout=cfg.dropout,
                   dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

  def _mlp(self, x: jax.Array) -> jax.Array:
    return x + self.dropout(self.mlp(self.mlp_norm(x)))

  def full(self, x: jax.Array) -> jax.Array:
    """Causal self-attention over right-padded tokens. Shape: [b, t, d] -> [b, t, d]."""
    a = self.attention
    h = self.attention_norm(x)
    ctx = jax.nn.dot_product_attention(a.query(h), a.key(h), a.value(h), is_causal=True,
                                       implementation=self.cfg.attention_impl)
    return self._mlp(x + self.dropout(a.out(ctx)))

  def compress(self, summary: jax.Array, folded, folded_valid,
               events: tuple[jax.Array, jax.Array] | None = None):
    """Summary tokens read everything; folded tokens read their window and the globals.

    Shape: summary [b, p, d] (G globals then the query); folded [b, w, s, d] and
    folded_valid bool [b, w, s], or tuples of such groups of windows (each with its own s);
    events: None (the summary tokens read the folded tokens) or (tokens [b, t, d], valid
    bool [b, t]) that they read instead -> (summary, folded) of the same shapes.
    """
    cfg, a = self.cfg, self.attention
    single = not isinstance(folded, (tuple, list))
    if single:
      folded, folded_valid = (folded,), (folded_valid,)
    b, p, d = summary.shape
    g = p - 1
    impl = cfg.attention_impl
    hs = self.attention_norm(summary)
    qs, ks, vs = a.query(hs), a.key(hs), a.value(hs)                   # [b, p, h, k]
    hf = [self.attention_norm(f) for f in folded]
    kf, vf = [a.key(h) for h in hf], [a.value(h) for h in hf]          # [b, w, s, h, k]
    flat = lambda t: t.reshape(b, -1, *t.shape[3:])
    if events is None:
      kc = jnp.concatenate([flat(k) for k in kf], 1)
      vc = jnp.concatenate([flat(v) for v in vf], 1)
      context_valid = jnp.concatenate([v.reshape(b, -1) for v in folded_valid], 1)
    else:
      he = self.attention_norm(events[0])
      kc, vc, context_valid = a.key(he), a.value(he), events[1]
    keys_valid = jnp.concatenate([jnp.ones((b, p), bool), context_valid], 1)
    ctx = jax.nn.dot_product_attention(
        qs, jnp.concatenate([ks, kc], 1), jnp.concatenate([vs, vc], 1),
        mask=keys_valid[:, None, None, :], implementation=impl)
    summary = summary + self.dropout(a.out(ctx))
    out = tuple(self._local(f, v, h, k_, v_, ks[:, :g], vs[:, :g])
                for f, v, h, k_, v_ in zip(folded, folded_valid, hf, kf, vf))
    return self._mlp(summary), (out[0] if single else out)

  def _local(self, folded: jax.Array, folded_valid: jax.Array, hf: jax.Array, kf: jax.Array,
             vf: jax.Array, kg: jax.Array, vg: jax.Array) -> jax.Array:
    """Folded tokens attend within their window and to the globals, then the MLP.

    Shape: folded, hf [b, w, s, d], folded_valid [b, w, s], kf, vf [b, w, s, h, k],
    kg, vg [b, g, h, k] (the globals' keys / values) -> [b, w, s, d].
    """
    cfg, a = self.cfg, self.attention
    b, w, s, _ = folded.shape
    g = kg.shape[1]
    heads = kf.shape[-2:]
    local, read_globals = cfg.local_attention, cfg.fold_reads_globals and g > 0
    if local or read_globals:
      per_window = lambda t: t.reshape(b * w, *t.shape[2:])
      k_parts, v_parts, m_parts = [], [], []
      if local:
        order = (jnp.tril(jnp.ones((s, s), bool)) if cfg.causal_window
                 else jnp.ones((s, s), bool))
        valid = per_window(folded_valid)[:, None, :]                     # [bw, 1, s]
        # A padded query keeps itself as a key, so no row is a softmax over nothing.
        m_parts.append((order[None] & valid) | jnp.eye(s, dtype=bool)[None])
        k_parts.append(per_window(kf))
        v_parts.append(per_window(vf))
      if read_globals:
        glob = lambda t: jnp.broadcast_to(t[:, None], (b, w, g, *heads)).reshape(
            b * w, g, *heads)
        k_parts.append(glob(kg))
        v_parts.append(glob(vg))
        m_parts.append(jnp.ones((b * w, s, g), bool))
      ctx = jax.nn.dot_product_attention(
          per_window(a.query(hf)), jnp.concatenate(k_parts, 1), jnp.concatenate(v_parts, 1),
          mask=jnp.concatenate(m_parts, -1)[:, None], implementation=cfg.attention_impl)
      folded = folded + self.dropout(a.out(ctx.reshape(b, w, s, *heads)))
      folded = constrain(folded, ("batch", "length", None, None))
    return self._mlp(folded)


class HistoryEncoder(nnx.Module):
  """Events -> one user vector, by the compression transformer or full self-attention.

  The parameters do not depend on `mixer`, so one state serves both (the degenerate-case test
  and like-for-like comparisons rely on it).
  """

  def __init__(self, cfg: CompressionConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    dtype = _DTYPES[cfg.dtype]
    with sharding_scope():
      # Row 0: the query token; rows 1..G: the global tokens.
      self.tokens = embedding(1 + cfg.num_globals, cfg.d_model, names=(None, "embed"),
                              dtype=dtype, rngs=rngs)
      self.fold_projection = nnx.data(None)
      if cfg.fold_mode == "concat":
        width = cfg.fold // cfg.summaries * cfg.d_model
        self.fold_projection = nnx.Linear(
            width, cfg.d_model, use_bias=False, dtype=dtype, param_dtype=jnp.float32,
            kernel_init=param(DEFAULT_INIT, (None, "embed")), rngs=rngs)
      self.blocks = nnx.List([CompressionBlock(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
      self.final_norm = rms_norm(cfg.d_model, dtype=dtype, rngs=rngs)

  def __call__(self, x: jax.Array, valid: jax.Array,
               query: jax.Array | None = None) -> jax.Array:
    """Shape: x [b, t, d] left-padded, valid bool [b, t], query [b, d] or None -> [b, d]."""
    if x.ndim != 3 or valid.shape != x.shape[:2]:
      raise ConfigError("history", f"x must be [b, t, d] and valid [b, t], got {x.shape} "
                        f"and {valid.shape}")
    x = constrain(x, ("batch", "length", None))
    table = self.tokens.embedding[...].astype(x.dtype)
    q = jnp.broadcast_to(table[0], (x.shape[0], x.shape[2]))
    if query is not None:
      q = q + query.astype(x.dtype)
    if self.config.mixer == "full":
      return self._full(x, valid, q)
    return self._compress(x, valid, q, table[1:])

  def _full(self, x: jax.Array, valid: jax.Array, q: jax.Array) -> jax.Array:
    b, t, _ = x.shape
    n = valid.sum(1).astype(jnp.int32)
    tokens = jnp.concatenate([x, q[:, None]], 1)                  # [b, t + 1, d]
    # Left padding -> right padding: [pad.., e_1..e_n, q] -> [e_1..e_n, q, pad..].
    shift = (jnp.arange(t + 1)[None] + (t - n)[:, None]) % (t + 1)
    tokens = jnp.take_along_axis(tokens, shift[..., None], axis=1)
    if self.config.attention_impl == "cudnn":
      # The fused kernel wants tidy lengths; positions appended at the end change nothing
      # before them under a causal mask.
      extra = -(t + 1) % 128
      tokens = jnp.pad(tokens, ((0, 0), (0, extra), (0, 0)))
    for block in self.blocks:
      tokens = block.full(tokens)
    tokens = self.final_norm(tokens)
    if self.config.readout == "query":
      return jnp.take_along_axis(tokens, n[:, None, None], axis=1)[:, 0]
    keep = (jnp.arange(t + 1)[None] <= n[:, None]).astype(tokens.dtype)[..., None]
    return (tokens * keep).sum(1) / keep.sum(1)

  def fold(self, x: jax.Array, valid: jax.Array,
           summaries: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Non-parametric folding (plus the projection in concat mode) into `summaries` (default
    S) tokens per window.

    Shape: x [b, t, d], valid [b, t] -> folded [b, w, s, d], folded_valid bool [b, w, s].
    """
    cfg = self.config
    b, t, d = x.shape
    if t % cfg.fold:
      raise ConfigError("fold", f"history length {t} is not a multiple of fold={cfg.fold}")
    w, s = t // cfg.fold, summaries or cfg.summaries
    group = cfg.fold // s
    weight = valid.astype(x.dtype).reshape(b, w, s, group, 1)
    xs = x.reshape(b, w, s, group, d) * weight
    if cfg.fold_mode == "mean" or s != cfg.summaries:   # recent windows: no projection
      folded = xs.sum(3) / jnp.maximum(weight.sum(3), 1.0)
    else:
      folded = self.fold_projection(xs.reshape(b, w, s, group * d))
    return folded, valid.reshape(b, w, s, group).any(-1)

  def fold_groups(self, x: jax.Array, valid: jax.Array) -> list[tuple[jax.Array, jax.Array,
                                                                       jax.Array, jax.Array]]:
    """The history split into older windows (pooled to S) and the last R (every event kept).

    Shape: x [b, t, d], valid [b, t] -> per non-empty group (folded [b, w_i, s_i, d],
    folded_valid [b, w_i, s_i], its events x_i [b, t_i, d], valid_i [b, t_i]), oldest first.
    """
    cfg = self.config
    t = x.shape[1]
    if t % cfg.fold:
      raise ConfigError("fold", f"history length {t} is not a multiple of fold={cfg.fold}")
    cut = max(t - cfg.recent_windows * cfg.fold, 0)
    groups = []
    for lo, hi, s in ((0, cut, cfg.summaries), (cut, t, cfg.fold)):
      if hi > lo:
        xi, vi = x[:, lo:hi], valid[:, lo:hi]
        groups.append((*self.fold(xi, vi, s), xi, vi))
    return groups

  def _compress(self, x: jax.Array, valid: jax.Array, q: jax.Array,
                global_rows: jax.Array) -> jax.Array:
    cfg = self.config
    b = x.shape[0]
    groups = self.fold_groups(x, valid)
    folded = tuple(constrain(f, ("batch", "length", None, None)) for f, *_ in groups)
    folded_valid = tuple(v for _, v, *_ in groups)
    globals_ = jnp.broadcast_to(global_rows[None], (b, *global_rows.shape))
    if cfg.global_init == "pooled":
      flat = lambda ts: jnp.concatenate([t.reshape(b, -1, 1, t.shape[-1]) for t in ts], 1)
      globals_ = globals_ + _segment_means(
          flat(folded), jnp.concatenate([v.reshape(b, -1, 1) for v in folded_valid], 1),
          cfg.num_globals)
    summary = jnp.concatenate([globals_, q[:, None]], 1)               # [b, G + 1, d]
    initial = folded
    for block in self.blocks:
      events = None
      if cfg.summary_reads == "events":
        events = (_unpool(initial, folded, [xi for *_, xi, _ in groups]), valid)
      summary, folded = block.compress(summary, folded, folded_valid, events)
    summary = self.final_norm(summary)
    if cfg.readout == "query":
      return summary[:, -1]
    folded = [self.final_norm(f) for f in folded]
    weight = [v.astype(f.dtype)[..., None] for f, v in zip(folded, folded_valid)]
    total = sum((f * w).sum((1, 2)) for f, w in zip(folded, weight)) + summary.sum(1)
    return total / (sum(w.sum((1, 2)) for w in weight) + summary.shape[1])


def _unpool(initial, folded, events) -> jax.Array:
  """Every event plus the update its folded token has gathered so far (no parameters).

  An event's token at layer l is x_t + (f_l - f_0) for the folded token f it was pooled into,
  so the summary tokens read each event with its window's context at full resolution; with
  S = F it is exactly the folded token.
  Shape: initial, folded: per group [b, w, s, d]; events: per group [b, t_i, d] -> [b, t, d].
  """
  out = []
  for f0, f, x in zip(initial, folded, events):
    b, w, s, d = f.shape
    delta = jnp.repeat((f - f0).astype(x.dtype), x.shape[1] // (w * s), axis=2)
    out.append(x + delta.reshape(b, -1, d))
  return jnp.concatenate(out, 1)


def _segment_means(folded: jax.Array, folded_valid: jax.Array, g: int) -> jax.Array:
  """Masked mean of each of g contiguous segments of the folded tokens (cost linear in T).

  Shape: folded [b, w, s, d], folded_valid [b, w, s] -> [b, g, d].
  """
  b, w, s, d = folded.shape
  n = w * s
  segment = jax.nn.one_hot(jnp.arange(n) * g // n, g, dtype=folded.dtype)   # [n, g]
  weight = folded_valid.reshape(b, n).astype(folded.dtype)
  sums = jnp.einsum("bnd,bn,ng->bgd", folded.reshape(b, n, d), weight, segment)
  counts = jnp.einsum("bn,ng->bg", weight, segment)
  return sums / jnp.maximum(counts, 1.0)[..., None]


# ------------------------------------------------------------------------------------------
# The next-item model


@dataclasses.dataclass(frozen=True)
class LongHistoryConfig:
  """History tokens + encoder + ID-free item scoring."""
  codebook_sizes: tuple[int, ...]   # the items' SID levels (all of them score items)
  history_levels: int = 2           # depth truncation of history tokens (first levels only)
  max_rows: int | None = 1 << 16    # prefix tables with more keys are hashed to this many rows
  num_event_kinds: int = 8          # event-kind ids are in [0, num_event_kinds); 0 = padding
  encoder: CompressionConfig = dataclasses.field(default_factory=CompressionConfig)

  def __post_init__(self):
    sizes = tuple(self.codebook_sizes)
    object.__setattr__(self, "codebook_sizes", sizes)
    family = CodeFamily("sid", sizes, max_rows=self.max_rows)   # validates sizes / max_rows
    if not 1 <= self.history_levels <= family.depth:
      raise ConfigError("history_levels", f"must be in [1, {family.depth}], "
                        f"got {self.history_levels}")
    if self.num_event_kinds < 2:
      raise ConfigError("num_event_kinds", f"must be >= 2, got {self.num_event_kinds}")
    if isinstance(self.encoder, Mapping) or hasattr(self.encoder, "to_dict"):
      object.__setattr__(self, "encoder", CompressionConfig.from_dict(self.encoder))
    if not isinstance(self.encoder, CompressionConfig):
      raise ConfigError("encoder", f"expected a CompressionConfig, got {self.encoder!r}")

  @classmethod
  def from_dict(cls, d: Mapping[str, Any] | Any, where: str = "model") -> "LongHistoryConfig":
    if hasattr(d, "to_dict"):
      d = d.to_dict()
    if isinstance(d, Mapping) and isinstance(d.get("encoder"), Mapping):
      try:
        d = {**d, "encoder": CompressionConfig.from_dict(d["encoder"])}
      except ConfigError as e:
        raise ConfigError(f"{where}.{e.field}", str(e).split(": ", 1)[-1]) from None
    return dataclass_from_dict(cls, d, where)

  def family(self) -> CodeFamily:
    return CodeFamily("sid", self.codebook_sizes, max_rows=self.max_rows)


def log_bucket(x: jax.Array, num_buckets: int) -> jax.Array:
  """1 + floor(log2(1 + x)) capped at num_buckets - 1 (x >= 0); callers use 0 for padding."""
  x = jnp.maximum(x.astype(jnp.float32), 0.0)
  return jnp.minimum(1 + jnp.floor(jnp.log2(1.0 + x)).astype(jnp.int32), num_buckets - 1)


class LongHistoryRecommender(nnx.Module):
  """Next-item model: history tokens -> HistoryEncoder -> user vector . item embeddings."""

  def __init__(self, cfg: LongHistoryConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    enc = cfg.encoder
    dtype = _DTYPES[enc.dtype]
    with sharding_scope():
      self.sid = PrefixNGramEmbedding([cfg.family()], enc.d_model, dtype=enc.dtype, rngs=rngs)
      feature = lambda n: embedding(n, enc.d_model, names=(None, "embed"), dtype=dtype,
                                    rngs=rngs)
      self.gap_embed = feature(NUM_TIME_BUCKETS)
      self.age_embed = feature(NUM_TIME_BUCKETS)
      self.kind_embed = feature(cfg.num_event_kinds)
      self.position_embed = feature(NUM_POSITION_BUCKETS)
      self.dropout = nnx.Dropout(enc.dropout, rngs=rngs)
      self.encoder = HistoryEncoder(enc, rngs=rngs)
      self.item_norm = rms_norm(enc.d_model, dtype=dtype, rngs=rngs)

  def history_tokens(self, codes: jax.Array, gap: jax.Array, age: jax.Array,
                     kind: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Shape: codes int [b, t, c] (-1 = padding), gap, age, kind int [b, t] (0 = padding)
    -> tokens [b, t, d], valid bool [b, t]."""
    valid = codes[..., 0] >= 0
    t = codes.shape[1]
    position = log_bucket(jnp.arange(t - 1, -1, -1), NUM_POSITION_BUCKETS)  # most recent: 1
    x = (self.sid(codes, levels=self.config.history_levels) + self.gap_embed(gap)
         + self.age_embed(age) + self.kind_embed(kind)
         + self.position_embed(position)[None])
    x = jnp.where(valid[..., None], x, 0.0)
    return self.dropout(x), valid

  def __call__(self, codes: jax.Array, gap: jax.Array, age: jax.Array, kind: jax.Array,
               query: jax.Array | None = None) -> jax.Array:
    """The user vector. Shape: as `history_tokens`, query [b, d] or None -> [b, d]."""
    x, valid = self.history_tokens(codes, gap, age, kind)
    return self.encoder(x, valid, query)

  def item_embeddings(self, item_codes: jax.Array) -> jax.Array:
    """Every level's prefix rows, summed and normalised. Shape: [n, c] -> [n, d]."""
    return self.item_norm(self.sid(item_codes))


def history_codes(item_codes: jax.Array, rows: jax.Array) -> jax.Array:
  """SID codes of history events by catalog row (-1 rows -> -1 codes).

  Shape: item_codes int [n, c], rows int [b, t] -> int32 [b, t, c].
  """
  codes = jnp.asarray(item_codes, jnp.int32)[jnp.maximum(rows, 0)]
  return jnp.where((rows >= 0)[..., None], codes, -1)


def user_vectors(model: LongHistoryRecommender, batch: Mapping[str, jax.Array],
                 item_codes: jax.Array) -> jax.Array:
  """Shape: batch["history"] int [b, t] catalog rows (-1 = padding), "gap", "age", "kind"
  int [b, t] -> [b, d]."""
  codes = history_codes(item_codes, batch["history"])
  return model(codes, batch["gap"], batch["age"], batch["kind"])


def score_items(model: LongHistoryRecommender, batch: Mapping[str, jax.Array],
                item_codes: jax.Array) -> jax.Array:
  """Scores of every catalog row as the next item. Shape: -> float32 [b, n]."""
  user = user_vectors(model, batch, item_codes)
  items = model.item_embeddings(jnp.asarray(item_codes, jnp.int32))
  return jnp.einsum("bd,nd->bn", user, items.astype(user.dtype)).astype(jnp.float32)


def long_history_loss(model: LongHistoryRecommender, batch: Mapping[str, jax.Array],
                      item_codes: jax.Array) -> tuple[jax.Array, dict]:
  """Full-softmax cross-entropy of the target's catalog row; bind `item_codes` with partial.

  Shape: batch as `user_vectors` plus "target" int [b] (catalog row) -> (loss, aux).
  """
  logits = score_items(model, batch, item_codes)
  target = batch["target"].astype(jnp.int32)
  loss = optax.softmax_cross_entropy_with_integer_labels(logits, target).mean()
  accuracy = (jnp.argmax(logits, -1) == target).astype(jnp.float32).mean()
  return loss, {"loss": loss, "accuracy": accuracy}
