"""The joint vocabulary of the bilingual SID language model: text tokens + special + SID tokens.

One decoder reads and writes both natural language and Semantic IDs (YouTube's LRM / PLUM), so
one id space holds three kinds of token:

  [0, text_size)                          the text tokenizer's ids, unchanged, so a pretrained
                                          tokenizer's embedding rows map one to one (with
                                          `text_rows`, rows a checkpoint has beyond its
                                          tokenizer's ids stay reserved here)
  [special_offset, sid_offset)            [<pad> when the tokenizer has none,] bos, eos, sep,
                                          mask, sentinels <extra_i>, task prompts <task:...>,
                                          field markers <field:...>
  [sid_offset + level_offsets[l] + code]  one token per (SID level, code), level by level
  [size, padded_size)                     unused rows: the total is rounded up to a multiple of
                                          128 so that the vocab axis of the embedding and the
                                          logits splits evenly over any power-of-two tensor-
                                          parallel degree and fills whole 128-wide TPU lanes;
                                          the model should mask these rows out of its softmax.
                                          (lrm.models.layers has a padding helper, but tokens
                                          may not import models, so the rounding lives here.)

The pad id: the tokenizer's own padding token when it has one (id 0 for our BPE and for
BERT's WordPiece; detected by name, PAD_TOKEN_NAMES), else a new "<pad>" special (Llama's id 0
is "<unk>", Qwen's is "!": real text tokens that must stay text), or an explicit `pad_id`.
Packed rows and left-padded prompts may hold id 0 on their padding slots whatever the pad id:
those slots are masked (segment id 0, loss mask 0), so their token is never read.

Text tokenizers (the `tokenizers` library):
- a byte-level BPE trained on the catalog's text (`train_bpe`): every byte is a token, there is
  no normaliser and no prefix space, so `decode_text(encode_text(s)) == s` exactly for any
  text (accents, emoji, tabs, newlines);
- a pretrained tokenizer.json, e.g. MiniLM's WordPiece: the round trip is then exact only up
  to that tokenizer's normalisation (MiniLM: lower case, accents stripped, whitespace
  collapsed, spaces around punctuation, unknown characters such as emoji become [UNK]).
Literal special-token strings in text ("<pad>", "[SEP]") are tokenized as plain text.

Mixed sequences are lists of segments: `str` (text), tuples of codes (one SID, or a prefix of
one, starting at level 0) and special names ("<eos>", "<task:next>", ...). `decode` returns
`Text` and `Special` (both `str`), so that `encode(decode(ids)) == ids` even for a text that
happens to read like a special name.
"""

from __future__ import annotations

import hashlib
import os
import pathlib
from typing import Any, Iterable, Sequence

import numpy as np
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from lrm.core import artifacts
from lrm.core.errors import ConfigError, DataError
from lrm.data.types import Catalog

VOCAB_JSON = "joint_vocab.json"
TOKENIZER_JSON = "tokenizer.json"
FORMAT_VERSION = 1
VOCAB_MULTIPLE = 128

PAD_ID = 0
PAD_NAME = "<pad>"
# The names a text tokenizer may give its id 0 (our pad).
PAD_TOKEN_NAMES = ("<pad>", "[PAD]", "<|pad|>")
BASE_SPECIALS = ("<bos>", "<eos>", "<sep>", "<mask>")
TASKS = ("sid2text", "text2sid", "next", "masked", "history")
FIELDS = ("title", "brand", "categories", "description")
LIST_SEPARATOR = " > "   # how list-valued fields (categories, coarse to fine) become text


class Text(str):
  """A text segment (what `decode` returns for a run of text tokens)."""


class Special(str):
  """A special token's name as a segment, e.g. Special("<eos>")."""


def task_token(name: str) -> str:
  return f"<task:{name}>"


def field_token(name: str) -> str:
  return f"<field:{name}>"


def sentinel_token(i: int) -> str:
  return f"<extra_{i}>"


def field_text(value: Any) -> str | None:
  """A catalog field value as text (lists joined coarse to fine); None when empty."""
  if value is None:
    return None
  if isinstance(value, (list, tuple)):
    parts = [str(v) for v in value if v is not None and str(v) != ""]
    return LIST_SEPARATOR.join(parts) if parts else None
  text = str(value)
  return text if text.strip() else None


def catalog_texts(catalog: Catalog, fields: Sequence[str] = FIELDS) -> list[str]:
  """Every non-empty text of `fields` in the catalog (the BPE training corpus)."""
  out = []
  for name in fields:
    for value in catalog.fields.get(name, ()):
      text = field_text(value)
      if text is not None:
        out.append(text)
  return out


def _prepare(tokenizer: Any) -> Any:
  """Our use of a tokenizer: no padding, no truncation, special-token strings read as text."""
  tokenizer.no_padding()
  tokenizer.no_truncation()
  tokenizer.encode_special_tokens = True
  return tokenizer


def train_bpe(texts: Iterable[str], *, vocab_size: int = 8192, min_frequency: int = 2) -> Any:
  """A byte-level BPE `tokenizers.Tokenizer` trained on `texts`; id 0 is "<pad>".

  The 256 byte symbols are always in the vocabulary, so any text round-trips exactly.
  """
  if vocab_size < 257 + 1:
    raise ConfigError("bpe_vocab_size", f"must be > 257 (pad + 256 bytes + merges), got "
                      f"{vocab_size}")
  if min_frequency < 1:
    raise ConfigError("bpe_min_frequency", f"must be >= 1, got {min_frequency}")
  tokenizer = Tokenizer(models.BPE())
  tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tokenizer.decoder = decoders.ByteLevel()
  trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                special_tokens=[PAD_NAME], show_progress=False,
                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
  tokenizer.train_from_iterator(list(texts), trainer)
  return _prepare(tokenizer)


def load_tokenizer(path: str | os.PathLike) -> Any:
  """A tokenizer.json (e.g. the one MiniLM ships); DataError when missing or malformed."""
  path = pathlib.Path(path)
  if path.is_dir():
    path = path / TOKENIZER_JSON
  if not path.is_file():
    raise DataError("no such file (a Hugging Face tokenizer.json is needed)", path=path)
  try:
    tokenizer = Tokenizer.from_file(str(path))
  except Exception as e:  # tokenizers raises a bare Exception for malformed files
    raise DataError(f"cannot load tokenizer: {e}", path=path) from None
  return _prepare(tokenizer)


def _round_up(n: int, multiple: int) -> int:
  return -(-n // multiple) * multiple


class JointVocab:
  """Text ids, then special tokens, then one token per (SID level, code); see the module doc.

  Args:
    tokenizer: a `tokenizers.Tokenizer`.
    codebook_sizes: one codebook size per SID level (the collision level included).
    text_kind: "bpe" (exact round trip) or "pretrained" (round trip up to normalisation).
    num_sentinels: how many <extra_i> tokens (the masked-item task uses one per masked item).
    tasks, fields: names of the task prompt tokens and the field markers.
    multiple: the total is padded up to a multiple of this (128).
    pad_id: None = detect (the tokenizer's padding token by name, else a new "<pad>"
      special); an int = that text id is the pad (it then no longer decodes as text).
    text_rows: reserve at least this many text rows (a checkpoint's embedding often has
      more rows than its tokenizer has ids); None = the tokenizer's size.
  """

  def __init__(self, tokenizer: Any, codebook_sizes: Sequence[int], *, text_kind: str = "bpe",
               num_sentinels: int = 32, tasks: Sequence[str] = TASKS,
               fields: Sequence[str] = FIELDS, multiple: int = VOCAB_MULTIPLE,
               pad_id: int | None = None, text_rows: int | None = None):
    sizes = tuple(int(k) for k in codebook_sizes)
    if not sizes or min(sizes) < 1:
      raise ConfigError("codebook_sizes", f"need one positive size per level, got {sizes}")
    if text_kind not in ("bpe", "pretrained"):
      raise ConfigError("text_kind", f"must be 'bpe' or 'pretrained', got {text_kind!r}")
    if num_sentinels < 0:
      raise ConfigError("num_sentinels", f"must be >= 0, got {num_sentinels}")
    if multiple < 1:
      raise ConfigError("multiple", f"must be >= 1, got {multiple}")
    self.tokenizer = _prepare(tokenizer)
    self.text_kind = text_kind
    self.codebook_sizes = sizes
    self.num_sentinels = int(num_sentinels)
    self.tasks = tuple(tasks)
    self.fields = tuple(fields)
    self.multiple = int(multiple)
    self.tokenizer_size = int(tokenizer.get_vocab_size(with_added_tokens=True))
    if text_rows is not None and (isinstance(text_rows, bool) or int(text_rows) < 1):
      raise ConfigError("text_rows", f"must be a positive integer or None, got {text_rows!r}")
    self.text_rows = None if text_rows is None else int(text_rows)
    self.text_size = max(self.tokenizer_size, self.text_rows or 0)
    self.pad_id_arg = None if pad_id is None else int(pad_id)
    if pad_id is None:
      found = [tokenizer.token_to_id(n) for n in PAD_TOKEN_NAMES]
      found = [i for i in found if i is not None]
      pad = PAD_ID if tokenizer.id_to_token(PAD_ID) in PAD_TOKEN_NAMES else (
          min(found) if found else None)
    else:
      pad = int(pad_id)
      if isinstance(pad_id, bool) or not 0 <= pad < self.tokenizer_size:
        raise ConfigError("pad_id", f"must be a text id in [0, {self.tokenizer_size}) or None "
                          f"(detect), got {pad_id!r}")
    self.pad_added = pad is None
    names = (((PAD_NAME,) if self.pad_added else ()) + BASE_SPECIALS
             + tuple(sentinel_token(i) for i in range(self.num_sentinels))
             + tuple(task_token(t) for t in self.tasks)
             + tuple(field_token(f) for f in self.fields))
    if len(set(names)) != len(names):
      raise ConfigError("tasks", f"task or field names repeat: {list(self.tasks)}, "
                        f"{list(self.fields)}")
    self.special_names = names
    self._id_of = {n: self.text_size + i for i, n in enumerate(names)}
    if not self.pad_added:
      self._id_of = {PAD_NAME: pad, **self._id_of}
    self._name_of = {i: n for n, i in self._id_of.items()}
    self.pad, self.bos, self.eos, self.sep, self.mask = (
        self._id_of[PAD_NAME], *(self._id_of[n] for n in BASE_SPECIALS))

  def is_text(self, ids: Any) -> np.ndarray:
    """Whether each id is a text token (a tokenizer id other than the pad). bool [...]."""
    ids = np.asarray(ids, np.int64)
    return (ids >= 0) & (ids < self.tokenizer_size) & (ids != self.pad)

  # --- layout

  @property
  def special_offset(self) -> int:
    return self.text_size

  @property
  def sid_offset(self) -> int:
    return self.text_size + len(self.special_names)

  @property
  def num_levels(self) -> int:
    return len(self.codebook_sizes)

  @property
  def level_offsets(self) -> tuple[int, ...]:
    """Each level's first code, relative to `sid_offset`."""
    return tuple(int(x) for x in np.concatenate([[0], np.cumsum(self.codebook_sizes)[:-1]]))

  @property
  def size(self) -> int:
    """Ids in use: text + specials + SID tokens."""
    return self.sid_offset + sum(self.codebook_sizes)

  @property
  def padded_size(self) -> int:
    """Rows of the model's embedding / logits (`size` rounded up to `multiple`)."""
    return _round_up(self.size, self.multiple)

  def level_slice(self, level: int) -> slice:
    """The ids of one level's codes (for constrained decoding masks)."""
    if not 0 <= level < self.num_levels:
      raise DataError(f"level {level} out of range [0, {self.num_levels})")
    start = self.sid_offset + self.level_offsets[level]
    return slice(start, start + self.codebook_sizes[level])

  # --- special tokens

  def special(self, name: str) -> int:
    if name not in self._id_of:
      raise DataError(f"unknown special token {name!r}")
    return self._id_of[name]

  def task(self, name: str) -> int:
    return self.special(task_token(name))

  def field(self, name: str) -> int:
    return self.special(field_token(name))

  def sentinel(self, i: int) -> int:
    if not 0 <= i < self.num_sentinels:
      raise DataError(f"sentinel {i} out of range: the vocabulary has {self.num_sentinels}")
    return self._id_of[sentinel_token(i)]

  def is_special(self, name: str) -> bool:
    return name in self._id_of

  # --- text

  def encode_text(self, text: str) -> np.ndarray:
    """Text -> int32 [n] text ids (no bos/eos: the tasks place those)."""
    if not isinstance(text, str):
      raise DataError(f"text must be a str, got {type(text).__name__}")
    return np.asarray(self.tokenizer.encode(text, add_special_tokens=False).ids, np.int32)

  def encode_texts(self, texts: Sequence[str]) -> list[np.ndarray]:
    """Many texts at once (the tokenizer's batch path, several threads)."""
    encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=False)
    return [np.asarray(e.ids, np.int32) for e in encodings]

  def decode_text(self, ids: Any) -> str:
    """Text ids -> text; any id that is not a text token (pad included) is an error."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    bad = ~self.is_text(ids)
    if bad.any():
      raise DataError(f"ids {ids[bad][:5].tolist()} are not text tokens "
                      f"(text ids are 0..{self.tokenizer_size - 1} except the pad {self.pad})")
    return self.tokenizer.decode(ids.tolist(), skip_special_tokens=False)

  # --- SID tokens

  def sid_tokens(self, codes: Any) -> np.ndarray:
    """SID codes -> token ids; the last axis holds levels 0..c-1 (c <= num_levels: a prefix).

    Shape: int [..., c] -> int32 [..., c].
    """
    codes = np.asarray(codes)
    c = codes.shape[-1] if codes.ndim else 0
    if codes.ndim == 0 or not 1 <= c <= self.num_levels:
      raise DataError(f"codes must have 1..{self.num_levels} levels on the last axis, got shape "
                      f"{codes.shape}")
    if codes.size and not np.issubdtype(codes.dtype, np.integer):
      raise DataError(f"codes must be integers, got dtype {codes.dtype}")
    sizes = np.asarray(self.codebook_sizes[:c])
    if codes.size and ((codes < 0) | (codes >= sizes)).any():
      bad = np.argwhere((codes < 0) | (codes >= sizes))[0]
      raise DataError(f"code {int(codes[tuple(bad)])} at level {int(bad[-1])} is out of range "
                      f"for codebook sizes {self.codebook_sizes}")
    return (codes + self.sid_offset + np.asarray(self.level_offsets[:c])).astype(np.int32)

  def level_of(self, ids: Any) -> np.ndarray:
    """The SID level of each id, -1 where it is not a SID token. Shape: [...] -> int32 [...]."""
    ids = np.asarray(ids, np.int64)
    rel = ids - self.sid_offset
    bounds = np.cumsum(self.codebook_sizes)
    level = np.searchsorted(bounds, rel, side="right")
    return np.where((rel >= 0) & (rel < bounds[-1]), level, -1).astype(np.int32)

  def codes_of(self, tokens: Any) -> np.ndarray:
    """SID token ids -> codes; column i must hold level-i tokens. Shape as `sid_tokens`."""
    tokens = np.asarray(tokens, np.int64)
    c = tokens.shape[-1] if tokens.ndim else 0
    if tokens.ndim == 0 or not 1 <= c <= self.num_levels:
      raise DataError(f"tokens must have 1..{self.num_levels} levels on the last axis, got "
                      f"shape {tokens.shape}")
    wrong = self.level_of(tokens) != np.arange(c)
    if wrong.any():
      bad = np.argwhere(wrong)[0]
      raise DataError(f"token {int(tokens[tuple(bad)])} in column {int(bad[-1])} is not a SID "
                      f"token of level {int(bad[-1])}")
    return (tokens - self.sid_offset - np.asarray(self.level_offsets[:c])).astype(np.int32)

  # --- mixed sequences

  def encode(self, segments: Sequence[Any]) -> np.ndarray:
    """Segments (text, SID tuples, special names) -> int32 [n] ids.

    A `Special` or a plain str equal to a special's name is that special token; a `Text` or
    any other str is text; a tuple / list / 1-d int array is one SID (or a prefix of one).
    """
    parts = []
    for i, seg in enumerate(segments):
      if isinstance(seg, Special):
        parts.append(np.array([self.special(seg)], np.int32))
      elif isinstance(seg, Text):
        parts.append(self.encode_text(str(seg)))
      elif isinstance(seg, str):
        parts.append(np.array([self._id_of[seg]], np.int32) if seg in self._id_of
                     else self.encode_text(seg))
      elif isinstance(seg, (tuple, list, np.ndarray)):
        codes = np.asarray(seg)
        if codes.ndim != 1:
          raise DataError(f"segment {i}: a SID must be 1-d, got shape {codes.shape}")
        parts.append(self.sid_tokens(codes))
      else:
        raise DataError(f"segment {i}: expected str or a SID tuple, got {type(seg).__name__}")
    return np.concatenate(parts).astype(np.int32) if parts else np.zeros(0, np.int32)

  def decode(self, ids: Any) -> list[Any]:
    """int [n] ids -> segments: `Text` runs, SID tuples (a new one at every level-0 token),
    `Special` names. Raises DataError for ids outside the vocabulary or a SID token that does
    not continue the SID before it."""
    ids = np.asarray(ids, np.int64).reshape(-1)
    out: list[Any] = []
    levels = self.level_of(ids)
    text = self.is_text(ids)
    i, n = 0, len(ids)
    while i < n:
      t = int(ids[i])
      if text[i]:
        j = i
        while j < n and text[j]:
          j += 1
        out.append(Text(self.decode_text(ids[i:j])))
        i = j
      elif t in self._name_of:
        out.append(Special(self._name_of[t]))
        i += 1
      elif levels[i] >= 0:
        if levels[i] != 0:
          raise DataError(f"position {i}: SID token {t} of level {int(levels[i])} does not "
                          f"follow level {int(levels[i]) - 1}")
        j = i + 1
        while j < n and levels[j] == j - i:
          j += 1
        out.append(tuple(int(c) for c in self.codes_of(ids[i:j])))
        i = j
      else:
        raise DataError(f"position {i}: id {t} is not in the vocabulary (size {self.size})")
    return out

  # --- growth

  def extend_sid_levels(self, new_codebook_sizes: Sequence[int]) -> tuple["JointVocab", np.ndarray]:
    """A vocabulary with larger codebooks (and possibly more levels) for a grown catalog.

    Text and special ids stay; SID tokens move because the levels before them grew. Returns
    (new vocabulary, old_to_new int64 [old padded_size]: each old id's new id, -1 for the old
    padding rows), so the model can move its embedding rows.
    """
    new = tuple(int(k) for k in new_codebook_sizes)
    old = self.codebook_sizes
    if len(new) < len(old) or any(a < b for a, b in zip(new, old)):
      raise ConfigError("new_codebook_sizes", f"must keep every level and never shrink one: "
                        f"{list(old)} -> {list(new)}")
    grown = JointVocab(self.tokenizer, new, text_kind=self.text_kind,
                       num_sentinels=self.num_sentinels, tasks=self.tasks, fields=self.fields,
                       multiple=self.multiple, pad_id=self.pad_id_arg, text_rows=self.text_rows)
    old_to_new = np.full(self.padded_size, -1, np.int64)
    old_to_new[:self.sid_offset] = np.arange(self.sid_offset)
    for level in range(self.num_levels):
      src, dst = self.level_slice(level), grown.level_slice(level)
      old_to_new[src] = np.arange(dst.start, dst.start + old[level])
    return grown, old_to_new

  # --- disk

  def to_json(self) -> dict[str, Any]:
    tok = self.tokenizer.to_str()
    return {"format_version": FORMAT_VERSION, "text_kind": self.text_kind,
            "text_size": self.text_size, "codebook_sizes": list(self.codebook_sizes),
            "num_sentinels": self.num_sentinels, "tasks": list(self.tasks),
            "fields": list(self.fields), "multiple": self.multiple,
            "special_names": list(self.special_names) if self.pad_added
                             else [PAD_NAME, *self.special_names],
            "pad": self.pad, "pad_id": self.pad_id_arg, "text_rows": self.text_rows,
            "special_offset": self.special_offset,
            "sid_offset": self.sid_offset, "size": self.size, "padded_size": self.padded_size,
            "tokenizer_sha256": hashlib.sha256(tok.encode("utf-8")).hexdigest()}

  def save(self, directory: str | os.PathLike) -> None:
    """Writes tokenizer.json, then joint_vocab.json (the layout, checked on load)."""
    directory = pathlib.Path(directory)
    artifacts.atomic_write_text(directory / TOKENIZER_JSON, self.tokenizer.to_str())
    artifacts.atomic_write_json(directory / VOCAB_JSON, self.to_json())

  @classmethod
  def load(cls, directory: str | os.PathLike) -> "JointVocab":
    directory = pathlib.Path(directory)
    path = directory / VOCAB_JSON
    if not path.is_file():
      raise DataError("no such file (a saved JointVocab is needed)", path=path)
    meta = artifacts.read_json(path)
    if meta.get("format_version") != FORMAT_VERSION:
      raise DataError(f"format_version {meta.get('format_version')} is not {FORMAT_VERSION}",
                      path=path)
    vocab = cls(load_tokenizer(directory / TOKENIZER_JSON), meta["codebook_sizes"],
                text_kind=meta["text_kind"], num_sentinels=meta["num_sentinels"],
                tasks=meta["tasks"], fields=meta["fields"], multiple=meta["multiple"],
                pad_id=meta.get("pad_id"), text_rows=meta.get("text_rows"))
    for key in ("text_size", "sid_offset", "size", "padded_size", "pad"):
      if key not in meta:   # files written before the pad was configurable lack "pad"
        continue
      if getattr(vocab, key) != meta[key]:
        raise DataError(f"{key} is {meta[key]} in the file but {getattr(vocab, key)} with this "
                        f"tokenizer.json (was it replaced?)", path=path)
    return vocab


def make_joint_vocab(catalog: Catalog | None, codebook_sizes: Sequence[int], *,
                     text_tokenizer: str = "bpe", bpe_vocab_size: int = 8192,
                     bpe_min_frequency: int = 2, num_sentinels: int = 32,
                     fields: Sequence[str] = FIELDS, pad_id: int | None = None,
                     text_rows: int | None = None) -> JointVocab:
  """A JointVocab from config values.

  Args:
    text_tokenizer: "bpe" trains a byte-level BPE on the catalog's `fields`; anything else is
      the path of a tokenizer.json (or a folder holding one, e.g. MiniLM's).
    pad_id, text_rows: see JointVocab.
  """
  if text_tokenizer == "bpe":
    if catalog is None:
      raise ConfigError("text_tokenizer", "'bpe' needs a catalog to train on")
    texts = catalog_texts(catalog, fields)
    if not texts:
      raise DataError(f"the catalog has no text in fields {list(fields)} to train a BPE on")
    tokenizer = train_bpe(texts, vocab_size=bpe_vocab_size, min_frequency=bpe_min_frequency)
    kind = "bpe"
  else:
    tokenizer, kind = load_tokenizer(text_tokenizer), "pretrained"
  return JointVocab(tokenizer, codebook_sizes, text_kind=kind, num_sentinels=num_sentinels,
                    fields=fields, pad_id=pad_id, text_rows=text_rows)
