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
from lrm.models.layers import DEFAULT_INIT, param, sharding_scope
from lrm.models.sid_features import CodeFamily, PrefixNGramEmbedding
from lrm.models.windowed import DTYPES, WindowedTrunk, check_trunk_config, compact_targets

_LOSSES = ("codebook", "item")
_LOSS_POSITIONS = ("all", "last")
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
  dropout: float = 0.1             # on attention / MLP outputs
  embed_dropout: float | None = None  # on the input embeddings (None: `dropout`)
  attention_dropout: float = 0.0   # on the attention probabilities (> 0: unfused attention)
  temperature: float = 0.03        # cosine logits / temperature (RPG: 0.03)
  activation: str = "gelu"
  dtype: str = "float32"
  attention_impl: str | None = None
  # Ablations (issue 23). RPG is loss="codebook", loss_positions="all", ngram_buckets=0.
  loss: str = "codebook"           # codebook: per-codebook CE; item: softmax over every item's
                                   # summed code logits (exact; [P, n] scores a step)
  loss_positions: str = "all"      # all: every target position; last: each window's last only
  ngram_buckets: int = 0           # > 0: add the mean of embeddings of each item's SID
  ngram_order: int = 4             # prefixes of lengths 1 .. ngram_order (lrm/models/
                                   # sid_features.py; a level with more prefixes than
                                   # ngram_buckets is hashed into that many rows)

  def __post_init__(self):
    check_trunk_config(self, ints=("ngram_order",))
    if isinstance(self.ngram_buckets, bool) or not isinstance(self.ngram_buckets, int) \
        or self.ngram_buckets < 0:
      raise ConfigError("ngram_buckets", f"must be an integer >= 0, got {self.ngram_buckets!r}")
    sizes = tuple(self.codebook_sizes)
    if not sizes or any(isinstance(k, bool) or int(k) < 1 for k in sizes):
      raise ConfigError("codebook_sizes", f"must be positive integers, got {sizes!r}")
    object.__setattr__(self, "codebook_sizes", tuple(int(k) for k in sizes))
    if isinstance(self.temperature, bool) or not isinstance(self.temperature, (int, float)) \
        or not self.temperature > 0:
      raise ConfigError("temperature", f"must be > 0, got {self.temperature!r}")
    if self.loss not in _LOSSES:
      raise ConfigError("loss", f"must be one of {list(_LOSSES)}, got {self.loss!r}")
    if self.loss_positions not in _LOSS_POSITIONS:
      raise ConfigError("loss_positions", f"must be one of {list(_LOSS_POSITIONS)}, "
                        f"got {self.loss_positions!r}")
    if self.ngram_buckets and not self.ngram_order <= len(sizes):
      raise ConfigError("ngram_order", f"must be in [1, {len(sizes)}] (the SID length), "
                        f"got {self.ngram_order!r}")

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


class RPG(WindowedTrunk):
  """Mean-of-codes input, `num_layers` causal pre-norm blocks, one residual head per codebook."""

  def __init__(self, cfg: RPGConfig, codes: Any, *, rngs: nnx.Rngs):
    """`codes`: the SID table in catalog order, int [num_items, C]."""
    self.config = cfg
    table = padded_codes(codes, cfg.codebook_sizes)
    if len(table) != cfg.num_items + 1:
      raise ConfigError("num_items", f"{cfg.num_items} items but {len(table) - 1} SID rows")
    self.codes = SIDCodes(jnp.asarray(table))
    C, K, d = cfg.num_codebooks, cfg.max_codes, cfg.d_model
    with sharding_scope():
      self.code_embed = nnx.Param(param(DEFAULT_INIT, (None, "vocab", "embed"))(
          rngs.params(), (C, K, d), jnp.float32))
      self.init_trunk(cfg, rngs=rngs)
      # Zero-initialised: every head starts as the identity (RPG's ResBlock).
      self.head_kernel = nnx.Param(param(nnx.initializers.zeros_init(), (None, "embed", "mlp"))(
          rngs.params(), (C, d, d), jnp.float32))
      self.head_bias = nnx.Param(jnp.zeros((C, d), jnp.float32))
    if cfg.ngram_buckets:   # ablation: SID-prefix (n-gram) embeddings beside the codes' mean
      family = CodeFamily("sid", cfg.codebook_sizes, levels=cfg.ngram_order,
                          max_rows=cfg.ngram_buckets)
      self.ngram_embed = PrefixNGramEmbedding([family], d, combine="tokens", dtype=cfg.dtype,
                                              rngs=rngs)

  def item_embeddings(self, rows: jax.Array) -> jax.Array:
    """Mean of each item's code embeddings (plus the mean of its prefix n-gram embeddings when
    `ngram_buckets`). Shape: rows int [...] (catalog row + 1) -> [..., d]."""
    codes = self.codes[...][rows]                                     # [..., C]
    table = self.code_embed[...]
    level = jnp.arange(self.config.num_codebooks)
    x = table[level, codes].mean(axis=-2)                             # [..., d]
    if self.config.ngram_buckets:
      x = x + self.ngram_embed(codes).mean(axis=-2).astype(x.dtype)
    return x

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Hidden states; position t summarises items up to t (the next item's query).

    Shape: inputs int [b, l] (l <= max_length; catalog row + 1, 0 = padding, left-padded)
    -> [b, l, d].
    """
    self.check_window(inputs)
    valid = inputs > 0
    x = self.item_embeddings(inputs).astype(DTYPES[self.config.dtype])
    x = jnp.where(valid[..., None], x * self.config.d_model ** 0.5, 0)
    return self.run_trunk(x, valid)

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
  """Per-codebook cross-entropy, averaged over codebooks and every target position (or, with
  the `loss` / `loss_positions` ablations, an item softmax / each window's last target only).

  `max_targets` (static) scores only the first `max_targets` target positions of the batch
  (row-major), as `sasrec_loss` does: most positions of short users are padding.

  Shape: batch["inputs"], batch["targets"] int [b, l] (catalog row + 1; target 0 = none).
  Returns (loss, {"loss", "code_accuracy" (top-1 per code), "item_accuracy" (all codes right),
  "num_targets", "dropped_targets"}). `item_accuracy` under loss="item": the target item's
  summed logit is the largest.
  """
  cfg = model.config
  targets = batch["targets"]
  if cfg.loss_positions == "last":     # ablation: one target per window (its last position)
    targets = targets.at[:, :-1].set(0)
  hidden, targets, total = compact_targets(model(batch["inputs"]), targets, max_targets)
  has_target = targets > 0
  logits = model.code_logits(hidden)                                   # [..., C, K]
  labels = model.codes[...][targets]                                   # [..., C]
  picked = jnp.take_along_axis(logits, labels[..., None], axis=-1)[..., 0]
  # The target's logit is the largest (an argmax would cost a second pass over the logits).
  correct = jax.lax.stop_gradient(picked >= logits.max(axis=-1))       # [..., C]
  weight = has_target.astype(jnp.float32)
  count = weight.sum()
  denom = jnp.maximum(count, 1.0)                    # a batch of padding only gives 0, not NaN
  if cfg.loss == "item":   # ablation: softmax over every item's summed code logits
    scores = item_scores(logits.reshape(-1, *logits.shape[-2:]), model.codes[...][1:])
    scores = scores.reshape(*logits.shape[:-2], -1)                    # [..., n]
    target_score = picked.sum(-1)
    ce = jax.nn.logsumexp(scores, axis=-1) - target_score
    item_correct = jax.lax.stop_gradient(target_score >= scores.max(axis=-1))
  else:
    ce = (jax.nn.logsumexp(logits, axis=-1) - picked).mean(-1)
    item_correct = correct.all(-1)
  loss = (ce * weight).sum() / denom
  code_acc = (correct.mean(-1) * weight).sum() / denom
  item_acc = (item_correct * weight).sum() / denom
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
