"""Contrastive fine-tuning of the sentence encoder into a small behaviour-aware embedding (FLUID).

The Flax BERT port (bert.py) with mean pooling, plus a linear projection to `dim` (FLUID: 128)
and an L2 norm, is trained with an in-batch InfoNCE loss on (query, item) pairs (pairs.py):

  loss = mean_i [ logsumexp_{j not masked} (q_i . k_j / t) - q_i . k_i / t ]

with **false-negative masking**: in-batch items that are the same item as i's positive, or
known positives of query i, leave i's denominator (they are not negatives). Training has two
stages, as in FLUID: `align` trains the projection alone (the encoder's weights cannot move: the
optimizer and the gradient only see the projection), then `joint` trains everything at a lower
learning rate.

Texts are tokenized once, padded to one length (one compiled shape). A fine-tuned encoder is
saved as a folder that is both a Hugging Face BERT folder (the fine-tuned encoder, loadable by
`SentenceEncoder`) and `projection.npz` + `finetune.json`; `load_finetuned` gives back an
encoder that embeds identically (`FinetunedEncoder`, the `Encoder` protocol of this package).

Shape letters: b batch, l length, d hidden, e output dim (`dim`), n texts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import math
import os
import pathlib
import shutil
from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from safetensors.numpy import save_file
from tqdm.auto import tqdm

from lrm.core import artifacts
from lrm.core.config import dataclass_from_dict
from lrm.core.errors import ConfigError, DataError
from lrm.core.train_step import make_train_step
from lrm.encoders import bert
from lrm.encoders.pairs import PairSet, false_negative_mask, sample_batches
from lrm.encoders.sentence import SentenceEncoder

STAGE = "finetuned_encoder"
STAGES = ("align", "joint")
PROJECTION_FILE = "projection.npz"
META_FILE = "finetune.json"
# Files of the base folder the fine-tuned folder keeps (tokenizer, pooling, architecture).
_COPIED = ("config.json", "tokenizer.json", "sentence_bert_config.json", "modules.json",
           "1_Pooling")


@dataclasses.dataclass(frozen=True)
class ContrastiveConfig:
  """Options of contrastive fine-tuning; validated on construction (ConfigError names the field)."""
  # Output embedding dimension (FLUID: 128).
  dim: int = 128
  # InfoNCE temperature.
  temperature: float = 0.05
  # Pairs per step (in-batch negatives: batch_size - 1 per query, minus masked ones).
  batch_size: int = 64
  # Tokens per text (texts are truncated / padded to this: one compiled shape).
  max_seq_length: int = 64
  # Stage one: the projection alone.
  align_steps: int = 200
  align_learning_rate: float = 1e-3
  # Stage two: encoder and projection together, at a lower learning rate.
  joint_steps: int = 200
  joint_learning_rate: float = 2e-5
  weight_decay: float = 0.01
  # Mask in-batch false negatives (duplicates and known positives of the query).
  false_negative_masking: bool = True
  seed: int = 0

  def __post_init__(self):
    for name in ("dim", "batch_size", "max_seq_length"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ConfigError(name, f"must be an integer >= 1, got {v!r}")
    if self.batch_size < 2:
      raise ConfigError("batch_size", "needs at least 2 pairs (in-batch negatives)")
    for name in ("align_steps", "joint_steps"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
        raise ConfigError(name, f"must be an integer >= 0, got {v!r}")
    for name in ("temperature", "align_learning_rate", "joint_learning_rate"):
      v = getattr(self, name)
      if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        raise ConfigError(name, f"must be a finite number > 0, got {v!r}")
    if not isinstance(self.weight_decay, (int, float)) or self.weight_decay < 0:
      raise ConfigError("weight_decay", f"must be >= 0, got {self.weight_decay!r}")
    if not isinstance(self.false_negative_masking, bool):
      raise ConfigError("false_negative_masking", "must be true or false")

  def to_dict(self) -> dict[str, Any]:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, values: Mapping[str, Any]) -> "ContrastiveConfig":
    return dataclass_from_dict(cls, values, "finetune")


# ----------------------------------------------------------------------------------- model


def _mean_pool(hidden: jax.Array, mask: jax.Array) -> jax.Array:
  """Shape: hidden [b, l, d], mask [b, l] -> float32 [b, d] (mean over real tokens)."""
  m = mask.astype(jnp.float32)[..., None]
  return (hidden.astype(jnp.float32) * m).sum(1) / jnp.maximum(m.sum(1), 1e-9)


def _normalise(x: jax.Array) -> jax.Array:
  return x / jnp.maximum(jnp.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class ContrastiveEncoder(nnx.Module):
  """BERT -> mean pooling -> linear projection to `dim` -> L2 norm."""

  def __init__(self, encoder: bert.BertModel, dim: int, *, rngs: nnx.Rngs):
    self.bert = encoder
    d = encoder.config.hidden_size
    # Annotated params are sharded eagerly only under a mesh; without one they stay plain.
    eager = (nnx.use_eager_sharding(False) if jax.sharding.get_abstract_mesh().empty
             else contextlib.nullcontext())
    with eager:
      self.projection = nnx.Linear(
          d, dim, rngs=rngs,
          kernel_init=nnx.with_partitioning(nnx.initializers.lecun_normal(), ("embed", None)),
          bias_init=nnx.with_partitioning(nnx.initializers.zeros_init(), (None,)))

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array) -> jax.Array:
    """Shape: input_ids, attention_mask int32 [b, l] -> float32 [b, e], unit rows."""
    pooled = _mean_pool(self.bert(input_ids, attention_mask), attention_mask)
    return _normalise(self.projection(pooled))


def projection_only() -> nnx.filterlib.Filter:
  """The parameters stage one trains."""
  return nnx.All(nnx.Param, nnx.PathContains("projection"))


# ------------------------------------------------------------------------------------ loss


def info_nce(queries: jax.Array, items: jax.Array, temperature: float,
             mask: jax.Array | None = None) -> jax.Array:
  """In-batch InfoNCE, query i's positive is item i; `mask[i, j]` drops item j from i's
  denominator (false negatives). The diagonal must not be masked.

  Shape: queries, items [b, e]; mask bool [b, b] or None -> scalar.
  """
  logits = jnp.dot(queries, items.T, precision=jax.lax.Precision.HIGHEST) / temperature
  return info_nce_from_logits(logits, mask)


def info_nce_from_logits(logits: jax.Array, mask: jax.Array | None = None) -> jax.Array:
  """InfoNCE from any similarity logits: row i's positive is column i; `mask[i, j]` drops
  column j from row i's denominator. The diagonal must not be masked.

  Shape: logits [b, b]; mask bool [b, b] or None -> scalar.
  """
  if mask is not None:
    logits = jnp.where(mask, -jnp.inf, logits)
  return jnp.mean(jax.nn.logsumexp(logits, axis=1) - jnp.diagonal(logits))


# ------------------------------------------------------------------------------- tokenizing


def tokenize_padded(tokenizer: Any, texts: Sequence[str], length: int
                    ) -> tuple[np.ndarray, np.ndarray]:
  """Token ids padded / truncated to `length` (a tokenizer with `tokenize(texts)` -> id lists,
  e.g. a SentenceEncoder; special tokens kept).

  Shape: -> input_ids int32 [n, length], attention_mask int32 [n, length].
  """
  ids = tokenizer.tokenize(list(texts))
  out = np.zeros((len(ids), length), np.int32)
  mask = np.zeros((len(ids), length), np.int32)
  for r, row in enumerate(ids):
    row = row[:length - 1] + row[-1:] if len(row) > length else row  # keep [SEP] last
    out[r, :len(row)] = row
    mask[r, :len(row)] = 1
  return out, mask


# -------------------------------------------------------------------------------- training


def _pair_loss(model: ContrastiveEncoder, q_ids, q_mask, i_ids, i_mask, fn_mask, *,
               temperature: float):
  loss = info_nce(model(q_ids, q_mask), model(i_ids, i_mask), temperature, fn_mask)
  return loss, ()


@functools.cache
def _train_step(temperature: float, trainable: Any):
  """The jitted update of one stage (compiled once per temperature and trainable filter)."""
  return make_train_step(functools.partial(_pair_loss, temperature=temperature), wrt=trainable)


def make_optimizer(model: ContrastiveEncoder, learning_rate: float, weight_decay: float,
                   trainable: Any) -> nnx.Optimizer:
  """AdamW over `trainable` only; no decay on 1-d parameters (biases, norms)."""
  tx = optax.adamw(learning_rate, weight_decay=weight_decay,
                   mask=lambda params: jax.tree.map(lambda p: p.ndim > 1, params))
  return nnx.Optimizer(model, tx, wrt=trainable)


@dataclasses.dataclass(frozen=True, eq=False)
class PairTokens:
  """The tokenized texts pairs refer to: query texts by query id, item texts by catalog row."""
  query_ids: np.ndarray   # int32 [q, l]
  query_mask: np.ndarray  # int32 [q, l]
  item_ids: np.ndarray    # int32 [n, l]
  item_mask: np.ndarray   # int32 [n, l]


def tokenize_pairs(tokenizer: Any, pairs: PairSet, item_texts: Sequence[str],
                   length: int) -> PairTokens:
  if len(item_texts) != pairs.num_items:
    raise DataError(f"{len(item_texts)} item texts for pairs over {pairs.num_items} items")
  q_ids, q_mask = tokenize_padded(tokenizer, pairs.query_texts, length)
  i_ids, i_mask = tokenize_padded(tokenizer, item_texts, length)
  return PairTokens(q_ids, q_mask, i_ids, i_mask)


def train_stage(model: ContrastiveEncoder, pairs: PairSet, tokens: PairTokens,
                cfg: ContrastiveConfig, stage: str, *, show_progress: bool = False,
                on_step: Callable[[int, float], None] | None = None) -> np.ndarray:
  """Runs one stage (`align`: projection only; `joint`: everything) in place.

  Returns the per-step losses (float32 [steps]).
  """
  if stage not in STAGES:
    raise ConfigError("stage", f"must be one of {STAGES}, got {stage!r}")
  steps = cfg.align_steps if stage == "align" else cfg.joint_steps
  lr = cfg.align_learning_rate if stage == "align" else cfg.joint_learning_rate
  trainable = projection_only() if stage == "align" else nnx.Param
  if steps == 0:
    return np.zeros(0, np.float32)
  batch = min(cfg.batch_size, len(pairs))
  if batch < 2:
    raise DataError(f"{len(pairs)} pairs: contrastive training needs at least 2")
  opt = make_optimizer(model, lr, cfg.weight_decay, trainable)
  update = nnx.cached_partial(_train_step(float(cfg.temperature), trainable), model, opt)
  batches = sample_batches(pairs, batch, seed=cfg.seed * 2 + STAGES.index(stage))
  losses = []
  for step in tqdm(range(steps), desc=f"finetune {stage}", disable=not show_progress,
                   leave=False):
    idx = next(batches)
    q, it = pairs.query[idx], pairs.item[idx]
    if cfg.false_negative_masking:
      fn = false_negative_mask(q, it, pairs.positive_keys, pairs.num_items,
                               pairs.query_item[q])
    else:
      fn = np.zeros((batch, batch), bool)
    loss, _ = update(jnp.asarray(tokens.query_ids[q]), jnp.asarray(tokens.query_mask[q]),
                     jnp.asarray(tokens.item_ids[it]), jnp.asarray(tokens.item_mask[it]),
                     jnp.asarray(fn))
    losses.append(loss)
    if on_step is not None:
      on_step(step, float(loss))
  out = np.asarray(jax.device_get(jnp.stack(losses)), np.float32)
  if not np.isfinite(out).all():
    raise DataError(f"contrastive {stage} stage diverged (non-finite loss)")
  return out


@nnx.jit
def _embed(model: ContrastiveEncoder, ids: jax.Array, mask: jax.Array) -> jax.Array:
  return model(ids, mask)


def embed_tokens(model: ContrastiveEncoder, ids: np.ndarray, mask: np.ndarray, *,
                 chunk_size: int = 256) -> np.ndarray:
  """Embeddings of pre-tokenized texts in fixed-size chunks (one compile).

  Shape: ids, mask int32 [n, l] -> float32 [n, e].
  """
  n = ids.shape[0]
  chunk = max(1, min(chunk_size, n))
  outs = []
  for start in range(0, n, chunk):
    a, m = ids[start:start + chunk], mask[start:start + chunk]
    k = a.shape[0]
    if k < chunk:  # pad the last chunk with copies of its last row
      a = np.concatenate([a, np.repeat(a[-1:], chunk - k, 0)])
      m = np.concatenate([m, np.repeat(m[-1:], chunk - k, 0)])
    outs.append(np.asarray(_embed(model, jnp.asarray(a), jnp.asarray(m)))[:k])
  return np.concatenate(outs).astype(np.float32) if outs else np.zeros((0, model.projection
                                                                        .out_features), np.float32)


# ---------------------------------------------------------------------- building / saving


def build(base_dir: str | os.PathLike, cfg: ContrastiveConfig, *, max_seq_length: int | None
          = None) -> tuple[ContrastiveEncoder, Any]:
  """The base encoder's weights plus a fresh projection (seeded), and its tokenizer.

  Returns (model, tokenizer) where the tokenizer is the base folder's `SentenceEncoder`
  (used for `tokenize` only).
  """
  base_dir = pathlib.Path(base_dir)
  tokenizer = SentenceEncoder(base_dir, max_seq_length=max_seq_length or cfg.max_seq_length)
  if tokenizer.pooling != "mean":
    raise ConfigError("pooling", f"{base_dir}: contrastive fine-tuning uses mean pooling, the "
                      f"folder says {tokenizer.pooling!r}")
  model = ContrastiveEncoder(bert.load_bert(base_dir), cfg.dim,
                             rngs=nnx.Rngs(params=jax.random.key(cfg.seed)))
  return model, tokenizer


def _nnx_to_hf(model: bert.BertModel) -> dict[str, np.ndarray]:
  """The BERT weights under Hugging Face names and layouts (inverse of `hf_tensor_layout`).

  Each converter is a transpose / reshape, so applying it to an index array tells where every
  NNX entry comes from in the HF tensor.
  """
  flat = {path: np.asarray(jax.device_get(v[...]), np.float32)
          for path, v in nnx.to_flat_state(nnx.state(model, nnx.Param))}
  out = {}
  for name, (path, shape, convert) in bert.hf_tensor_layout(model.config).items():
    index = convert(np.arange(int(np.prod(shape))).reshape(shape))
    hf = np.empty(int(np.prod(shape)), np.float32)
    hf[np.asarray(index).ravel()] = flat[path].ravel()
    out[name] = hf.reshape(shape)
  return out


def save_finetuned(model: ContrastiveEncoder, base_dir: str | os.PathLike,
                   out_dir: str | os.PathLike, *, cfg: ContrastiveConfig,
                   history: Mapping[str, Any] | None = None) -> pathlib.Path:
  """Writes OUT: the base folder's tokenizer and config, the fine-tuned BERT as
  model.safetensors, projection.npz, finetune.json and manifest.json (last)."""
  base_dir, out_dir = pathlib.Path(base_dir), pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  (out_dir / artifacts.MANIFEST).unlink(missing_ok=True)
  for name in _COPIED:
    src = base_dir / name
    if src.is_dir():
      shutil.copytree(src, out_dir / name, dirs_exist_ok=True)
    elif src.is_file():
      shutil.copy2(src, out_dir / name)
  save_file(_nnx_to_hf(model.bert), str(out_dir / "model.safetensors"))
  kernel = np.asarray(jax.device_get(model.projection.kernel[...]), np.float32)
  bias = np.asarray(jax.device_get(model.projection.bias[...]), np.float32)
  buf = io.BytesIO()
  np.savez(buf, kernel=kernel, bias=bias)
  artifacts.atomic_write_bytes(out_dir / PROJECTION_FILE, buf.getvalue())
  artifacts.atomic_write_json(out_dir / META_FILE, {"config": cfg.to_dict(),
                                                     "base": str(base_dir.resolve())})
  artifacts.write_manifest(out_dir, stage=STAGE, config=cfg.to_dict(),
                           counts={"dim": int(kernel.shape[1]),
                                   "hidden": int(kernel.shape[0])},
                           history={k: (np.asarray(v).tolist() if hasattr(v, "__len__") else v)
                                    for k, v in (history or {}).items()})
  return out_dir


class FinetunedEncoder:
  """A fine-tuned encoder read back from `save_finetuned`'s folder (the `Encoder` protocol)."""

  def __init__(self, model: ContrastiveEncoder, tokenizer: Any, cfg: ContrastiveConfig,
               path: pathlib.Path):
    self.model, self.tokenizer, self.config, self.path = model, tokenizer, cfg, path
    self.name = path.name

  @property
  def dim(self) -> int:
    return int(self.model.projection.out_features)

  def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
             show_progress: bool = False) -> np.ndarray:
    """Shape: -> float32 [n, dim], unit rows, input order."""
    del show_progress
    ids, mask = tokenize_padded(self.tokenizer, texts, self.config.max_seq_length)
    return embed_tokens(self.model, ids, mask, chunk_size=batch_size or 256)

  def describe(self) -> dict[str, Any]:
    return {"kind": "contrastive", "name": self.name, "path": str(self.path.resolve()),
            "dims": self.dim, "max_seq_length": self.config.max_seq_length,
            "base": self.tokenizer.describe()}


def load_finetuned(path: str | os.PathLike) -> FinetunedEncoder:
  """Reads a folder `save_finetuned` wrote; embeds exactly as the saved model did."""
  path = pathlib.Path(path)
  manifest = artifacts.read_manifest(path)
  if manifest.get("stage") != STAGE:
    raise DataError(f"not a fine-tuned encoder (stage {manifest.get('stage')!r})",
                    path=path / artifacts.MANIFEST)
  cfg = ContrastiveConfig.from_dict(json.loads((path / META_FILE).read_text())["config"])
  tokenizer = SentenceEncoder(path, max_seq_length=cfg.max_seq_length)
  model = ContrastiveEncoder(bert.load_bert(path), cfg.dim, rngs=nnx.Rngs(0))
  with np.load(path / PROJECTION_FILE) as f:
    kernel, bias = f["kernel"], f["bias"]
  if kernel.shape != (tokenizer.config.hidden_size, cfg.dim):
    raise DataError(f"projection kernel has shape {kernel.shape}, expected "
                    f"{(tokenizer.config.hidden_size, cfg.dim)}", path=path / PROJECTION_FILE)
  model.projection.kernel[...] = jnp.asarray(kernel)
  model.projection.bias[...] = jnp.asarray(bias)
  return FinetunedEncoder(model, tokenizer, cfg, path)


def param_arrays(model: nnx.Module, filter_: Any = nnx.Param) -> dict[str, np.ndarray]:
  """Host copies of the parameters (path -> array), e.g. to check which ones moved."""
  return {"/".join(map(str, p)): np.array(jax.device_get(v[...]))
          for p, v in nnx.to_flat_state(nnx.state(model, filter_))}
