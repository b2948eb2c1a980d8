"""What every model that reads SID tokens and writes one code per level shares: the checks of
its config, the split of data-dependent and hyperparameter fields, and its loss.

Such a model returns teacher-forced logits as a list over levels (level c: float32 [b, k_c],
a softmax over that level's codes only), so one loss serves the encoder-decoder
(lrm/models/tiger.py) and the decoder-only model (lrm/models/decoder_only.py).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import optax

from lrm.core.errors import ConfigError

DTYPES = ("float32", "bfloat16")
ACTIVATIONS = ("relu", "gelu")


def check_config(cfg: Any, positive_fields: Sequence[str]) -> None:
  """Validates (and normalises the code tuples of) a frozen SID-model config dataclass.

  Errors name the field as `model.<field>`.
  """
  for name in positive_fields:
    value = getattr(cfg, name)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
      raise ConfigError(f"model.{name}", f"must be a positive integer, got {value!r}")
  object.__setattr__(cfg, "codebook_sizes", tuple(int(k) for k in cfg.codebook_sizes))
  object.__setattr__(cfg, "level_offsets", tuple(int(k) for k in cfg.level_offsets))
  if len(cfg.codebook_sizes) != len(cfg.level_offsets) or not cfg.codebook_sizes:
    raise ConfigError("model.codebook_sizes", "need one size and one offset per level")
  if min(cfg.codebook_sizes) < 1:
    raise ConfigError("model.codebook_sizes", f"need positive sizes, got {cfg.codebook_sizes}")
  if max(o + k for o, k in zip(cfg.level_offsets, cfg.codebook_sizes)) > cfg.vocab_size:
    raise ConfigError("model.vocab_size", f"{cfg.vocab_size} is too small for the levels")
  if not 0.0 <= cfg.dropout < 1.0:
    raise ConfigError("model.dropout", f"must lie in [0, 1), got {cfg.dropout}")
  if cfg.activation not in ACTIVATIONS:
    raise ConfigError("model.activation", f"'{cfg.activation}' is not relu or gelu")
  if cfg.dtype not in DTYPES:
    raise ConfigError("model.dtype", f"'{cfg.dtype}' is not one of {DTYPES}")


def hyperparameters(cls: type, hyper: Mapping[str, Any] | None, data_fields: Sequence[str],
                    where: str) -> dict[str, Any]:
  """The config section `hyper` as keyword arguments of `cls`; a field that is not one of
  its hyperparameters (data-dependent fields included) is an error naming `where.field`."""
  hyper = dict(hyper or {})
  known = {f.name for f in dataclasses.fields(cls)} - set(data_fields)
  unknown = sorted(set(hyper) - known)
  if unknown:
    raise ConfigError(f"{where}.{unknown[0]}", f"is not a field of the model "
                      f"(known: {', '.join(sorted(known))})")
  return hyper


def sid_loss(model: Any, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict]:
  """Mean cross-entropy over SID levels (every target is a real item, so no padding mask).

  Also reports per-level accuracy and the share of examples whose whole SID is predicted
  greedily right (teacher-forced).

  Shape: batch["encoder_tokens"] int32 [b, s], batch["encoder_mask"] bool [b, s],
    batch["targets"] int32 [b, L] token ids.
  """
  targets = batch["targets"]
  logits = model(batch["encoder_tokens"], batch["encoder_mask"], targets)
  offsets = model.config.level_offsets
  losses, hits = [], []
  for c, level in enumerate(logits):
    codes = targets[:, c] - offsets[c]
    losses.append(optax.softmax_cross_entropy_with_integer_labels(level, codes))
    hits.append(jnp.argmax(level, axis=-1) == codes)
  loss = jnp.mean(jnp.stack(losses))
  aux = {"loss": loss, "sid_accuracy": jnp.mean(jnp.all(jnp.stack(hits), axis=0))}
  for c, h in enumerate(hits):
    aux[f"accuracy_level{c}"] = jnp.mean(h)
  return loss, aux
