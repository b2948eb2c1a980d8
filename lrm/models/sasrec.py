"""SASRec (Kang & McAuley, 2018): a causal transformer over item ids, the ID-based baseline.

Trained here with cross-entropy over all items (full softmax) rather than the paper's one
sampled negative per position: it is the stronger, now-standard recipe (gSASRec / eSASRec
papers), and it scores the whole catalog exactly as the evaluation does.

Inputs use lrm.tasks.id_sequences' encoding: catalog row + 1, 0 = padding, left-padded so the
most recent item is the last position. The output layer is tied to the item embedding (rows
1 .. num_items, so padding can never be predicted; the table is padded at the end to a multiple
of ROW_MULTIPLE rows for sharding).

Differences from the paper, each deliberate: pre-norm blocks with RMSNorm (the trunk RPG shares,
lrm/models/windowed.py), no biases, GELU by default; positions are counted from the END of the
sequence (the most recent item is position 0), so a history's prediction does not depend on
how much left padding it carries or on the window length.

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
from lrm.models.layers import embedding, level_logits, sharding_scope
from lrm.models.windowed import DTYPES, WindowedTrunk, check_trunk_config, compact_targets

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
  dropout: float = 0.2             # on attention / MLP outputs (paper: 0.2-0.5)
  embed_dropout: float | None = None  # on the input embeddings (None: `dropout`)
  attention_dropout: float = 0.0   # on the attention probabilities (> 0: unfused attention)
  activation: str = "gelu"         # "gelu" or "relu" (the paper's)
  dtype: str = "float32"           # compute dtype: "float32" or "bfloat16"; params stay float32
  attention_impl: str | None = None  # jax.nn.dot_product_attention's implementation

  def __post_init__(self):
    check_trunk_config(self)

  @classmethod
  def from_dict(cls, d: Mapping[str, Any] | Any, where: str = "model") -> "SASRecConfig":
    """From a mapping or ConfigDict; errors name `where.field`, unknown keys included."""
    return dataclass_from_dict(cls, d, where, required=("num_items",))


class SASRec(WindowedTrunk):
  """Item + positional embeddings, `num_layers` causal pre-norm blocks, a final RMSNorm."""

  def __init__(self, cfg: SASRecConfig, *, rngs: nnx.Rngs):
    self.config = cfg
    with sharding_scope():
      rows = -(-(cfg.num_items + 1) // ROW_MULTIPLE) * ROW_MULTIPLE
      self.item_embed = embedding(rows, cfg.d_model, dtype=DTYPES[cfg.dtype], rngs=rngs)
      self.init_trunk(cfg, rngs=rngs)

  def __call__(self, inputs: jax.Array) -> jax.Array:
    """Hidden states; position t summarises items up to t (the next item's query).

    Shape: inputs int [b, l] (l <= max_length, 0 = padding, left-padded) -> [b, l, d].
    """
    self.check_window(inputs)
    # Scaled by sqrt(d) as in the paper (and the Transformer), so items outweigh positions.
    return self.run_trunk(self.item_embed(inputs) * self.config.d_model ** 0.5, inputs > 0)

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
  hidden, targets, total = compact_targets(model(batch["inputs"]), batch["targets"],
                                           max_targets)
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
