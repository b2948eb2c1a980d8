"""A multi-task transformer ranker over tokenized features: ID, early-fusion and late-fusion.

The input is a short token sequence: the user's history items (one token each, with a position
embedding), the candidate's tokens, and a learned readout token whose final state feeds one
output per task (logits of binary tasks such as click / like / follow / order; values of
regression tasks such as watch time or rating). Variants (`RankerConfig.variant`):

- "id": item-ID embeddings for history and candidate (the classic ranker; a cold item's row
  was never trained, so it scores cold candidates at about chance);
- early fusion of ID and SID into one vector per item, history and candidate alike:
  "replace" (the summed prefix n-gram SID embedding instead of the ID), "concat" ([id, sid]
  projected to d), "gate" (a learned sigmoid gate between the two);
- "late" (FLUID): no candidate ID; each code family of the candidate is its own token, its
  prefix n-gram embeddings summed over levels (e.g. the room's majority-vote code and the
  current slice's code as separate tokens, each marked by a learned token-type embedding);
  `late_tokens="level"` splits every (family, level) into its own token instead. History
  through summed SID embeddings. Families in the items' code space read the items' prefix
  tables by default (`shared_tables`), or get their own tables (FLUID's separate slice and
  room tables). `candidate_id=True` adds the candidate ID as one more token that the staged
  warmup (`lrm.jobs.ranking.warmup_train`) retires: its presence is drawn per example with a
  probability that decays to 0. Per-level tokens trained worse on Beauty with MiniLM SIDs (warm / cold AUC
  .640 / .578 against .724 / .680 for one summed token, 2 layers), hence the default.

Cold items, and why the SID tables start at zero: a cold item's deep prefixes (its level-3
code, often its level-2 prefix) have no training event, so their rows keep their initial
values. Prefix tables start at zero (Adam never moves a row without gradient, so an unseen
prefix reads exactly zero), and `sid_level_dropout` zeroes level l of a training item's SID
with probability rate[l] (DropoutNet-style): the model learns to rank from the coarse levels
when the fine ones are missing, which is what a cold item looks like. History items use the
same rates unless `history_level_dropout` gives their own: a history item is always warm, so
there the rates only regularise. With zero-initialised tables and rates 0 / .2 / .5 (2 layers,
1,500 steps) the SID ranker kept 80% of its warm lift on Beauty's cold items instead of 70%.

User-side tokens beyond the history (off by default; each adds parameters created after all
the others, so a ranker without them initialises exactly as before):

- `user_feature_sizes`: one token per user attribute (age bucket, gender, occupation, zip
  area; `lrm.tasks.ranking.encode_user_features`), each field with its own small table (code 0
  = missing is a learned vector too) plus a per-field type embedding;
- `interaction_counts`: one token per count column (`lrm.tasks.ranking.interaction_counts`:
  how many earlier visible events share the candidate's level-l SID prefix, l = 1..c, then how
  many were the candidate itself), each column a table of `count_buckets` log2 buckets plus a
  type embedding. The ID variant must not see SID information, so it reads only the
  same-item column; every SID variant reads all c + 1.

Long-term user token (`long_encoder`, off by default, its parameters created last like the
user-side tokens): the user's last T training-visible events (`long_hist` [b, T], catalog rows
from `lrm.tasks.ranking.cold_warm_split(long_history=T)`) are embedded exactly like the short
history's items (the variant's item vectors: SIDs, looked up in a code table the ranker holds
as non-trainable state `ItemCodes`, for SID variants; IDs for "id") plus a log2
position-from-end embedding, and compressed by lrm/models/compression.py's `HistoryEncoder`
with the candidate's item vector as its query (target-aware: what of a long past matters
depends on what is being ranked; for "late", the summed SID embedding of the first candidate
family that reads the items' tables). Its output joins the sequence as one token with its own
segment embedding. `mixer="full"` in the encoder's config is the full causal self-attention
baseline with the same parameters.

Loss (`ranker_loss`): per task a masked mean (binary cross-entropy or squared error) over the
examples whose label is known, weighted by `task_weights`. Batches are dicts made by
`ranker_arrays`: hist_id [b, h] (-1 pads), hist_sid [b, h, c], cand_id [b],
cand_sid/<family> [b, c], label/<task> and mask/<task> [b], optionally id_keep [b],
user_feat [b, f] (codes), count_bucket [b, c + 1] (log2 buckets, uncapped) and long_hist
[b, T] (catalog rows, -1 pads).

Shape letters: b batch, h history length, T long-history length, c SID level, n candidate
tokens, d width, t tasks.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.compression import (NUM_POSITION_BUCKETS, CompressionConfig, HistoryEncoder,
                                    log_bucket)
from lrm.models.layers import (DEFAULT_INIT, Block, embedding, key_mask, padded_rows, param,
                               rms_norm, sharding_scope)
from lrm.models.sid_features import CodeFamily, PrefixNGramEmbedding
from lrm.tasks.ranking import BINARY_TASKS, TASKS, RankingData, count_buckets

VARIANTS = ("id", "replace", "concat", "gate", "late")
_USES_ID = ("id", "concat", "gate")


@dataclasses.dataclass(frozen=True)
class RankerConfig:
  """Ranker options; validated on construction (ConfigError names the field)."""
  variant: str
  num_items: int                              # rows of the item-ID table
  item_codebook_sizes: tuple[int, ...] = ()   # the items' SID family (history, early fusion)
  # Candidate code families of the late variant: name -> codebook sizes ("item" for items;
  # "room" and "slice" for live rooms). Empty: the item family.
  candidate_families: tuple[tuple[str, tuple[int, ...]], ...] = ()
  candidate_id: bool = False                  # late: also a candidate-ID token (warmup)
  tasks: tuple[str, ...] = ("click",)
  task_weights: tuple[float, ...] = ()        # empty = 1 per task
  max_history: int = 20
  d: int = 64
  num_layers: int = 2
  num_heads: int = 4
  mlp_dim: int = 128
  dropout: float = 0.1
  max_rows: int = 1 << 16                     # prefix n-gram tables hash beyond this many rows
  # late: candidate families whose codebooks equal the items' read the items' prefix tables
  # (a candidate's code and a history item's code meet in one space); False = a table set per
  # family (FLUID's separate slice and room tables).
  shared_tables: bool = True
  # Codes per user attribute (0 = missing included), one token each; empty = no such tokens.
  user_feature_sizes: tuple[int, ...] = ()
  interaction_counts: bool = False            # count tokens (id: same item only)
  count_buckets: int = 8                      # log2 buckets per count column (last: >= 2^(B-2))
  late_tokens: str = "family"                 # late: one token per code family, or "level"
  # Training-time probability of zeroing each SID level's prefix embedding (module docstring:
  # cold items); levels beyond the tuple keep theirs. Empty = off.
  sid_level_dropout: tuple[float, ...] = ()
  # The same for history items (short and long history); None = `sid_level_dropout`. History
  # items are warm by construction (a cold item has no training event), so these rates only
  # regularise; the candidate's rates are what mimic a cold item.
  history_level_dropout: tuple[float, ...] | None = None
  # The long-term user token's encoder (a CompressionConfig or a dict of its fields; d_model
  # must equal d); None = off.
  long_encoder: CompressionConfig | None = None

  def __post_init__(self):
    object.__setattr__(self, "item_codebook_sizes", tuple(self.item_codebook_sizes))
    object.__setattr__(self, "candidate_families",
                       tuple((str(n), tuple(s)) for n, s in self.candidate_families))
    object.__setattr__(self, "tasks", tuple(self.tasks))
    object.__setattr__(self, "task_weights", tuple(float(w) for w in self.task_weights))
    object.__setattr__(self, "user_feature_sizes", tuple(int(x) for x in
                                                         self.user_feature_sizes))
    object.__setattr__(self, "sid_level_dropout", tuple(float(x) for x in
                                                        self.sid_level_dropout))
    if self.late_tokens not in ("family", "level"):
      raise ConfigError("late_tokens", f"must be 'family' or 'level', got {self.late_tokens!r}")
    if self.history_level_dropout is not None:
      object.__setattr__(self, "history_level_dropout",
                         tuple(float(x) for x in self.history_level_dropout))
    for name in ("sid_level_dropout", "history_level_dropout"):
      rates = getattr(self, name) or ()
      if any(not 0.0 <= x < 1.0 for x in rates):
        raise ConfigError(name, f"rates must be in [0, 1), got {list(rates)}")
      if rates and self.variant == "id":
        raise ConfigError(name, "the id variant has no SID levels")
    if self.variant not in VARIANTS:
      raise ConfigError("variant", f"must be one of {list(VARIANTS)}, got {self.variant!r}")
    if self.variant != "id" and not self.item_codebook_sizes:
      raise ConfigError("item_codebook_sizes", f"variant {self.variant!r} needs SID codebooks")
    if self.candidate_id and self.variant != "late":
      raise ConfigError("candidate_id", "only the late variant takes a separate ID token")
    if self.num_items < 1:
      raise ConfigError("num_items", f"must be >= 1, got {self.num_items}")
    if not self.tasks or any(t not in TASKS for t in self.tasks):
      raise ConfigError("tasks", f"must be a non-empty subset of {list(TASKS)}, got "
                        f"{list(self.tasks)}")
    if self.task_weights and (len(self.task_weights) != len(self.tasks)
                              or min(self.task_weights) < 0):
      raise ConfigError("task_weights", f"need {len(self.tasks)} non-negative weights, got "
                        f"{list(self.task_weights)}")
    for name in ("max_history", "d", "num_layers", "num_heads", "mlp_dim"):
      if int(getattr(self, name)) < 1:
        raise ConfigError(name, f"must be >= 1, got {getattr(self, name)}")
    if self.d % self.num_heads:
      raise ConfigError("num_heads", f"{self.num_heads} does not divide d={self.d}")
    if not 0.0 <= self.dropout < 1.0:
      raise ConfigError("dropout", f"must be in [0, 1), got {self.dropout}")
    if any(x < 1 for x in self.user_feature_sizes):
      raise ConfigError("user_feature_sizes", f"every field needs >= 1 code, got "
                        f"{list(self.user_feature_sizes)}")
    if int(self.count_buckets) < 2:
      raise ConfigError("count_buckets", f"must be >= 2, got {self.count_buckets}")
    self._check_long_encoder()

  def _check_long_encoder(self):
    enc = self.long_encoder
    if enc is None:
      return
    if hasattr(enc, "to_dict") or isinstance(enc, Mapping):
      enc = CompressionConfig.from_dict(enc, where="long_encoder")
      object.__setattr__(self, "long_encoder", enc)
    if not isinstance(enc, CompressionConfig):
      raise ConfigError("long_encoder", f"expected a CompressionConfig or a dict, got {enc!r}")
    if enc.d_model != self.d:
      raise ConfigError("long_encoder.d_model", f"must equal the ranker's d={self.d}, got "
                        f"{enc.d_model}")
    if self.variant == "late" and self.long_query_family is None:
      raise ConfigError("long_encoder", "the late variant's query needs a candidate family "
                        "that reads the items' SID tables (shared_tables, same codebooks)")

  @property
  def long_query_family(self) -> str | None:
    """late: the candidate family whose summed SID embedding queries the long history."""
    for name, sizes in self.families:
      if self.shared_tables and tuple(sizes) == self.item_codebook_sizes:
        return name
    return None

  @property
  def count_columns(self) -> int:
    """Count tokens read: the same item only for "id", every SID level + the item otherwise."""
    if not self.interaction_counts:
      return 0
    return 1 if self.variant == "id" else len(self.item_codebook_sizes) + 1

  @property
  def weights(self) -> tuple[float, ...]:
    return self.task_weights or (1.0,) * len(self.tasks)

  @property
  def families(self) -> tuple[tuple[str, tuple[int, ...]], ...]:
    return self.candidate_families or (("item", self.item_codebook_sizes),)


class ItemCodes(nnx.Variable):
  """The items' SID codes, int [items, c]: model state that is never trained."""


class Ranker(nnx.Module):
  """The ranker (module docstring). `item_codes` (int [items, c], the SID of each catalog row)
  is needed only by a SID variant with a long-history encoder, which looks up the codes of the
  long history's rows itself."""

  def __init__(self, cfg: RankerConfig, *, rngs: nnx.Rngs, item_codes=None):
    self.cfg = cfg
    d = cfg.d
    with sharding_scope():
      self.item_id = (embedding(padded_rows(cfg.num_items), d, dtype=jnp.float32, rngs=rngs)
                      if cfg.variant in _USES_ID or cfg.candidate_id else None)
      self.item_sid = (PrefixNGramEmbedding(
          [CodeFamily("item", cfg.item_codebook_sizes, max_rows=cfg.max_rows)], d,
          combine="tokens", rngs=rngs) if cfg.variant != "id" else None)
      own = [(n, s) for n, s in cfg.families if not self._shares(s)]
      self.candidate_sid = (PrefixNGramEmbedding(
          [CodeFamily(n, s, max_rows=cfg.max_rows) for n, s in own], d,
          combine="tokens", rngs=rngs) if cfg.variant == "late" and own else None)
      num_tokens = (sum(len(s) for _, s in cfg.families) if cfg.late_tokens == "level"
                    else len(cfg.families)) + int(cfg.candidate_id)
      # Which candidate token is which (family, level), since tables may be shared.
      self.token_type = embedding(num_tokens, d, names=(None, "embed"), dtype=jnp.float32,
                                  rngs=rngs)
      self.fuse = (nnx.Linear(2 * d, d, use_bias=cfg.variant == "gate",
                              kernel_init=param(DEFAULT_INIT, ("mlp", "embed")), rngs=rngs)
                   if cfg.variant in ("concat", "gate") else None)
      self.position = embedding(cfg.max_history, d, names=(None, "embed"), dtype=jnp.float32,
                                rngs=rngs)
      # Segment embeddings: 0 history, 1 candidate, 2 readout.
      self.segment = embedding(3, d, names=(None, "embed"), dtype=jnp.float32, rngs=rngs)
      self.blocks = nnx.List([
          Block(d, cfg.num_heads, d // cfg.num_heads, cfg.mlp_dim, cross=False,
                activation="gelu", dropout=cfg.dropout, dtype=jnp.float32,
                attention_impl=None, rngs=rngs) for _ in range(cfg.num_layers)])
      self.norm = rms_norm(d, dtype=jnp.float32, rngs=rngs)
      self.heads = nnx.Linear(d, len(cfg.tasks),
                              kernel_init=param(DEFAULT_INIT, ("embed", None)), rngs=rngs)
      # User-side tokens last, so rankers without them draw the same initial weights as before.
      small = lambda rows: embedding(rows, d, names=(None, "embed"), dtype=jnp.float32,
                                     rngs=rngs)
      sizes = cfg.user_feature_sizes
      self.user_feature = nnx.List([small(n) for n in sizes]) if sizes else None
      self.user_type = small(len(sizes)) if sizes else None
      cols = cfg.count_columns
      self.count_table = small(cols * cfg.count_buckets) if cols else None
      self.count_type = small(cols) if cols else None
      # Last again: its dropout stream forks the rngs, which must not shift earlier inits.
      self.level_dropout = (LevelDropout(cfg.sid_level_dropout, cfg.history_level_dropout,
                                         rngs=rngs)
                            if cfg.sid_level_dropout or cfg.history_level_dropout else None)
      # The long-term user token, last of all (module docstring).
      on = cfg.long_encoder is not None
      self.long_encoder = HistoryEncoder(cfg.long_encoder, rngs=rngs) if on else None
      self.long_position = small(NUM_POSITION_BUCKETS) if on else None
      self.long_segment = small(1) if on else None
      self.long_codes = nnx.data(None)
      if on and cfg.variant != "id":
        if item_codes is None:
          raise ConfigError("item_codes", "a SID ranker with a long_encoder needs the items' "
                            "codes")
        codes = jnp.asarray(np.asarray(item_codes), jnp.int32)
        if codes.ndim != 2 or codes.shape[1] != len(cfg.item_codebook_sizes):
          raise ConfigError("item_codes", f"expected [items, {len(cfg.item_codebook_sizes)}], "
                            f"got {tuple(codes.shape)}")
        self.long_codes = ItemCodes(codes)
    for sid in (self.item_sid, self.candidate_sid):   # unseen prefixes read zero (docstring)
      for tables in (sid.tables if sid is not None else ()):
        for table in tables:
          table.embedding[...] = jnp.zeros_like(table.embedding[...])

  def _sid_tokens(self, module: PrefixNGramEmbedding, codes, *, history: bool = False
                  ) -> jax.Array:
    """Per-level prefix embeddings, levels dropped in training (at the history's rates for
    history items). Shape: -> [..., n, d]."""
    tokens = module(codes)
    if self.level_dropout is None:
      return tokens
    levels = np.concatenate([np.arange(f.depth) for f in module.families])
    return self.level_dropout(tokens, levels, history=history)

  def _family_tokens(self, tokens: jax.Array, sizes: Sequence[tuple[int, ...]]) -> jax.Array:
    """Per-level tokens of consecutive families -> one summed token per family, unless
    `late_tokens="level"`. Shape: [b, sum(levels), d] -> [b, n, d]."""
    if self.cfg.late_tokens == "level":
      return tokens
    ends = np.cumsum([len(s) for s in sizes])
    return jnp.stack([tokens[:, e - len(s):e].sum(1) for e, s in zip(ends, sizes)], axis=1)

  def _shares(self, sizes: tuple[int, ...]) -> bool:
    return self.cfg.shared_tables and tuple(sizes) == self.cfg.item_codebook_sizes

  def _item_vectors(self, ids: jax.Array, codes: jax.Array | None, *, history: bool = False
                    ) -> jax.Array:
    """One vector per item (history, or an early-fusion candidate). Shape: ids [...] -> [..., d]."""
    v = self.cfg.variant
    id_vec = self.item_id(jnp.maximum(ids, 0)) if self.item_id is not None and v in _USES_ID \
        else None
    sid_vec = (self._sid_tokens(self.item_sid, codes, history=history).sum(-2)
               if self.item_sid is not None else None)
    if v == "id":
      return id_vec
    if v in ("replace", "late"):
      return sid_vec
    both = jnp.concatenate([id_vec, sid_vec], axis=-1)
    if v == "concat":
      return self.fuse(both)
    gate = jax.nn.sigmoid(self.fuse(both))
    return gate * id_vec + (1 - gate) * sid_vec

  def __call__(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    """Outputs per task: logits (binary tasks) or values (regression). Shape: -> [b, t]."""
    cfg = self.cfg
    hist_id = batch["hist_id"]
    b, h = hist_id.shape
    if h > cfg.max_history:
      raise ConfigError("hist_id", f"history length {h} > max_history {cfg.max_history}")
    hist_valid = hist_id >= 0
    hist = self._item_vectors(hist_id, batch.get("hist_sid"), history=True)
    hist = hist + self.position.embedding[...][cfg.max_history - h:][None] + \
        self.segment(jnp.zeros((), jnp.int32))
    hist = jnp.where(hist_valid[..., None], hist, 0.0)
    if cfg.variant == "late":
      own, parts = {}, []
      for name, sizes in cfg.families:
        key = f"cand_sid/{name}"
        if key not in batch:
          raise ConfigError("batch", f"missing '{key}' for the late variant")
        if self._shares(sizes):
          parts.append(self._family_tokens(self._sid_tokens(self.item_sid, batch[key]),
                                           [sizes]))
        else:
          own[name] = batch[key]
      if own:
        parts.append(self._family_tokens(self._sid_tokens(self.candidate_sid, own),
                                         [s for n, s in cfg.families if n in own]))
      cand = jnp.concatenate(parts, axis=1)                            # [b, n, d]
      cand_valid = jnp.ones(cand.shape[:2], bool)
      if cfg.candidate_id:
        id_tok = self.item_id(batch["cand_id"])[:, None]
        keep = batch.get("id_keep")
        keep = jnp.ones((b,), jnp.float32) if keep is None else keep.astype(jnp.float32)
        cand = jnp.concatenate([cand, id_tok * keep[:, None, None]], axis=1)
        cand_valid = jnp.concatenate([cand_valid, keep[:, None] > 0], axis=1)
    else:
      cand = self._item_vectors(batch["cand_id"], batch.get("cand_sid/item"))[:, None]
      cand_valid = jnp.ones((b, 1), bool)
    cand = cand + self.segment(jnp.ones((), jnp.int32))
    if cfg.variant == "late":
      cand = cand + self.token_type.embedding[...][None]
    user = self._user_tokens(batch, b)                                 # [b, f + counts, d]
    if self.long_encoder is not None:
      user = jnp.concatenate([user, self.long_token(batch)[:, None]], axis=1)
    readout = jnp.broadcast_to(self.segment(jnp.full((), 2, jnp.int32)), (b, 1, cfg.d))
    x = jnp.concatenate([hist, cand, user, readout], axis=1)
    mask = key_mask(jnp.concatenate([hist_valid, cand_valid,
                                     jnp.ones((b, user.shape[1] + 1), bool)], axis=1))
    for block in self.blocks:
      x = block(x, mask=mask)
    return self.heads(self.norm(x[:, -1])).astype(jnp.float32)


  def long_token(self, batch: Mapping[str, jax.Array]) -> jax.Array:
    """The long-term user token: the long history compressed with the candidate as query
    (module docstring). Shape: batch["long_hist"] int [b, T] -> [b, d]."""
    cfg = self.cfg
    rows = batch.get("long_hist")
    if rows is None:
      raise ConfigError("batch", "missing 'long_hist' for the long_encoder")
    valid = rows >= 0
    codes = None
    if self.long_codes is not None:
      table = self.long_codes[...]
      codes = jnp.where(valid[..., None], table[jnp.maximum(rows, 0)], -1)
    x = self._item_vectors(rows, codes, history=True)                  # [b, T, d]
    t = rows.shape[1]
    position = log_bucket(jnp.arange(t - 1, -1, -1), NUM_POSITION_BUCKETS)  # most recent: 1
    x = x + self.long_position(position)[None]
    x = jnp.where(valid[..., None], x, 0.0)
    if cfg.variant == "late":
      query = self._item_vectors(batch["cand_id"], batch[f"cand_sid/{cfg.long_query_family}"])
    else:
      query = self._item_vectors(batch["cand_id"], batch.get("cand_sid/item"))
    out = self.long_encoder(x, valid, query)
    return out + self.long_segment.embedding[...][0]

  def _user_tokens(self, batch: Mapping[str, jax.Array], b: int) -> jax.Array:
    """User-feature and interaction-count tokens (none when off). Shape: -> [b, f + k, d]."""
    cfg = self.cfg
    parts = [jnp.zeros((b, 0, cfg.d), jnp.float32)]
    if self.user_feature is not None:
      feats = _batch_key(batch, "user_feat", len(cfg.user_feature_sizes))
      toks = [table(jnp.clip(feats[:, i], 0, size - 1)) for i, (table, size) in
              enumerate(zip(self.user_feature, cfg.user_feature_sizes))]
      parts.append(jnp.stack(toks, axis=1) + self.user_type.embedding[...][None])
    if self.count_table is not None:
      buckets = batch.get("count_bucket")
      if buckets is None:
        raise ConfigError("batch", "missing 'count_bucket' for interaction_counts")
      if cfg.variant == "id":
        buckets = buckets[:, -1:]                  # the same-item count only: no SID prefixes
      elif buckets.shape[1] != cfg.count_columns:
        raise ConfigError("count_bucket", f"{buckets.shape[1]} columns, the ranker reads "
                          f"{cfg.count_columns} (SID levels + the item)")
      rows = (jnp.clip(buckets, 0, cfg.count_buckets - 1)
              + jnp.arange(cfg.count_columns) * cfg.count_buckets)
      parts.append(self.count_table(rows) + self.count_type.embedding[...][None])
    return jnp.concatenate(parts, axis=1)


def _batch_key(batch: Mapping[str, jax.Array], key: str, columns: int) -> jax.Array:
  if key not in batch:
    raise ConfigError("batch", f"missing '{key}'")
  value = batch[key]
  if value.ndim != 2 or value.shape[1] != columns:
    raise ConfigError(key, f"expected [b, {columns}], got {tuple(value.shape)}")
  return value


class LevelDropout(nnx.Module):
  """Zeroes whole SID levels with a per-level rate, in training only (no rescaling: a dropped
  level must look like an unseen prefix, which reads zero)."""

  def __init__(self, rates: Sequence[float], history_rates: Sequence[float] | None = None, *,
               rngs: nnx.Rngs):
    self.rates = tuple(float(r) for r in rates)
    self.history_rates = self.rates if history_rates is None else tuple(
        float(r) for r in history_rates)
    self.deterministic = False
    self.rngs = rngs["dropout"].fork()

  def __call__(self, tokens: jax.Array, levels: np.ndarray, *, history: bool = False
               ) -> jax.Array:
    """Shape: tokens [..., n, d], levels int [n] (each token's SID level) -> the same."""
    own = self.history_rates if history else self.rates
    if self.deterministic or not any(own):
      return tokens
    padded = own + (0.0,) * (int(levels.max()) + 1)
    rates = jnp.asarray([padded[level] for level in levels])
    keep = jax.random.uniform(self.rngs(), tokens.shape[:-1]) >= rates
    return tokens * keep[..., None].astype(tokens.dtype)


def task_losses(outputs: jax.Array, batch: Mapping[str, jax.Array], tasks: Sequence[str]
                ) -> dict[str, jax.Array]:
  """Per task, the masked mean loss (BCE on logits, or squared error); 0 with no label.

  Shape: outputs [b, t]; label/<task>, mask/<task> [b].
  """
  out = {}
  for i, task in enumerate(tasks):
    y = batch[f"label/{task}"].astype(jnp.float32)
    m = batch[f"mask/{task}"].astype(jnp.float32)
    if task in BINARY_TASKS:
      per = optax.sigmoid_binary_cross_entropy(outputs[:, i], y)
    else:
      per = jnp.square(outputs[:, i] - y)
    out[task] = jnp.sum(per * m) / jnp.maximum(jnp.sum(m), 1.0)
  return out


def ranker_loss(model: Ranker, batch: Mapping[str, jax.Array]) -> tuple[jax.Array, dict]:
  """The weighted multi-task loss (the trainer's `loss_fn`)."""
  losses = task_losses(model(batch), batch, model.cfg.tasks)
  loss = sum(w * losses[t] for t, w in zip(model.cfg.tasks, model.cfg.weights))
  return loss, {"loss": loss, **{f"loss/{t}": v for t, v in losses.items()}}


# ------------------------------------------------------------------------------------------
# Inputs and predictions


def ranker_arrays(data: RankingData, item_codes: np.ndarray, tasks: Sequence[str], *,
                  candidate_codes: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
  """The batch arrays of `data` for the ranker.

  `item_codes`: int [items, c], the SID of each catalog row (history, and item candidates).
  `candidate_codes`: family -> int [candidates, c] or, for per-slice families, [candidates,
  slices, c] indexed by `data.slice`; default: {"item": item_codes}. Missing tasks in `data`
  get a zero mask. User features and interaction counts are emitted when `data` has them
  (`user_feat` codes; `count_bucket` as log2 buckets), and so is the long history
  (`long_hist`, catalog rows).
  """
  item_codes = np.asarray(item_codes, np.int32)
  hist = data.history
  hist_sid = np.where(hist[..., None] >= 0, item_codes[np.maximum(hist, 0)], -1)
  out = {"hist_id": hist.astype(np.int32), "hist_sid": hist_sid.astype(np.int32),
         "cand_id": data.candidate.astype(np.int32)}
  for name, codes in (candidate_codes or {"item": item_codes}).items():
    codes = np.asarray(codes, np.int32)
    if codes.ndim == 3:
      if (data.slice < 0).any():
        raise ConfigError(f"candidate_codes.{name}", "per-slice codes need data.slice >= 0")
      out[f"cand_sid/{name}"] = codes[data.candidate, data.slice]
    else:
      out[f"cand_sid/{name}"] = codes[data.candidate]
  if data.user_features is not None:
    out["user_feat"] = data.user_features.astype(np.int32)
  if data.counts is not None:
    out["count_bucket"] = count_buckets(data.counts)
  if data.long_history is not None:   # rows only: the ranker looks up their codes itself
    out["long_hist"] = data.long_history.astype(np.int32, copy=False)
  n = len(data)
  for task in tasks:
    out[f"label/{task}"] = data.labels.get(task, np.zeros(n, np.float32)).astype(np.float32)
    out[f"mask/{task}"] = data.masks.get(task, np.zeros(n, np.float32)).astype(np.float32)
  return out


@functools.partial(jax.jit, static_argnums=0)
def _forward(graphdef, state, batch):
  return nnx.merge(graphdef, state)(batch)


def predict(model: Ranker, arrays: Mapping[str, np.ndarray], *, batch_size: int = 1024,
            id_keep: float | None = None) -> np.ndarray:
  """Outputs for every row (eval mode; the last batch padded to a full one).

  `id_keep`: for a model with a candidate-ID token, 1.0 keeps it, 0.0 removes it.
  Shape: -> float32 [n, t].
  """
  model.eval()
  graphdef, state = nnx.split(model)
  keys = [k for k in arrays if not k.startswith(("label/", "mask/"))]
  n = len(arrays["cand_id"])
  out = []
  for start in range(0, n, batch_size):
    batch = {k: arrays[k][start:start + batch_size] for k in keys}
    m = len(batch["cand_id"])
    if m < batch_size and n > batch_size:
      batch = {k: np.concatenate([v, np.repeat(v[-1:], batch_size - m, axis=0)])
               for k, v in batch.items()}
    if id_keep is not None:
      batch["id_keep"] = np.full(len(batch["cand_id"]), id_keep, np.float32)
    out.append(np.asarray(_forward(graphdef, state, batch))[:m])
  return np.concatenate(out)


# ------------------------------------------------------------------------------------------
# Staged warmup: retiring the candidate ID during incremental training


def id_keep_probability(step: Any, *, hold_steps: int, decay_steps: int) -> Any:
  """Probability that the candidate-ID token is present at `step`: 1 for `hold_steps`, then a
  linear decay to 0 over `decay_steps` (0 from then on). Works on ints and jax arrays."""
  if hold_steps < 0 or decay_steps < 1:
    raise ConfigError("warmup", f"need hold_steps >= 0 and decay_steps >= 1, got "
                      f"{hold_steps}, {decay_steps}")
  frac = (step - hold_steps) / decay_steps
  return jnp.clip(1.0 - frac, 0.0, 1.0) if isinstance(step, jax.Array) else \
      float(min(max(1.0 - frac, 0.0), 1.0))
