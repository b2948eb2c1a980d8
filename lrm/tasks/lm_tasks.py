"""Training tasks of the bilingual SID language model, mixed and packed into fixed-length rows.

Four tasks (YouTube LRM / PLUM's continued-pretraining mix), each example a prompt followed by
what the model generates; the loss falls only on the generated part (eos included):

  sid2text  <bos> <task:sid2text> sid <sep>  ->  <field:title> title <field:brand> ... <eos>
  text2sid  <bos> <task:text2sid> <field:f> text <sep>  ->  sid <eos>  (per item and field)
  next      <bos> <task:next> sid_1 [<field:title> title_1] ... sid_h <sep>  ->  sid_next <eos>
  masked    <bos> <task:masked> sid_1 <extra_0> sid_3 ... <sep>  ->  <extra_0> sid_2 ... <eos>

and a fifth that reads a watch history as a document (PLUM's behaviour sequences), so one
example trains every next-item prediction of a user instead of one:

  history   <bos> <task:history> sid_1 [<field:title> title_1] sid_2 ... sid_n <eos>

The loss falls on the SID tokens of items 2..n and on nothing else: item 1 has no history to
predict it from (SASRec and RPG score only positions with a previous item), titles are context,
and <eos> marks where leave-one-out cut the training part, not a behaviour to learn. A
document longer than a row becomes windows (`history_windows`): each window repeats the last
`history_overlap` items before its first target as context without loss, so every target of
items 2..n is scored exactly once. Evaluation prompts are the document's prefix,
`<bos> <task:history> sid_1 ... sid_h`, and the model decodes sid_{h+1} directly.

The mixed document (PLUM interleaves metadata with behaviour) is the history task with text
beside each SID: `history_titles` writes `<field:f> text` after every SID for each f in
`history_fields`, and `history_text_loss` scores that text too (markers included, as in
sid2text's completion), for item 1 and every target item, so the model also learns SID -> text
in context; a window's overlap items stay loss-free, so each item's text is scored once.

Linking is dense: sid2text and text2sid hold one example per linked catalog item (text2sid:
per item and field), several packed per row, the loss on the generated side. With
`mix_by="passes"` a task's weight counts passes over its examples per epoch, so weight 1 shows
every item once in each direction, whatever the other tasks' sizes; `mix_by="share"` (the
default) makes weights shares of the mixture instead, which samples a large pool partially.

`next`, `masked` and `history` read only the sequences they are given: pass the *training part*
of a split (`split.train`, which `build_examples` takes from the split itself), so no validation
or test target ever leaks in. Prompts keep their most recent items within `max_prompt_tokens`.
`masked` is T5's span corruption over whole items in a prefix-LM: each masked item's whole SID
is one sentinel in the prompt, which is a bidirectional prefix; the targets are causal.

Examples are mixed by task weights (`mix`) and packed greedily first-fit into rows (`pack`).
A batch is a dict of [b, l] arrays:
  tokens       int32    the inputs
  targets      int32    the next token within the same example (0 after its last token)
  loss_mask    float32  1 where `targets` is a generated token
  segment_ids  int32    1..n for the examples of a row, 0 on padding
  positions    int32    0.. restarting at each example
  prefix       bool     True on a prefix-LM example's prompt (bidirectional), else False
The model lets query q see key k iff segment_ids agree and (positions[k] <= positions[q] or
both are in the prefix).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import numpy as np

from lrm.core.errors import ConfigError, DataError
from lrm.data.splits import EvalSet
from lrm.data.types import Catalog, Sequences
from lrm.sid.table import SIDTable
from lrm.tasks import next_item
from lrm.tokens.joint_vocab import FIELDS, PAD_ID, TASKS, JointVocab, field_text, task_token

BATCH_KEYS = ("tokens", "targets", "loss_mask", "segment_ids", "positions", "prefix")
OVERFLOW_MODES = ("truncate", "error")
MIX_MODES = ("share", "passes")
NEXT_ITEM_PROMPTS = ("auto", "next", "history")


@dataclasses.dataclass(frozen=True)
class LMTaskConfig:
  """How examples are built, mixed and packed (field names as under `lm_tasks.` in a config).

  Attributes:
    weights: task name -> mixing weight (0 drops the task; its meaning: `mix_by`).
    text_fields: catalog fields used by sid2text / text2sid, in this order (absent ones skipped).
    max_field_tokens: text tokens kept per field.
    max_history: history items per next / masked example and per next-item evaluation prompt
      (masked: window length); history documents are bounded by row_length instead.
    history_titles: put each history item's text (`history_fields`) after its SID; next,
      masked and history alike.
    history_fields: the fields history_titles writes, in order (each must be in text_fields).
    history_title_tokens: text tokens kept per field of a history item.
    history_text_loss: history documents also score the text beside each SID (needs
      history_titles); off, that text is context.
    history_overlap: items a history window repeats from the one before as context (>= 1, so
      every scored item has a previous item in its window).
    next_item_prompt: the format of next-item evaluation prompts (and the after-item table):
      "next", "history", or "auto" (history when history is weighted and next is not).
    max_prompt_tokens: the next / masked / evaluation prompt budget; the oldest items go first
      (keep it below row_length minus the completion, or long examples are truncated by
      `pack`).
    mask_fraction: the fraction of a window's items masked (at least 1, at most all but one).
    prefix_lm_tasks: tasks whose prompt is a bidirectional prefix.
    row_length: tokens per packed row.
    overflow: an example longer than a row: "truncate" (keep its first row_length tokens,
      counted in PackStats) or "error".
    open_rows: rows kept open for first-fit (the oldest is closed when one more is needed).
    num_examples: examples per mixture; None = all examples of the weighted tasks ("share"
      only).
    mix_by: what a weight means: "share" of the mixture's examples, or "passes" over the
      task's own examples per epoch (1 = each once; see `mix`). Rows are built once, so a
      fractional part keeps the same random subset in every epoch.
    seed: the masked task's choices and the mixture's order.
  """
  weights: Mapping[str, float] = dataclasses.field(
      default_factory=lambda: {"sid2text": 1.0, "text2sid": 1.0, "next": 1.0, "masked": 1.0,
                               "history": 0.0})
  text_fields: tuple[str, ...] = FIELDS
  max_field_tokens: int = 48
  max_history: int = 20
  history_titles: bool = False
  history_fields: tuple[str, ...] = ("title",)
  history_title_tokens: int = 16
  history_text_loss: bool = False
  history_overlap: int = 8
  next_item_prompt: str = "auto"
  max_prompt_tokens: int = 384
  mask_fraction: float = 0.15
  prefix_lm_tasks: tuple[str, ...] = ("masked",)
  row_length: int = 512
  overflow: str = "truncate"
  open_rows: int = 64
  num_examples: int | None = None
  mix_by: str = "share"
  seed: int = 0

  def validate(self, vocab: JointVocab | None = None) -> "LMTaskConfig":
    for name, w in self.weights.items():
      if name not in TASKS:
        raise ConfigError(f"lm_tasks.weights.{name}", f"unknown task; tasks are {list(TASKS)}")
      if not np.isfinite(w) or w < 0:
        raise ConfigError(f"lm_tasks.weights.{name}", f"must be finite and >= 0, got {w}")
    if sum(self.weights.values()) <= 0:
      raise ConfigError("lm_tasks.weights", "at least one task needs a positive weight")
    for name in self.prefix_lm_tasks:
      if name not in TASKS:
        raise ConfigError("lm_tasks.prefix_lm_tasks", f"unknown task {name!r}")
    positive = {"max_field_tokens": self.max_field_tokens, "max_history": self.max_history,
                "history_title_tokens": self.history_title_tokens,
                "history_overlap": self.history_overlap,
                "row_length": self.row_length, "open_rows": self.open_rows}
    for name, value in positive.items():
      if value < 1:
        raise ConfigError(f"lm_tasks.{name}", f"must be >= 1, got {value}")
    if not 0.0 < self.mask_fraction <= 1.0:
      raise ConfigError("lm_tasks.mask_fraction", f"must be in (0, 1], got {self.mask_fraction}")
    if self.overflow not in OVERFLOW_MODES:
      raise ConfigError("lm_tasks.overflow", f"must be one of {list(OVERFLOW_MODES)}, got "
                        f"{self.overflow!r}")
    if self.num_examples is not None and self.num_examples < 1:
      raise ConfigError("lm_tasks.num_examples", f"must be >= 1 or None, got {self.num_examples}")
    if self.mix_by not in MIX_MODES:
      raise ConfigError("lm_tasks.mix_by", f"must be one of {list(MIX_MODES)}, got "
                        f"{self.mix_by!r}")
    if self.mix_by == "passes" and self.num_examples is not None:
      raise ConfigError("lm_tasks.num_examples", "must be None (0 in an lm config) when "
                        "mix_by='passes': the weights set each task's count")
    if self.history_titles:
      if not self.history_fields:
        raise ConfigError("lm_tasks.history_fields", "is empty but history_titles is on")
      # Training reads text_fields' tokens; a field outside them would appear only in prompts.
      outside = [f for f in self.history_fields if f not in self.text_fields]
      if outside:
        raise ConfigError("lm_tasks.history_fields", f"{outside} are not in text_fields "
                          f"{list(self.text_fields)}")
    if self.history_text_loss and not self.history_titles:
      raise ConfigError("lm_tasks.history_text_loss", "needs history_titles=True (there is no "
                        "text beside the SIDs to score)")
    if self.next_item_prompt not in NEXT_ITEM_PROMPTS:
      raise ConfigError("lm_tasks.next_item_prompt", f"must be one of {list(NEXT_ITEM_PROMPTS)}, "
                        f"got {self.next_item_prompt!r}")
    if vocab is not None:
      # A vocabulary saved before a task existed lacks its token (and cannot gain one without
      # moving every SID token).
      used = [(f"lm_tasks.weights.{n}", n) for n, w in self.weights.items() if w > 0]
      used.append(("lm_tasks.next_item_prompt", next_item_format(self)))
      for field, name in used:
        if not vocab.is_special(task_token(name)):
          raise ConfigError(field, f"the vocabulary has no {task_token(name)} token (built "
                            f"before the task existed?): rebuild it in a new run_dir")
      missing = [f for f in self.text_fields if f not in vocab.fields]
      if missing:
        raise ConfigError("lm_tasks.text_fields", f"{missing} have no marker in the vocabulary "
                          f"(its fields: {list(vocab.fields)})")
      # A next-item prompt needs room for <bos> <task> one item <sep>.
      need = 3 + vocab.num_levels
      if self.max_prompt_tokens < need:
        raise ConfigError("lm_tasks.max_prompt_tokens", f"must be >= {need} (one item), got "
                          f"{self.max_prompt_tokens}")
      if self.weights.get("masked", 0) > 0 and vocab.num_sentinels < 1:
        raise ConfigError("lm_tasks.weights.masked", "the vocabulary has no sentinels")
      # A history window holds its overlap plus one target, each at its longest.
      text = (1 + self.history_title_tokens) * len(self.history_fields)
      block = vocab.num_levels + (text if self.history_titles else 0)
      need = 3 + (self.history_overlap + 1) * block
      if self.weights.get("history", 0) > 0 and self.row_length < need:
        raise ConfigError("lm_tasks.history_overlap", f"a window of {self.history_overlap} "
                          f"context items and one target needs row_length >= {need}, got "
                          f"{self.row_length}")
    return self


def next_item_format(cfg: LMTaskConfig) -> str:
  """The task whose prompt format next-item evaluation uses ("next" or "history")."""
  if cfg.next_item_prompt != "auto":
    return cfg.next_item_prompt
  history_only = cfg.weights.get("history", 0) > 0 and not cfg.weights.get("next", 0) > 0
  return "history" if history_only else "next"


# ------------------------------------------------------------------------------------------
# Ragged examples


@dataclasses.dataclass(frozen=True, eq=False)
class LMExamples:
  """Examples stored flat: example i is tokens[offsets[i]:offsets[i + 1]].

  Attributes:
    tokens: int32 [N] each example's prompt then completion (a history document: itself).
    offsets: int64 [m + 1].
    num_prompt: int32 [m] tokens before the first scored one (the prompt).
    bidirectional: bool [m] whether the prompt is a bidirectional prefix.
    task: int8 [m] index into TASKS.
    scored: bool [N] whether the model learns to predict the token from those before it: the
      completion of a prompt -> completion example; the target SIDs of a history document.
  """
  tokens: np.ndarray
  offsets: np.ndarray
  num_prompt: np.ndarray
  bidirectional: np.ndarray
  task: np.ndarray
  scored: np.ndarray

  def __len__(self) -> int:
    return len(self.num_prompt)

  @property
  def lengths(self) -> np.ndarray:
    return np.diff(self.offsets)

  def example(self, i: int) -> np.ndarray:
    return self.tokens[self.offsets[i]:self.offsets[i + 1]]

  def take(self, index: np.ndarray) -> "LMExamples":
    index = np.asarray(index, np.int64)
    lens = self.lengths[index]
    starts = self.offsets[:-1][index]
    src = np.repeat(starts - np.concatenate([[0], np.cumsum(lens)[:-1]]), lens) + np.arange(
        lens.sum())
    return LMExamples(tokens=self.tokens[src], offsets=np.concatenate([[0], np.cumsum(lens)]),
                      num_prompt=self.num_prompt[index], bidirectional=self.bidirectional[index],
                      task=self.task[index], scored=self.scored[src])

  @staticmethod
  def concat(parts: Sequence["LMExamples"]) -> "LMExamples":
    parts = [p for p in parts if len(p)]
    if not parts:
      return _from_pieces([], [], 0, False)
    lens = np.concatenate([p.lengths for p in parts])
    return LMExamples(tokens=np.concatenate([p.tokens for p in parts]),
                      offsets=np.concatenate([[0], np.cumsum(lens)]),
                      num_prompt=np.concatenate([p.num_prompt for p in parts]),
                      bidirectional=np.concatenate([p.bidirectional for p in parts]),
                      task=np.concatenate([p.task for p in parts]),
                      scored=np.concatenate([p.scored for p in parts]))


def _from_pieces(prompts: Sequence[np.ndarray], completions: Sequence[np.ndarray], task: int,
                 bidirectional: bool) -> LMExamples:
  seqs = [np.concatenate([p, c]) for p, c in zip(prompts, completions)]
  scored = [np.arange(len(s)) >= len(p) for s, p in zip(seqs, prompts)]
  return _from_documents(seqs, scored, task, bidirectional)


def _from_documents(docs: Sequence[np.ndarray], scored: Sequence[np.ndarray], task: int,
                    bidirectional: bool) -> LMExamples:
  """Examples from whole token sequences and their scored flags (the prompt: up to the first
  scored token)."""
  lens = np.array([len(d) for d in docs], np.int64)
  m = len(docs)
  first = [int(np.argmax(f)) if f.any() else len(f) for f in scored]
  return LMExamples(
      tokens=np.concatenate(docs).astype(np.int32) if m else np.zeros(0, np.int32),
      offsets=np.concatenate([[0], np.cumsum(lens)]).astype(np.int64),
      num_prompt=np.array(first, np.int32), bidirectional=np.full(m, bidirectional, bool),
      task=np.full(m, task, np.int8),
      scored=np.concatenate(scored).astype(bool) if m else np.zeros(0, bool))


# ------------------------------------------------------------------------------------------
# Per-item tokens


@dataclasses.dataclass(frozen=True, eq=False)
class ItemTokens:
  """Token pieces per catalog row.

  Attributes:
    sid: int32 [n, L] SID tokens (rows without a SID hold -1).
    has_sid: bool [n].
    fields: field name -> per row int32 text tokens (truncated) or None when empty.
  """
  sid: np.ndarray
  has_sid: np.ndarray
  fields: Mapping[str, list[np.ndarray | None]]


def item_tokens(catalog: Catalog, table: SIDTable, vocab: JointVocab, *,
                fields: Sequence[str] = FIELDS, max_field_tokens: int = 48) -> ItemTokens:
  """SID and text tokens of every catalog row (items missing from `table` get no SID)."""
  if table.num_levels != vocab.num_levels:
    raise ConfigError("vocab", f"has {vocab.num_levels} SID levels, the SID table "
                      f"{table.num_levels}")
  table_row = table.row_of(catalog.item_ids)
  has_sid = table_row >= 0
  sid = np.full((len(catalog), vocab.num_levels), -1, np.int32)
  if has_sid.any():
    sid[has_sid] = vocab.sid_tokens(table.full_codes[table_row[has_sid]])
  out: dict[str, list[np.ndarray | None]] = {}
  for name in fields:
    values = catalog.fields.get(name)
    if values is None:
      continue
    texts = [field_text(v) for v in values]
    present = [r for r, t in enumerate(texts) if t is not None]
    col: list[np.ndarray | None] = [None] * len(catalog)
    for r, toks in zip(present, vocab.encode_texts([texts[r] for r in present])):
      col[r] = toks[:max_field_tokens] if len(toks) else None
    out[name] = col
  return ItemTokens(sid=sid, has_sid=has_sid, fields=out)


def _check_sids(items: ItemTokens, rows: np.ndarray, what: str) -> None:
  if len(rows) and not items.has_sid[rows].all():
    raise DataError(f"{what}: {int((~items.has_sid[rows]).sum())} events on items without a SID "
                    f"(the SID table must cover every item in the sequences)")


# ------------------------------------------------------------------------------------------
# Prompts (shared by training and evaluation, so they are built identically)


def _arr(*ids: int) -> np.ndarray:
  return np.array(ids, np.int32)


def sid2text_prompt(vocab: JointVocab, sid: np.ndarray) -> np.ndarray:
  return np.concatenate([_arr(vocab.bos, vocab.task("sid2text")), sid, _arr(vocab.sep)])


def text2sid_prompt(vocab: JointVocab, field: str, text: np.ndarray) -> np.ndarray:
  return np.concatenate([_arr(vocab.bos, vocab.task("text2sid"), vocab.field(field)), text,
                         _arr(vocab.sep)])


def _history_blocks(items: ItemTokens, vocab: JointVocab, cfg: LMTaskConfig) -> list[np.ndarray]:
  """Each catalog row's history piece: its SID, then `<field:f> text` for each history field
  it has when history_titles is on (the SID always comes first: `_block_scored` relies on it)."""
  fields = cfg.history_fields if cfg.history_titles else ()
  columns = [(f, items.fields[f]) for f in fields if f in items.fields]
  blocks = []
  for r in range(len(items.sid)):
    parts = [items.sid[r]]
    for f, column in columns:
      if column[r] is not None:
        parts += [_arr(vocab.field(f)), column[r][:cfg.history_title_tokens]]
    blocks.append(np.concatenate(parts).astype(np.int32))
  return blocks


def _block_scored(length: int, num_levels: int, *, sid: bool, text: bool) -> np.ndarray:
  """Scored flags of one history block: its SID tokens if `sid`, the text after them if `text`."""
  is_sid = np.arange(length) < num_levels
  return (is_sid & sid) | (~is_sid & text)


def _budgeted(history: np.ndarray, block_len: np.ndarray, budget: int) -> np.ndarray:
  """The most recent history rows (oldest first, -1 padding dropped) whose blocks fit `budget`."""
  rows = history[history >= 0]
  cost = np.cumsum(block_len[rows][::-1])[::-1]       # tokens from each item to the end
  return rows[cost <= budget]


def next_prompt(vocab: JointVocab, blocks: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
  return np.concatenate([_arr(vocab.bos, vocab.task("next")), *[blocks[r] for r in rows],
                         _arr(vocab.sep)])


# ------------------------------------------------------------------------------------------
# Training examples per task


def sid2text_examples(items: ItemTokens, vocab: JointVocab, cfg: LMTaskConfig,
                      rows: np.ndarray) -> LMExamples:
  """One example per catalog row with a SID and any text: SID -> its fields with markers."""
  prompts, completions = [], []
  for r in rows:
    if not items.has_sid[r]:
      continue
    parts = [np.concatenate([_arr(vocab.field(f)), items.fields[f][r]])
             for f in cfg.text_fields if f in items.fields and items.fields[f][r] is not None]
    if parts:
      prompts.append(sid2text_prompt(vocab, items.sid[r]))
      completions.append(np.concatenate([*parts, _arr(vocab.eos)]))
  return _from_pieces(prompts, completions, TASKS.index("sid2text"),
                      "sid2text" in cfg.prefix_lm_tasks)


def text2sid_examples(items: ItemTokens, vocab: JointVocab, cfg: LMTaskConfig,
                      rows: np.ndarray) -> LMExamples:
  """One example per (catalog row with a SID, present text field): text -> SID."""
  prompts, completions = [], []
  for r in rows:
    if not items.has_sid[r]:
      continue
    for f in cfg.text_fields:
      column = items.fields.get(f)
      text = None if column is None else column[r]
      if text is not None:
        prompts.append(text2sid_prompt(vocab, f, text))
        completions.append(np.concatenate([items.sid[r], _arr(vocab.eos)]))
  return _from_pieces(prompts, completions, TASKS.index("text2sid"),
                      "text2sid" in cfg.prefix_lm_tasks)


def next_examples(train: Sequences, catalog: Catalog, items: ItemTokens, vocab: JointVocab,
                  cfg: LMTaskConfig) -> LMExamples:
  """One example per position t >= 1 of each user's sequence in `train` (the training part)."""
  ex = next_item.training_examples(train, catalog, max_history=cfg.max_history)
  _check_sids(items, catalog.rows(train.items), "next")
  blocks = _history_blocks(items, vocab, cfg)
  block_len = np.array([len(b) for b in blocks], np.int64)
  budget = cfg.max_prompt_tokens - 3
  prompts, completions = [], []
  for history, target in zip(ex.history, ex.target):
    prompts.append(next_prompt(vocab, blocks, _budgeted(history, block_len, budget)))
    completions.append(np.concatenate([items.sid[target], _arr(vocab.eos)]))
  return _from_pieces(prompts, completions, TASKS.index("next"), "next" in cfg.prefix_lm_tasks)


def _windows(train: Sequences, size: int) -> list[tuple[int, int]]:
  """Flat [start, end) spans of at most `size` events tiling each user's sequence from its end
  (the most recent window is full); spans of one event are dropped (nothing to keep)."""
  spans = []
  for start, end in zip(train.offsets[:-1].tolist(), train.offsets[1:].tolist()):
    for stop in range(end, start, -size):
      if stop - max(start, stop - size) >= 2:
        spans.append((max(start, stop - size), stop))
  return spans


def masked_examples(train: Sequences, catalog: Catalog, items: ItemTokens, vocab: JointVocab,
                    cfg: LMTaskConfig, seed: int) -> LMExamples:
  """Masked items over windows of `train`: whole SIDs become sentinels, targets spell them out."""
  rows_of_events = catalog.rows(train.items)
  _check_sids(items, rows_of_events, "masked")
  blocks = _history_blocks(items, vocab, cfg)
  block_len = np.array([len(b) for b in blocks], np.int64)
  rng = np.random.default_rng([seed, TASKS.index("masked")])
  budget = cfg.max_prompt_tokens - 3
  prompts, completions = [], []
  for start, end in _windows(train, cfg.max_history):
    rows = _budgeted(rows_of_events[start:end], block_len, budget)
    n = len(rows)
    if n < 2:
      continue
    k = int(np.clip(round(cfg.mask_fraction * n), 1, min(n - 1, vocab.num_sentinels)))
    masked = np.zeros(n, bool)
    masked[rng.choice(n, size=k, replace=False)] = True
    prompt, completion, j = [_arr(vocab.bos, vocab.task("masked"))], [], 0
    for r, is_masked in zip(rows, masked):
      if is_masked:
        prompt.append(_arr(vocab.sentinel(j)))
        completion.append(np.concatenate([_arr(vocab.sentinel(j)), items.sid[r]]))
        j += 1
      else:
        prompt.append(blocks[r])
    prompts.append(np.concatenate([*prompt, _arr(vocab.sep)]))
    completions.append(np.concatenate([*completion, _arr(vocab.eos)]))
  return _from_pieces(prompts, completions, TASKS.index("masked"),
                      "masked" in cfg.prefix_lm_tasks)


def history_windows(cost: np.ndarray, *, room: int, overlap: int) -> list[tuple[int, int, int]]:
  """How one history document is cut into windows that fit a row.

  Returns (context_start, first_target, end) per window: items [context_start, first_target)
  are context without loss (item 0, or the `overlap` items before the first target), items
  [first_target, end) are its targets. Targets tile items 1..n-1 in order, each exactly once;
  a document that fits `room` is one window. Each window takes as many targets as fit.

  Args:
    cost: int [n] tokens of each item's block (its SID, and title when configured).
    room: tokens a window may spend on blocks (a row less <bos>, <task:history>, <eos>).
    overlap: context items repeated from the previous window (>= 1).
  """
  cost = np.asarray(cost, np.int64)
  cum = np.concatenate([[0], np.cumsum(cost)])
  n, first, spans = len(cost), 1, []
  while first < n:
    start = max(0, first - overlap)
    end = min(int(np.searchsorted(cum, cum[start] + room, side="right")) - 1, n)
    if end <= first:
      raise ConfigError("lm_tasks.history_overlap", f"{first - start} context items and one "
                        f"target ({int(cum[first + 1] - cum[start])} tokens) exceed a row's "
                        f"{room} tokens for blocks")
    spans.append((start, first, end))
    first = end
  return spans


def history_prompt(vocab: JointVocab, blocks: list[np.ndarray], rows: np.ndarray) -> np.ndarray:
  """`<bos> <task:history>` and the items' blocks: a history document's prefix."""
  return np.concatenate([_arr(vocab.bos, vocab.task("history")), *[blocks[r] for r in rows]])


def history_examples(train: Sequences, catalog: Catalog, items: ItemTokens, vocab: JointVocab,
                     cfg: LMTaskConfig) -> LMExamples:
  """Each user's sequence in `train` as one document (windows of it when longer than a row),
  scored on the SIDs of its target items, and with history_text_loss on the text beside the
  SIDs of item 1 and the targets (see the module docstring)."""
  rows_of_events = catalog.rows(train.items)
  _check_sids(items, rows_of_events, "history")
  blocks = _history_blocks(items, vocab, cfg)
  block_len = np.array([len(b) for b in blocks], np.int64)
  L, text_loss = vocab.num_levels, cfg.history_text_loss
  head, tail = np.zeros(2, bool), np.zeros(1, bool)
  docs, scored = [], []
  for lo, hi in zip(train.offsets[:-1].tolist(), train.offsets[1:].tolist()):
    rows = rows_of_events[lo:hi]
    for start, first, end in history_windows(block_len[rows], room=cfg.row_length - 3,
                                             overlap=cfg.history_overlap):
      window = rows[start:end]
      docs.append(np.concatenate([history_prompt(vocab, blocks, window), _arr(vocab.eos)]))
      # Context: item 1's text is scored (once: only the first window starts at item 1),
      # overlap items were targets of the window before and get nothing.
      flags = [_block_scored(block_len[r], L, sid=False, text=text_loss and j == 0)
               for j, r in enumerate(rows[start:first].tolist(), start)]
      flags += [_block_scored(block_len[r], L, sid=True, text=text_loss)
                for r in rows[first:end].tolist()]
      scored.append(np.concatenate([head, *flags, tail]))
  return _from_documents(docs, scored, TASKS.index("history"), "history" in cfg.prefix_lm_tasks)


def build_examples(catalog: Catalog, table: SIDTable, vocab: JointVocab, split: Any,
                   cfg: LMTaskConfig, *, holdout_items: Any = ()) -> dict[str, LMExamples]:
  """Every task's examples (tasks of weight 0 are skipped).

  Args:
    split: a leave-one-out or cold-start split; only `split.train` is read.
    holdout_items: item ids left out of sid2text / text2sid (e.g. to evaluate text -> SID on
      items the model never linked).
  """
  cfg.validate(vocab)
  train: Sequences = split.train
  items = item_tokens(catalog, table, vocab, fields=cfg.text_fields,
                      max_field_tokens=cfg.max_field_tokens)
  linked = np.flatnonzero(~np.isin(catalog.item_ids, np.asarray(holdout_items, np.int64)))
  build = {
      "sid2text": lambda: sid2text_examples(items, vocab, cfg, linked),
      "text2sid": lambda: text2sid_examples(items, vocab, cfg, linked),
      "next": lambda: next_examples(train, catalog, items, vocab, cfg),
      "masked": lambda: masked_examples(train, catalog, items, vocab, cfg, cfg.seed),
      "history": lambda: history_examples(train, catalog, items, vocab, cfg),
  }
  return {name: build[name]() for name in TASKS if cfg.weights.get(name, 0) > 0}


# ------------------------------------------------------------------------------------------
# Mixing and packing


def draw_counts(pool_sizes: np.ndarray, weights: np.ndarray, *, by: str = "share",
                num_examples: int | None = None) -> np.ndarray:
  """Examples drawn per task.

  "share": `num_examples` (default: all pools together) split by weight, largest remainders
  first. "passes": round(weights[t] * pool_sizes[t]), each task on its own, so weight 1 draws
  every example of a task once however large the other tasks are.

  Shape: pool_sizes, weights [t] -> [t].
  """
  sizes = np.asarray(pool_sizes, np.int64)
  w = np.asarray(weights, np.float64)
  if by == "passes":
    if num_examples is not None:
      raise ConfigError("lm_tasks.num_examples", "must be None when mix_by='passes'")
    return np.floor(w * sizes + 0.5).astype(np.int64)
  if by != "share":
    raise ConfigError("lm_tasks.mix_by", f"must be one of {list(MIX_MODES)}, got {by!r}")
  total = num_examples if num_examples is not None else int(sizes.sum())
  counts = np.floor(total * w / w.sum()).astype(np.int64)
  counts[np.argsort(-(total * w / w.sum() - counts), kind="stable")[:total - counts.sum()]] += 1
  return counts


def mix(examples: Mapping[str, LMExamples], weights: Mapping[str, float], *, seed: int,
        num_examples: int | None = None, by: str = "share") -> LMExamples:
  """A shuffled mixture, task t drawn `draw_counts(...)[t]` times: by "share", weights[t] /
  sum(weights) of the examples; by "passes", weights[t] passes over the task's examples.

  A task drawn more often than it has examples repeats its whole pool before sampling the
  rest (no example repeats more than needed); fewer draws take a random subset.
  """
  names = [n for n in examples if weights.get(n, 0) > 0]
  for n in names:
    if len(examples[n]) == 0:
      raise ConfigError(f"lm_tasks.weights.{n}", "is positive but the task has no examples")
  if not names:
    raise ConfigError("lm_tasks.weights", "no task with a positive weight and examples")
  counts = draw_counts(np.array([len(examples[n]) for n in names]),
                       np.array([weights[n] for n in names]), by=by, num_examples=num_examples)
  if counts.sum() == 0:
    raise ConfigError("lm_tasks.weights", f"{dict(weights)} by {by} draw no example at all")
  rng = np.random.default_rng(seed)
  parts = []
  for n, c in zip(names, counts):
    pool = len(examples[n])
    index = np.concatenate([np.tile(np.arange(pool), c // pool),
                            rng.permutation(pool)[:c % pool]])
    parts.append(examples[n].take(index))
  mixed = LMExamples.concat(parts)
  return mixed.take(rng.permutation(len(mixed)))


@dataclasses.dataclass(frozen=True)
class PackStats:
  num_examples: int
  num_rows: int
  num_truncated: int
  num_tokens: int            # tokens placed (after truncation)
  fill: float                # num_tokens / (num_rows * row_length)


def pack(examples: LMExamples, *, row_length: int, overflow: str = "truncate",
         open_rows: int = 64) -> tuple[dict[str, np.ndarray], PackStats]:
  """Greedy first-fit packing into [rows, row_length] arrays (keys: BATCH_KEYS).

  Examples are placed in order, each in the first open row with room (rows in the order they
  were opened); when none has room a row is opened, closing the oldest if `open_rows` are
  open. Each example is one segment: segment ids 1.. per row in placement order, positions
  restarting at 0, targets shifted left inside the segment only.
  """
  if overflow not in OVERFLOW_MODES:
    raise ConfigError("lm_tasks.overflow", f"must be one of {list(OVERFLOW_MODES)}, got "
                      f"{overflow!r}")
  if row_length < 2 or open_rows < 1:
    raise ConfigError("lm_tasks.row_length", f"row_length must be >= 2 and open_rows >= 1, got "
                      f"{row_length}, {open_rows}")
  lengths = examples.lengths
  too_long = np.flatnonzero(lengths > row_length)
  if len(too_long) and overflow == "error":
    i = int(too_long[0])
    raise ConfigError("lm_tasks.row_length", f"{len(too_long)} examples are longer than a row "
                      f"of {row_length}, e.g. example {i} (task {TASKS[examples.task[i]]}) with "
                      f"{int(lengths[i])} tokens; raise row_length, lower max_prompt_tokens / "
                      f"max_field_tokens, or set overflow='truncate'")
  kept = np.minimum(lengths, row_length)
  m = len(examples)
  row_of = np.zeros(m, np.int64)
  start_of = np.zeros(m, np.int64)
  segment_of = np.zeros(m, np.int32)
  open_ids: list[int] = []
  room: list[int] = []
  used_segments: list[int] = []
  for e, n in enumerate(kept.tolist()):
    slot = next((s for s, r in enumerate(room) if r >= n), -1)
    if slot < 0:
      if len(open_ids) == open_rows:
        open_ids.pop(0)
        room.pop(0)
      open_ids.append(len(used_segments))
      room.append(row_length)
      used_segments.append(0)
      slot = len(open_ids) - 1
    row = open_ids[slot]
    row_of[e], start_of[e] = row, row_length - room[slot]
    used_segments[row] += 1
    segment_of[e] = used_segments[row]
    room[slot] -= n
    if room[slot] == 0:
      open_ids.pop(slot)
      room.pop(slot)
  num_rows = len(used_segments)

  ex = np.repeat(np.arange(m), kept)
  within = np.arange(kept.sum()) - np.repeat(np.concatenate([[0], np.cumsum(kept)[:-1]]), kept)
  src = examples.offsets[:-1][ex] + within
  dst = row_of[ex] * row_length + start_of[ex] + within
  has_next = within < kept[ex] - 1
  shape = (num_rows, row_length)
  out = {"tokens": np.full(shape, PAD_ID, np.int32), "targets": np.full(shape, PAD_ID, np.int32),
         "loss_mask": np.zeros(shape, np.float32), "segment_ids": np.zeros(shape, np.int32),
         "positions": np.zeros(shape, np.int32), "prefix": np.zeros(shape, bool)}
  out["tokens"].reshape(-1)[dst] = examples.tokens[src]
  out["targets"].reshape(-1)[dst] = np.where(
      has_next, examples.tokens[np.minimum(src + 1, len(examples.tokens) - 1)], PAD_ID)
  scored_next = examples.scored[np.minimum(src + 1, len(examples.scored) - 1)]
  out["loss_mask"].reshape(-1)[dst] = has_next & scored_next
  out["segment_ids"].reshape(-1)[dst] = segment_of[ex]
  out["positions"].reshape(-1)[dst] = within
  out["prefix"].reshape(-1)[dst] = examples.bidirectional[ex] & (within < examples.num_prompt[ex])
  stats = PackStats(num_examples=m, num_rows=num_rows, num_truncated=len(too_long),
                    num_tokens=int(kept.sum()),
                    fill=float(kept.sum() / max(num_rows * row_length, 1)))
  return out, stats


def attention_mask(segment_ids: np.ndarray, positions: np.ndarray,
                   prefix: np.ndarray) -> np.ndarray:
  """The model's rule as a NumPy reference: bool [..., l(query), l(key)].

  Shape: segment_ids, positions, prefix [..., l].
  """
  same = segment_ids[..., :, None] == segment_ids[..., None, :]
  causal = positions[..., None, :] <= positions[..., :, None]
  both_prefix = prefix[..., :, None] & prefix[..., None, :]
  return same & (causal | both_prefix)


def training_rows(catalog: Catalog, table: SIDTable, vocab: JointVocab, split: Any,
                  cfg: LMTaskConfig, *, holdout_items: Any = ()
                  ) -> tuple[dict[str, np.ndarray], PackStats]:
  """Builds, mixes (seed = cfg.seed) and packs every task's examples into rows."""
  examples = build_examples(catalog, table, vocab, split, cfg, holdout_items=holdout_items)
  mixed = mix(examples, cfg.weights, seed=cfg.seed, num_examples=cfg.num_examples,
              by=cfg.mix_by)
  return pack(mixed, row_length=cfg.row_length, overflow=cfg.overflow, open_rows=cfg.open_rows)


def train_iterator(rows: dict[str, np.ndarray], *, batch_size: int, seed: int,
                   **kwargs: Any) -> Any:
  """A deterministic, resumable Grain iterator of shuffled batches of packed rows.

  The retrieval pipeline's (lrm.tasks.next_item.train_iterator): rows reshuffled per epoch
  from `seed`; `get_state()` / `set_state()` resume exactly; kwargs (num_epochs,
  worker_count, ...) pass through.
  """
  missing = set(BATCH_KEYS) - set(rows)
  if missing:
    raise ConfigError("rows", f"missing keys {sorted(missing)}")
  return next_item.train_iterator({k: rows[k] for k in BATCH_KEYS}, batch_size=batch_size,
                                  seed=seed, **kwargs)


# ------------------------------------------------------------------------------------------
# Evaluation prompts (no targets in the tokens)


@dataclasses.dataclass(frozen=True, eq=False)
class Prompts:
  """Prompts for decoding, left-padded so that generation continues at column P.

  Attributes:
    task: the task name.
    tokens, segment_ids, positions: int32 [m, P] (padding: PAD, segment 0, position 0).
    prefix: bool [m, P] True on a prefix-LM prompt.
    item_ids: int64 [m] the answer's item (text2sid / next: the item whose SID is expected;
      sid2text: the item whose text is expected).
    user_ids: int64 [m] for next-item prompts, else None.
  """
  task: str
  tokens: np.ndarray
  segment_ids: np.ndarray
  positions: np.ndarray
  prefix: np.ndarray
  item_ids: np.ndarray
  user_ids: np.ndarray | None = None

  def __len__(self) -> int:
    return len(self.item_ids)


def _left_padded(task: str, prompts: Sequence[np.ndarray], bidirectional: bool,
                 item_ids: np.ndarray, user_ids: np.ndarray | None = None) -> Prompts:
  m = len(prompts)
  width = max((len(p) for p in prompts), default=0)
  tokens = np.full((m, width), PAD_ID, np.int32)
  segment_ids = np.zeros((m, width), np.int32)
  positions = np.zeros((m, width), np.int32)
  for i, p in enumerate(prompts):
    n = len(p)
    tokens[i, width - n:] = p
    segment_ids[i, width - n:] = 1
    positions[i, width - n:] = np.arange(n)
  return Prompts(task=task, tokens=tokens, segment_ids=segment_ids, positions=positions,
                 prefix=(segment_ids > 0) & bidirectional, item_ids=np.asarray(item_ids, np.int64),
                 user_ids=None if user_ids is None else np.asarray(user_ids, np.int64))


def text2sid_prompts(catalog: Catalog, table: SIDTable, vocab: JointVocab, item_ids: Any,
                     cfg: LMTaskConfig, *, field: str = "title") -> Prompts:
  """text -> SID prompts from the `field` of `item_ids` (items without that text are skipped)."""
  if field not in vocab.fields:
    raise ConfigError("field", f"{field!r} has no marker; fields are {list(vocab.fields)}")
  rows = catalog.rows(item_ids)
  items = item_tokens(catalog.take(rows), table, vocab, fields=(field,),
                      max_field_tokens=cfg.max_field_tokens)
  texts = items.fields.get(field, [None] * len(rows))
  keep = [i for i, t in enumerate(texts) if t is not None]
  return _left_padded("text2sid", [text2sid_prompt(vocab, field, texts[i]) for i in keep],
                      "text2sid" in cfg.prefix_lm_tasks, catalog.item_ids[rows[keep]])


def sid2text_prompts(catalog: Catalog, table: SIDTable, vocab: JointVocab, item_ids: Any,
                     cfg: LMTaskConfig) -> Prompts:
  """SID -> text prompts for `item_ids` (each must have a SID)."""
  rows = catalog.rows(item_ids)
  items = item_tokens(catalog.take(rows), table, vocab, fields=())
  _check_sids(items, np.arange(len(rows)), "sid2text prompts")
  return _left_padded("sid2text", [sid2text_prompt(vocab, s) for s in items.sid],
                      "sid2text" in cfg.prefix_lm_tasks, catalog.item_ids[rows])


def next_prompts(eval_set: EvalSet, catalog: Catalog, table: SIDTable, vocab: JointVocab,
                 cfg: LMTaskConfig) -> Prompts:
  """Next-item prompts for a validation or test set (history = everything before the target,
  the most recent max_history items within max_prompt_tokens); item_ids = the targets.

  The format is `next_item_format(cfg)`: `next` prompts end in <sep> as its training prompts
  do; `history` prompts are a history document's prefix, so the next SID continues it.
  """
  cfg.validate(vocab)
  task = next_item_format(cfg)
  ex = next_item.eval_examples(eval_set, catalog, max_history=cfg.max_history)
  items = item_tokens(catalog, table, vocab,
                      fields=cfg.history_fields if cfg.history_titles else (),
                      max_field_tokens=cfg.max_field_tokens)
  _check_sids(items, catalog.rows(eval_set.histories.items), f"{task} prompts")
  blocks = _history_blocks(items, vocab, cfg)
  block_len = np.array([len(b) for b in blocks], np.int64)
  if task == "history":
    prompts = [history_prompt(vocab, blocks, _budgeted(h, block_len, cfg.max_prompt_tokens - 2))
               for h in ex.history]
  else:
    prompts = [next_prompt(vocab, blocks, _budgeted(h, block_len, cfg.max_prompt_tokens - 3))
               for h in ex.history]
  return _left_padded(task, prompts, task in cfg.prefix_lm_tasks,
                      catalog.item_ids[ex.target], eval_set.user_ids)
