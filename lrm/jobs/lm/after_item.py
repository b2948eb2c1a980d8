"""PLUM's offline "after this item" table: the LM's top-K next items after each head item."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import numpy as np

from lrm.core import artifacts
from lrm.core.errors import DataError
from lrm.data.splits import EvalSet
from lrm.data.types import Sequences
from lrm.eval.metrics import most_popular_ranking
from lrm.jobs.lm.metrics import decode_sids
from lrm.jobs.lm.prepare import LMPrepared
from lrm.tasks.lm_tasks import next_prompts

AFTER_ITEM_NPZ = "after_item.npz"


class UnknownItemError(KeyError):
  """An item id the table has no row for (KeyError, with a readable message)."""

  def __str__(self) -> str:
    return str(self.args[0]) if self.args else ""


@dataclasses.dataclass(frozen=True, eq=False)
class AfterItemTable:
  """Unpersonalised "after this item" recommendations for head items (PLUM's offline table).

  Attributes:
    item_ids: int64 [n] the items with a row (the most popular, most first).
    recommended: int64 [n, K] items to show after each, best first (-1 padding).
    scores: float32 [n, K] their log-probabilities under the one-item prompt.
  """
  item_ids: np.ndarray
  recommended: np.ndarray
  scores: np.ndarray

  @property
  def top_k(self) -> int:
    return int(self.recommended.shape[1])

  def lookup(self, item_id: int) -> list[tuple[int, float]]:
    """[(item id, score), ...] best first; UnknownItemError for an item without a row."""
    hit = np.flatnonzero(self.item_ids == int(item_id))
    if not len(hit):
      raise UnknownItemError(f"item {item_id} is not in the after-item table (it holds the "
                             f"{len(self.item_ids)} most popular items)")
    r = int(hit[0])
    keep = self.recommended[r] >= 0
    return [(int(i), float(s)) for i, s in zip(self.recommended[r][keep], self.scores[r][keep])]

  def save(self, directory: str | pathlib.Path, *, config: Any = None,
           inputs: Any = None) -> None:
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / artifacts.MANIFEST).unlink(missing_ok=True)
    with artifacts.atomic_path(directory / AFTER_ITEM_NPZ) as tmp:
      with open(tmp, "wb") as f:
        np.savez(f, item_ids=self.item_ids, recommended=self.recommended, scores=self.scores)
    artifacts.write_manifest(directory, stage="lm/after_item", config=config, inputs=inputs,
                             counts={"items": int(len(self.item_ids)), "top_k": self.top_k})

  @classmethod
  def load(cls, directory: str | pathlib.Path) -> "AfterItemTable":
    directory = pathlib.Path(directory)
    artifacts.read_manifest(directory)
    path = directory / AFTER_ITEM_NPZ
    if not path.is_file():
      raise DataError("missing", path=path)
    with np.load(path) as z:
      table = cls(item_ids=z["item_ids"].astype(np.int64),
                  recommended=z["recommended"].astype(np.int64),
                  scores=z["scores"].astype(np.float32))
    n = len(table.item_ids)
    if table.recommended.shape[0] != n or table.scores.shape != table.recommended.shape:
      raise DataError(f"item_ids {table.item_ids.shape}, recommended "
                      f"{table.recommended.shape} and scores {table.scores.shape} disagree",
                      path=path)
    return table


def after_item_table(model, prep: LMPrepared, *, num_items: int, top_k: int, beam_size: int,
                     batch_size: int) -> AfterItemTable:
  """The top-K next items after each of the `num_items` most popular training items
  (prompt: a one-item history; the item itself is never recommended after itself)."""
  heads = most_popular_ranking(prep.split.train, num_items)
  heads = heads[heads >= 0]
  seqs = Sequences.from_lists(heads, [[i] for i in heads])
  prompts = next_prompts(EvalSet(user_ids=heads, histories=seqs, targets=heads),
                         prep.dataset.catalog, prep.table, prep.vocab, prep.tasks)
  items, scores = decode_sids(model, prompts, prep.trie, k=top_k + 1, beam_size=beam_size,
                               batch_size=batch_size)
  keep = (items != heads[:, None]) & (items >= 0)
  order = np.argsort(~keep, axis=1, kind="stable")[:, :top_k]
  rec = np.take_along_axis(items, order, 1)
  ok = np.take_along_axis(keep, order, 1)
  return AfterItemTable(item_ids=heads.astype(np.int64), recommended=np.where(ok, rec, -1),
                        scores=np.where(ok, np.take_along_axis(scores, order, 1),
                                        -np.inf).astype(np.float32))
