"""TIGER as a decoder-only transformer: one stack reads the user's prompt and writes the next SID.

The same task as lrm/models/tiger.py (same batch keys, same beam-search interface, so
lrm/decode/generative.py `recommend` works unchanged), with the encoder and decoder merged into
one prefix-LM. The sequence is

  [prompt: user token, history SID tokens (left-padded with PAD)] [BOS, t_1 .. t_{L-1}]
   positions 0 .. P-1                                               P .. P+L-1

and attention is bidirectional within the prompt (as TIGER's encoder), causal over the SID part
(as its decoder), padded prompt keys masked. SID position c predicts level c's code through the
output layer tied to the token embedding and restricted to that level's codes (`level_logits`,
exactly as Seq2Seq).

Decoding: the prompt never attends to the SID part, so its keys and values at every layer are
fixed per user. `init_decode` runs the prompt once and hands them to beam search as the shared
`context` (leading dim b, never repeated per beam); `decode_step` reruns only the at most L SID
tokens of each beam, whose queries attend to their user's prompt keys/values and to their own
causal SID part (one softmax over both, float32 statistics).

Shape letters: b batch, P prompt length, t SID-part length, T = P + L, c SID level, L levels,
d model width, h heads, k head dim (in attention) or codes of a level (in logits), B beams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.models.layers import (Block, embedding, level_logits, padded_rows, rms_norm,
                               sharding_scope)
from lrm.models.sid_output import check_config, hyperparameters, sid_loss
from lrm.tokens.sid_vocab import BOS, PAD, SIDVocab


@dataclasses.dataclass(frozen=True)
class DecoderOnlyConfig:
  """Architecture of the decoder-only model (fields settable as `model.<field>` in configs).

  `vocab_size`, `codebook_sizes`, `level_offsets` and `prompt_length` come from the data
  (`from_vocab`); the rest are hyperparameters. The default depth (8) matches Seq2Seq's
  4 + 4 layers.
  """
  vocab_size: int
  codebook_sizes: tuple[int, ...]
  level_offsets: tuple[int, ...]
  prompt_length: int                 # 1 + max_history * L: the encoder_tokens length
  d_model: int = 128
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  num_layers: int = 8
  dropout: float = 0.1
  activation: str = "relu"
  dtype: str = "float32"             # compute dtype; parameters stay float32
  attention_impl: str | None = None  # None: XLA's choice; "cudnn" for the fused GPU kernel

  def __post_init__(self):
    check_config(self, ("vocab_size", "prompt_length", "d_model", "num_heads", "head_dim",
                        "mlp_dim", "num_layers"))

  @property
  def num_levels(self) -> int:
    return len(self.codebook_sizes)

  @classmethod
  def from_vocab(cls, vocab: SIDVocab, *, max_history: int,
                 hyper: Mapping[str, Any] | None = None,
                 where: str = "model") -> DecoderOnlyConfig:
    """The data-dependent fields from the vocabulary, the rest from `hyper` (a config section)."""
    hyper = hyperparameters(cls, hyper, ("vocab_size", "codebook_sizes", "level_offsets",
                                         "prompt_length"), where)
    return cls(vocab_size=vocab.size, codebook_sizes=vocab.codebook_sizes,
               level_offsets=vocab.level_offsets,
               prompt_length=1 + max_history * vocab.num_levels, **hyper)


def prefix_lm_mask(prompt_mask: jax.Array, sid_length: int) -> jax.Array:
  """The attention mask of [prompt, SID part]: bidirectional over the prompt's real tokens,
  causal over the SID part, which the prompt never sees.

  Every query also sees itself, so a padded prompt query (whose output nothing real reads)
  never has an all-masked row.

  Shape: prompt_mask bool [b, P] -> bool [b, 1, T, T] with T = P + sid_length (True = attend).
  """
  b, P = prompt_mask.shape
  T = P + sid_length
  pos = jnp.arange(T)
  key_ok = jnp.concatenate([prompt_mask, jnp.ones((b, sid_length), bool)], axis=1)  # [b, T]
  # Prompt keys are visible to all queries; a SID key only to itself and later SID queries
  # (a prompt query i < P never satisfies j <= i for a SID key j >= P).
  visible = (pos[None, :] < P) | (pos[None, :] <= pos[:, None])                      # [T, T]
  mask = visible[None] & key_ok[:, None, :]
  return (mask | jnp.eye(T, dtype=bool)[None])[:, None]


def _prefix_attention(attention: nnx.Module, x: jax.Array, prompt_k: jax.Array,
                      prompt_v: jax.Array, prompt_mask: jax.Array) -> jax.Array:
  """Self-attention of the beams' SID parts, with their users' prompt keys/values in front.

  Row r of `x` belongs to user r // B. The prompt scores are taken per user with the user's
  B beams stacked as one query sequence ([b, B*t, P]: never repeating the prompt per beam), the
  SID scores per beam ([b*B, t, t], causal); one softmax runs over their concatenation in
  float32, which is exactly attention over [prompt, SID part] with the prefix-LM mask.

  Shape: x [b*B, t, d] (normed), prompt_k / prompt_v [b, P, h, k], prompt_mask bool [b, P]
    -> [b*B, t, d].
  """
  bB, t, _ = x.shape
  b, P, h, hk = prompt_k.shape
  B = bB // b
  q, k, v = attention.query(x), attention.key(x), attention.value(x)    # [b*B, t, h, k]
  scale = hk ** -0.5                             # jax.nn.dot_product_attention's default
  neg = jnp.finfo(jnp.float32).min
  qu = q.reshape(b, B * t, h, hk)
  s_prompt = jnp.einsum("bqhk,bshk->bhqs", qu, prompt_k,
                        preferred_element_type=jnp.float32) * scale             # [b, h, B*t, P]
  s_prompt = jnp.where(prompt_mask[:, None, None, :], s_prompt, neg)
  s_prompt = s_prompt.reshape(b, h, B, t, P).transpose(0, 2, 1, 3, 4).reshape(bB, h, t, P)
  s_self = jnp.einsum("rqhk,rshk->rhqs", q, k,
                      preferred_element_type=jnp.float32) * scale               # [b*B, h, t, t]
  s_self = jnp.where(jnp.tril(jnp.ones((t, t), bool)), s_self, neg)
  probs = jax.nn.softmax(jnp.concatenate([s_prompt, s_self], axis=-1), axis=-1)
  p_prompt = probs[..., :P].reshape(b, B, h, t, P).astype(v.dtype)
  p_self = probs[..., P:].astype(v.dtype)
  ctx = (jnp.einsum("bjhqs,bshk->bjqhk", p_prompt, prompt_v).reshape(bB, t, h, hk)
         + jnp.einsum("rhqs,rshk->rqhk", p_self, v))
  return attention.out(ctx)


class DecoderOnly(nnx.Module):
  """TIGER's generative retrieval as one prefix-LM stack over [prompt, SID] tokens."""

  def __init__(self, cfg: DecoderOnlyConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    dtype = jnp.dtype(cfg.dtype)
    d, L = cfg.d_model, cfg.num_levels
    with sharding_scope():
      self.token_embedding = embedding(padded_rows(cfg.vocab_size), d, dtype=dtype, rngs=rngs)
      self.position = embedding(cfg.prompt_length + L, d, names=(None, "embed"), dtype=dtype,
                                rngs=rngs)
      self.layers = nnx.List([
          Block(d, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cross=False,
                activation=cfg.activation, dropout=cfg.dropout, dtype=dtype,
                attention_impl=cfg.attention_impl, rngs=rngs)
          for _ in range(cfg.num_layers)])
      self.final_norm = rms_norm(d, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

  def _check_prompt(self, tokens: jax.Array) -> None:
    P = tokens.shape[1]
    if P != self.config.prompt_length:
      raise ValueError(f"encoder tokens have length {P}, the model {self.config.prompt_length}")

  def _embed(self, tokens: jax.Array, start: int) -> jax.Array:
    """Token plus position embeddings. Shape: tokens int32 [b, t] -> [b, t, d]."""
    t = tokens.shape[1]
    x = self.token_embedding(tokens) + self.position(start + jnp.arange(t))[None]
    return self.dropout(x)

  def level_logits(self, hidden: jax.Array, level: int) -> jax.Array:
    """Logits over level `level`'s codes. Shape: [..., d] -> float32 [..., k_level]."""
    cfg = self.config
    return level_logits(hidden, self.token_embedding.embedding[...],
                        cfg.level_offsets[level], cfg.codebook_sizes[level])

  def __call__(self, encoder_tokens: jax.Array, encoder_mask: jax.Array,
               targets: jax.Array) -> list[jax.Array]:
    """Teacher-forced logits for every level.

    Shape: encoder_tokens int32 [b, P], encoder_mask bool [b, P], targets int32 [b, L]
      (token ids) -> list over levels c of float32 [b, k_c].
    """
    self._check_prompt(encoder_tokens)
    P, L = self.config.prompt_length, self.config.num_levels
    bos = jnp.full((targets.shape[0], 1), BOS, jnp.int32)
    tokens = jnp.concatenate([encoder_tokens.astype(jnp.int32), bos,
                              targets[:, :-1].astype(jnp.int32)], axis=1)     # [b, T]
    x = self._embed(tokens, 0)
    mask = prefix_lm_mask(encoder_mask, L)
    for layer in self.layers:
      x = layer(x, mask=mask)
    hidden = self.final_norm(x[:, P:])                                        # [b, L, d]
    return [self.level_logits(hidden[:, c], c) for c in range(L)]

  # -- beam search interface (lrm/decode/beam.py) ----------------------------------------------

  def init_decode(self, encoder_tokens: jax.Array, encoder_mask: jax.Array
                  ) -> tuple[jax.Array, tuple[tuple[jax.Array, ...], tuple[jax.Array, ...],
                                              jax.Array]]:
    """The beam search's initial state (SID-part tokens) and shared context: every layer's
    prompt keys and values, and the prompt mask.

    Shape: encoder_tokens int32 [b, P], encoder_mask bool [b, P] -> (int32 [b, L],
      (num_layers x [b, P, h, k], num_layers x [b, P, h, k], bool [b, P])).
    """
    self._check_prompt(encoder_tokens)
    x = self._embed(encoder_tokens.astype(jnp.int32), 0)
    mask = prefix_lm_mask(encoder_mask, 0)
    keys, values = [], []
    for layer in self.layers:
      # The same projections Block applies inside, taken out once so the SID steps reuse them
      # (two extra [b, P] projections per layer, once per user, against rerunning the prompt
      # for every beam at every level).
      normed = layer.self_norm(x)
      keys.append(layer.self_attention.key(normed))
      values.append(layer.self_attention.value(normed))
      x = layer(x, mask=mask)
    tokens = jnp.full((encoder_tokens.shape[0], self.config.num_levels), PAD, jnp.int32)
    return tokens.at[:, 0].set(BOS), (tuple(keys), tuple(values), encoder_mask)

  def decode_step(self, tokens: jax.Array, prev_codes: jax.Array, level: int,
                  context: tuple[tuple[jax.Array, ...], tuple[jax.Array, ...], jax.Array]
                  ) -> tuple[jax.Array, jax.Array]:
    """One beam-search step: log-probs of level `level`'s codes for every beam.

    Shape: tokens int32 [b*B, L] (SID-part inputs so far), prev_codes int32 [b*B] (level - 1's
      codes; ignored at level 0), context (prompt keys, values, mask from `init_decode`, with
      leading dim b) -> (float32 [b*B, k], tokens).
    """
    cfg = self.config
    if level > 0:
      tokens = tokens.at[:, level].set(prev_codes + cfg.level_offsets[level - 1])
    keys, values, prompt_mask = context
    x = self._embed(tokens[:, :level + 1], cfg.prompt_length)                 # [b*B, t, d]
    for layer, k, v in zip(self.layers, keys, values):
      # Block's residual structure, with the attention over [prompt K/V, own SID part].
      attn = _prefix_attention(layer.self_attention, layer.self_norm(x), k, v, prompt_mask)
      x = x + layer.dropout(attn)
      x = x + layer.dropout(layer.mlp(layer.mlp_norm(x)))
    hidden = self.final_norm(x[:, level])
    return jax.nn.log_softmax(self.level_logits(hidden, level)), tokens


# Cross-entropy per SID level, exactly the encoder-decoder's (lrm/models/sid_output.py).
decoder_only_loss = sid_loss
