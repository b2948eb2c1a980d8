"""TIGER: an encoder-decoder transformer that reads a history of SIDs and writes the next SID.

Rajput et al. 2023, "Recommender Systems with Generative Retrieval". The encoder reads a hashed
user token and the history's SID tokens (lrm/tasks/next_item.py `tokenize`); the decoder starts
from BOS and emits one code per SID level, cross-attending to the encoder. Defaults are TIGER's
size: 4 + 4 layers, 6 heads x 64, d_model 128, MLP 1024, dropout 0.1, ReLU.

The output layer is tied to the token embedding and restricted to one level's codes at each
decoder position, so position c is a softmax over level c's codebook: the model can only ever
emit a code of the right level, and beam search reads its per-level distribution directly.

Decoding (`encode` once per user, then `decode_step` per level) reruns the decoder on the few
tokens decoded so far (at most L + 1), cross-attending to the user's encoder output passed as
beam search's shared `context`, so the memory is never repeated per beam.

Shape letters: b batch, s encoder length, c SID level, L levels, d model width, k codes of a
level, B beams.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from flax import nnx

from lrm.models.layers import (Block, embedding, key_mask, level_logits, padded_rows, rms_norm,
                               sharding_scope)
from lrm.models.sid_output import check_config, hyperparameters, sid_loss
from lrm.tokens.sid_vocab import BOS, PAD, SIDVocab

# TIGER's published size (Rajput et al. 2023), also Seq2SeqConfig's defaults.
TIGER_SIZE = dict(d_model=128, num_heads=6, head_dim=64, mlp_dim=1024, encoder_layers=4,
                  decoder_layers=4, dropout=0.1)


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig:
  """Architecture of the encoder-decoder (fields settable as `model.<field>` in configs).

  `vocab_size`, `codebook_sizes`, `level_offsets` and `encoder_length` come from the data
  (`from_vocab`); the rest are hyperparameters.
  """
  vocab_size: int
  codebook_sizes: tuple[int, ...]
  level_offsets: tuple[int, ...]
  encoder_length: int
  d_model: int = 128
  num_heads: int = 6
  head_dim: int = 64
  mlp_dim: int = 1024
  encoder_layers: int = 4
  decoder_layers: int = 4
  dropout: float = 0.1
  activation: str = "relu"
  dtype: str = "float32"          # compute dtype; parameters stay float32
  attention_impl: str | None = None  # None: XLA's choice; "cudnn" for the fused GPU kernel

  def __post_init__(self):
    check_config(self, ("vocab_size", "encoder_length", "d_model", "num_heads", "head_dim",
                        "mlp_dim", "encoder_layers", "decoder_layers"))

  @property
  def num_levels(self) -> int:
    return len(self.codebook_sizes)

  @classmethod
  def from_vocab(cls, vocab: SIDVocab, *, max_history: int,
                 hyper: Mapping[str, Any] | None = None, where: str = "model") -> "Seq2SeqConfig":
    """The data-dependent fields from the vocabulary, the rest from `hyper` (a config section)."""
    hyper = hyperparameters(cls, hyper, ("vocab_size", "codebook_sizes", "level_offsets",
                                         "encoder_length"), where)
    return cls(vocab_size=vocab.size, codebook_sizes=vocab.codebook_sizes,
               level_offsets=vocab.level_offsets,
               encoder_length=1 + max_history * vocab.num_levels, **hyper)


class Seq2Seq(nnx.Module):
  """TIGER's encoder-decoder over SID tokens."""

  def __init__(self, cfg: Seq2SeqConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    dtype = jnp.dtype(cfg.dtype)
    d, L = cfg.d_model, cfg.num_levels
    block = lambda cross: Block(d, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cross=cross,
                                activation=cfg.activation, dropout=cfg.dropout, dtype=dtype,
                                attention_impl=cfg.attention_impl, rngs=rngs)
    with sharding_scope():
      self.token_embedding = embedding(padded_rows(cfg.vocab_size), d, dtype=dtype, rngs=rngs)
      self.encoder_position = embedding(cfg.encoder_length, d, names=(None, "embed"),
                                        dtype=dtype, rngs=rngs)
      self.decoder_position = embedding(L, d, names=(None, "embed"), dtype=dtype, rngs=rngs)
      self.encoder = nnx.List([block(False) for _ in range(cfg.encoder_layers)])
      self.encoder_norm = rms_norm(d, dtype=dtype, rngs=rngs)
      self.decoder = nnx.List([block(True) for _ in range(cfg.decoder_layers)])
      self.decoder_norm = rms_norm(d, dtype=dtype, rngs=rngs)
    self.dropout = nnx.Dropout(cfg.dropout, rngs=rngs)

  def encode(self, tokens: jax.Array, mask: jax.Array) -> jax.Array:
    """Shape: tokens int32 [b, s], mask bool [b, s] -> memory [b, s, d]."""
    s = tokens.shape[1]
    if s != self.config.encoder_length:
      raise ValueError(f"encoder tokens have length {s}, the model {self.config.encoder_length}")
    x = self.token_embedding(tokens) + self.encoder_position(jnp.arange(s))[None]
    x = self.dropout(x)
    attn_mask = key_mask(mask)
    for layer in self.encoder:
      x = layer(x, mask=attn_mask)
    return self.encoder_norm(x)

  def decode(self, decoder_tokens: jax.Array, memory: jax.Array,
             memory_mask: jax.Array) -> jax.Array:
    """Decoder hidden states, causal over the decoder tokens.

    Shape: decoder_tokens int32 [b, t] (BOS, then the codes' tokens), memory [b', s, d],
      memory_mask bool [b', s] with b = b' * B -> [b, t, d].
    """
    t = decoder_tokens.shape[1]
    x = self.token_embedding(decoder_tokens) + self.decoder_position(jnp.arange(t))[None]
    x = self.dropout(x)
    mem_mask = key_mask(memory_mask)
    for layer in self.decoder:
      x = layer(x, is_causal=True, memory=memory, memory_mask=mem_mask)
    return self.decoder_norm(x)

  def level_logits(self, hidden: jax.Array, level: int) -> jax.Array:
    """Logits over level `level`'s codes. Shape: [..., d] -> float32 [..., k_level]."""
    cfg = self.config
    return level_logits(hidden, self.token_embedding.embedding[...],
                        cfg.level_offsets[level], cfg.codebook_sizes[level])

  def __call__(self, encoder_tokens: jax.Array, encoder_mask: jax.Array,
               targets: jax.Array) -> list[jax.Array]:
    """Teacher-forced logits for every level.

    Shape: encoder_tokens int32 [b, s], encoder_mask bool [b, s], targets int32 [b, L]
      (token ids) -> list over levels c of float32 [b, k_c].
    """
    memory = self.encode(encoder_tokens, encoder_mask)
    bos = jnp.full((targets.shape[0], 1), BOS, jnp.int32)
    hidden = self.decode(jnp.concatenate([bos, targets[:, :-1]], axis=1), memory, encoder_mask)
    return [self.level_logits(hidden[:, c], c) for c in range(self.config.num_levels)]

  # -- beam search interface (lrm/decode/beam.py) ----------------------------------------------

  def init_decode(self, encoder_tokens: jax.Array,
                  encoder_mask: jax.Array) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """The beam search's initial state (decoder tokens) and shared context (memory, mask).

    Shape: encoder_tokens [b, s], encoder_mask [b, s] -> (int32 [b, L], ([b, s, d], [b, s])).
    """
    memory = self.encode(encoder_tokens, encoder_mask)
    tokens = jnp.full((encoder_tokens.shape[0], self.config.num_levels), PAD, jnp.int32)
    return tokens.at[:, 0].set(BOS), (memory, encoder_mask)

  def decode_step(self, tokens: jax.Array, prev_codes: jax.Array, level: int,
                  context: tuple[jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array]:
    """One beam-search step: log-probs of level `level`'s codes for every beam.

    Shape: tokens int32 [b*B, L] (decoder inputs so far), prev_codes int32 [b*B] (level - 1's
      codes; ignored at level 0), context ([b, s, d], [b, s]) -> (float32 [b*B, k], tokens).
    """
    cfg = self.config
    if level > 0:
      tokens = tokens.at[:, level].set(prev_codes + cfg.level_offsets[level - 1])
    memory, memory_mask = context
    hidden = self.decode(tokens[:, :level + 1], memory, memory_mask)
    return jax.nn.log_softmax(self.level_logits(hidden[:, level], level)), tokens


# The encoder-decoder's loss: cross-entropy per SID level (shared with the decoder-only model).
seq2seq_loss = sid_loss
