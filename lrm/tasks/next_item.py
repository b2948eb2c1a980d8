"""Next-item examples for generative retrieval (TIGER's protocol) and their Grain pipeline.

Training examples come from every prefix of each user's training part (leave-one-out's `train`,
so validation and test items never leak in): the item at position t is the target, the up to
`max_history` items before it the history. Evaluation examples come from an `EvalSet`.

Tokenised for a seq2seq model (static shapes):
  encoder_tokens  int32 [H * L + 1]  user token, then the history's SID tokens, oldest first,
                                     left-padded with PAD so the most recent item is last
  encoder_mask    bool  [H * L + 1]
  targets         int32 [L]          the next item's SID tokens
  target_item     int32 []           the next item's catalog row (for ID models and metrics)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import grain
import numpy as np

from lrm.core.errors import ConfigError
from lrm.data.splits import EvalSet
from lrm.data.types import Catalog, Sequences
from lrm.sid.table import SIDTable
from lrm.tokens.sid_vocab import PAD, SIDVocab


@dataclasses.dataclass(frozen=True, eq=False)
class NextItemExamples:
  """Histories and targets as catalog rows.

  Attributes:
    user_ids: int64 [m]
    history: int32 [m, H] catalog rows, oldest first, left-padded with -1.
    target: int32 [m] catalog row of the item to predict.
  """
  user_ids: np.ndarray
  history: np.ndarray
  target: np.ndarray

  def __len__(self) -> int:
    return len(self.target)


def _left_padded_windows(rows: np.ndarray, offsets: np.ndarray, ends: np.ndarray,
                         max_history: int) -> np.ndarray:
  """For each end position e (exclusive) in user u's span, the up-to-H rows before it.

  Shape: rows [n]; offsets [m] (the start of each example's user); ends [m] -> [m, H].
  """
  h = np.arange(max_history)[None, :] - max_history + ends[:, None]   # positions e-H .. e-1
  valid = h >= offsets[:, None]
  return np.where(valid, rows[np.clip(h, 0, max(len(rows) - 1, 0))], -1).astype(np.int32)


def training_examples(train: Sequences, catalog: Catalog, *,
                      max_history: int = 20) -> NextItemExamples:
  """One example per position t >= 1 of every user's training sequence."""
  if max_history < 1:
    raise ConfigError("max_history", f"must be >= 1, got {max_history}")
  rows = catalog.rows(train.items)
  user_of_event = np.repeat(np.arange(len(train)), train.lengths)
  starts = train.offsets[user_of_event]
  position = np.arange(train.num_events)
  keep = position > starts                          # the first event has no history
  ends = position[keep]
  return NextItemExamples(
      user_ids=train.user_ids[user_of_event[keep]],
      history=_left_padded_windows(rows, starts[keep], ends, max_history),
      target=rows[keep].astype(np.int32))


def eval_examples(eval_set: EvalSet, catalog: Catalog, *,
                  max_history: int = 20) -> NextItemExamples:
  """One example per user of a validation or test set (history = all before the target)."""
  hist = eval_set.histories
  rows = catalog.rows(hist.items)
  return NextItemExamples(
      user_ids=np.asarray(eval_set.user_ids),
      history=_left_padded_windows(rows, hist.offsets[:-1], hist.offsets[1:], max_history),
      target=catalog.rows(eval_set.targets).astype(np.int32))


def tokenize(examples: NextItemExamples, table: SIDTable, vocab: SIDVocab) -> dict[str, np.ndarray]:
  """Token arrays for a seq2seq model (see the module docstring). Rows follow `examples`."""
  codes = table.full_codes
  if codes.shape[1] != vocab.num_levels:
    raise ConfigError("vocab", f"has {vocab.num_levels} levels, the SID table {codes.shape[1]}")
  item_tokens = vocab.encode_codes(codes)                              # [items, L]
  m, h = examples.history.shape
  hist = np.where(examples.history[..., None] >= 0,
                  item_tokens[np.maximum(examples.history, 0)], PAD)   # [m, H, L]
  encoder = np.concatenate([vocab.user_tokens(examples.user_ids)[:, None],
                            hist.reshape(m, h * vocab.num_levels)], axis=1).astype(np.int32)
  return {"encoder_tokens": encoder, "encoder_mask": encoder != PAD,
          "targets": item_tokens[examples.target], "target_item": examples.target.copy()}


class ArraySource:
  """A Grain random-access source over a dict of equally long arrays (one record per row)."""

  def __init__(self, arrays: dict[str, np.ndarray]):
    lengths = {len(v) for v in arrays.values()}
    if len(lengths) != 1:
      raise ConfigError("arrays", f"arrays of different lengths {sorted(lengths)}")
    self._arrays = arrays
    self._len = lengths.pop()

  def __len__(self) -> int:
    return self._len

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    return {k: v[index] for k, v in self._arrays.items()}


class _ProcessRows:
  """Row j of process p's stream: row p * b + (j mod b) of global batch j // b (b = B / P).

  Every process draws from the same shuffled stream, so the global batch (the processes' rows
  side by side) is exactly the batch one process would draw alone, at any process count.
  """

  def __init__(self, rows: Any, batch_size: int, process_index: int, process_count: int):
    self.rows = rows
    self.batch_size = batch_size
    self.local = batch_size // process_count
    self.offset = process_index * self.local

  def __call__(self, j: int) -> dict[str, np.ndarray]:
    batch, row = divmod(int(j), self.local)
    return self.rows[batch * self.batch_size + self.offset + row]


def train_iterator(arrays: dict[str, np.ndarray], *, batch_size: int, seed: int,
                   num_epochs: int | None = None, worker_count: int = 0,
                   process_index: int = 0, process_count: int = 1) -> Any:
  """A deterministic, resumable Grain iterator of shuffled full batches.

  Each epoch is reshuffled from `seed`; `num_epochs=None` repeats forever. The iterator's
  `get_state()` / `set_state()` resume exactly (Orbax saves it with the model). In a
  multi-process job each process gets its `batch_size / process_count` rows of every global
  batch (`jax.make_array_from_process_local_data` puts them together), the same global
  batches as a single process.
  """
  if batch_size < 1:
    raise ConfigError("batch_size", f"must be >= 1, got {batch_size}")
  if process_count < 1 or batch_size % process_count:
    raise ConfigError("train.batch_size", f"{batch_size} does not split evenly over "
                      f"{process_count} processes")
  if not 0 <= process_index < process_count:
    raise ConfigError("process_index", f"must be in [0, {process_count}), got {process_index}")
  rows = grain.MapDataset.source(ArraySource(arrays)).shuffle(seed=seed).repeat(num_epochs)
  if process_count > 1:
    local = batch_size // process_count
    rows = (grain.MapDataset.range(len(rows) // batch_size * local)
            .map(_ProcessRows(rows, batch_size, process_index, process_count)))
    batch_size = local
  it = rows.batch(batch_size, drop_remainder=True).to_iter_dataset()
  if worker_count > 0:
    it = it.mp_prefetch(grain.MultiprocessingOptions(num_workers=worker_count))
  return iter(it)
