"""The bilingual SID language model stage (YouTube LRM / PLUM), wiring the stages before it.

  SID table (run_dir/sid) + catalog text -> JointVocab (run_dir/lm/vocab)
  -> sid2text / text2sid / next / masked examples and history documents from leave-one-out's
     training part, mixed by `lm.tasks.weights` and packed into rows (lrm/tasks/lm_tasks.py)
  -> Llama-style LM (a named size, explicit fields, or an HF checkpoint: `lm.init_from`)
  -> the project's trainer (checkpoints, resume, validation, early stopping)
  -> evaluation: text->SID accuracy@1/@10 on held-out titles and SID->text title F1 (items
     whose links were kept out of training), next-item Recall/NDCG@K on validation and test
     (constrained beam search, TIGER's protocol; prompts in the `next` or `history` format,
     `lm.tasks.next_item_prompt`), cold-start recall, the after-item table.

Layout (`lm.variant` "" = run_dir/lm itself; a name = run_dir/lm/<name>, for ablations that
share the vocabulary):
  run_dir/lm/vocab/                 tokenizer.json + joint_vocab.json + manifest
  <stage>/checkpoints/, metrics.jsonl, tensorboard/, train_spec.json, manifest.json
  <stage>/predictions_{valid,test}.jsonl, metrics.json, results.json
  <stage>/after_item/               after_item.npz + manifest (AfterItemTable)

Held-out titles: `lm.eval.text_holdout` items (random, with a title) get no sid2text /
text2sid example; half are the validation set of text->SID, half the test set. They still
occur in sequences, so the model knows their SIDs from behaviour but never saw their title
linked: text->SID on them measures generalisation, not recall of a memorised pair.

Cold start (`lm.cold_start.fraction` > 0): a share of items is removed from every training
interaction (lrm/data/splits.py cold_start_split); their text stays in the linking tasks.
Warm metrics then come from leave-one-out of the remaining sequences, and `cold_test` is the
next-item recall of users whose held-out target is a cold item.

Continued pretraining (`continue_pretraining`): a trained stage resumes on a grown catalog:
new items get SIDs from the fitted SID tokenizer (no refit), the vocabulary and the model grow
(new rows from prefix siblings, AdamW state carried), training continues on new data plus a
replay of old items' links, and freshness is measured every few steps on the new items.

The `lm` config section is not in configs/base.py: `lm_defaults()` holds its defaults and
`pipeline_config` strips it before the data/embed/sid stages validate the rest.
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import json
import pathlib
import re
import time
from typing import Any, Mapping, Sequence

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from flax import nnx

from lrm.core import artifacts
from lrm.core.config import check_known, pipeline_config
from lrm.core.errors import ConfigError, DataError
from lrm.core.report import print_table
from lrm.data.splits import EvalSet, cold_start_split, leave_one_out
from lrm.data.types import Sequences
from lrm.decode.generative import pad_rows, recommend
from lrm.eval.metrics import most_popular_ranking, retrieval_metrics
from lrm.eval.report import write_predictions
from lrm.models.hf_loader import load_hf_lm, read_hf_config
from lrm.models.lm import LM, LM_SIZES, LMConfig, SIDDecoder, greedy_generate, lm_loss
from lrm.models.vocab_growth import grow_vocab
from lrm.parallel.mesh import mesh_from_config
from lrm.parallel.rules import sharding_context
from lrm.pipeline import prepare_stages, write_results
from lrm.sid.stage import assign_codes
from lrm.sid.table import SIDTable
from lrm.sid.trie import trie_from_table
from lrm.tasks import lm_tasks as T
from lrm.tasks.lm_tasks import LMTaskConfig, next_prompts, sid2text_prompts, text2sid_prompts
from lrm.tokens.joint_vocab import JointVocab, field_text, make_joint_vocab
from lrm.train.checkpoint import Checkpointer
from lrm.train.optimizer import optimizer_from_config
from lrm.train.trainer import LoopSpec, train

SPLITS = ("valid", "test")
MODEL_SIZE_FIELDS = ("d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim")
AFTER_ITEM_NPZ = "after_item.npz"


# -- configuration ---------------------------------------------------------------------------

def lm_defaults() -> ml_collections.ConfigDict:
  """Every field of the `lm` config section, with its default."""
  lm = ml_collections.ConfigDict()
  lm.variant = ""                 # "" = run_dir/lm; a name = run_dir/lm/<name> (ablations)
  lm.size = "10m"                 # lrm/models/lm.py LM_SIZES name; "" = lm.model fields only
  lm.init_from = ""               # an HF Llama/Qwen checkpoint folder (its tokenizer.json too)
  lm.init_noise_scale = 0.1       # new rows of an HF checkpoint: mean + this x std x N(0, 1)
  # Architecture: size fields of 0 take the size's value; the rest are LMConfig fields.
  lm.model = ml_collections.ConfigDict(dict(
      d_model=0, num_layers=0, num_heads=0, num_kv_heads=0, head_dim=0, mlp_dim=0,
      rope_theta=10000.0, tie_embeddings=True, init_std=0.02, dtype="float32",
      attention_impl="", remat=False))
  # The joint vocabulary (lrm/tokens/joint_vocab.py make_joint_vocab).
  lm.vocab = ml_collections.ConfigDict(dict(
      text_tokenizer="bpe",       # bpe (trained on the catalog) or a tokenizer.json path
      bpe_vocab_size=8192, bpe_min_frequency=2, num_sentinels=8,
      pad_id=-1))                 # -1: detect the tokenizer's pad (or add one)
  # Tasks, mixing and packing (lrm/tasks/lm_tasks.py LMTaskConfig; num_examples 0 = all).
  lm.tasks = ml_collections.ConfigDict(dict(
      weights=ml_collections.ConfigDict(dict(sid2text=1.0, text2sid=1.0, next=1.0,
                                             masked=1.0, history=0.0)),
      text_fields=("title", "brand", "categories"), max_field_tokens=48, max_history=20,
      history_titles=False,       # text beside each SID in histories (the mixed document)
      history_fields=("title",),  # ... which fields, in order (a subset of text_fields)
      history_title_tokens=16,    # ... tokens kept per field
      history_text_loss=False,    # history documents also score that text (SID -> text)
      history_overlap=8,
      next_item_prompt="auto",    # auto: history prompts when history is weighted, next not
      max_prompt_tokens=384,
      mask_fraction=0.15, prefix_lm_tasks=("masked",), row_length=512, overflow="truncate",
      open_rows=64, num_examples=0,
      mix_by="share",             # weights as shares of the mix, or "passes" per epoch (dense)
      seed=0))
  # The training loop and optimizer (lrm/train/trainer.py LoopSpec, lrm/train/optimizer.py).
  lm.train = ml_collections.ConfigDict(dict(
      batch_size=32, num_steps=2000, learning_rate=1e-3, warmup_steps=100, decay="cosine",
      end_fraction=0.0, weight_decay=0.01, b1=0.9, b2=0.98, clip_norm=1.0, eval_every=500,
      log_every=50, checkpoint_every=500, patience=0,
      best_metric="valid/ndcg@10",   # or valid/text2sid_acc@10 (valid/recall@k, ...@1)
      best_mode="max", keep_last=2, seed=0, worker_count=0))
  lm.eval = ml_collections.ConfigDict(dict(
      ks=(5, 10), beam_size=20, batch_size=128,
      valid_users=500,            # users in periodic validation (0 = all)
      max_users=0,                # users per split in the final evaluation (0 = all)
      text_holdout=200,           # items whose links are kept out of training (half valid)
      sid2text_tokens=32))        # greedy tokens generated for SID -> text
  lm.cold_start = ml_collections.ConfigDict(dict(fraction=0.0, seed=0, by="random"))
  lm.after_item = ml_collections.ConfigDict(dict(num_items=100, top_k=10))  # 0 items = none
  lm.continued = ml_collections.ConfigDict(dict(
      steps=200, eval_every=20, replay_fraction=0.5, learning_rate=5e-4, batch_size=0,
      eval_items=200,             # new items scored for text -> SID freshness
      threshold=0.5))             # freshness: first step with new-item text->SID acc@10 >= it
  return lm


@dataclasses.dataclass(frozen=True)
class LMSpec:
  """The validated `lm` section."""
  section: Mapping[str, Any]       # the whole section as a plain dict (manifests)
  tasks: Any                       # LMTaskConfig
  train: dict[str, Any]
  ks: tuple[int, ...]

  def __getattr__(self, name: str) -> Any:
    try:
      return self.__dict__["section"][name]
    except KeyError:
      raise AttributeError(name) from None


def validate(section) -> LMSpec:
  """Checks the `lm` section (unknown fields, values) before anything runs."""
  d = section.to_dict() if hasattr(section, "to_dict") else dict(section)
  defaults = lm_defaults().to_dict()
  check_known({k: v for k, v in d.items() if k != "tasks"}, defaults, prefix="lm.")
  check_known({k: v for k, v in d.get("tasks", {}).items() if k != "weights"},
              defaults["tasks"], prefix="lm.tasks.")
  d = _merge(defaults, d)
  if d["size"] and d["size"] not in LM_SIZES:
    raise ConfigError("lm.size", f"'{d['size']}' is not one of {sorted(LM_SIZES)} (or '')")
  for name in MODEL_SIZE_FIELDS:
    value = d["model"][name]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
      raise ConfigError(f"lm.model.{name}", f"must be an integer >= 0, got {value!r}")
    if not d["size"] and not d["init_from"] and value == 0:
      raise ConfigError(f"lm.model.{name}", "must be set when lm.size is ''")
  if d["init_from"] and not pathlib.Path(d["init_from"]).is_dir():
    raise ConfigError("lm.init_from", f"{d['init_from']} is not a checkpoint folder")
  t = dict(d["tasks"])
  t["weights"] = {k: float(v) for k, v in dict(t["weights"]).items()}
  t["num_examples"] = int(t["num_examples"]) or None
  for name in ("text_fields", "history_fields", "prefix_lm_tasks"):
    t[name] = tuple(t[name])
  try:
    tasks = LMTaskConfig(**t).validate()
  except ConfigError as e:
    raise ConfigError("lm." + e.field.replace("lm_tasks.", "tasks."), _message(e)) from None
  # Constrained decoding runs text->SID and next-item prompts causally (lrm/decode/generative).
  causal_only = [n for n in ("next", "text2sid", "history") if n in tasks.prefix_lm_tasks]
  if causal_only:
    raise ConfigError("lm.tasks.prefix_lm_tasks", f"{causal_only} are decoded with causal "
                      "prompts; only sid2text and masked may be prefix-LM tasks")
  try:
    LoopSpec.from_config(d["train"], where="lm.train")
    optimizer_from_config(d["train"])
  except ConfigError as e:
    raise ConfigError(e.field if e.field.startswith("lm.") else "lm." + e.field,
                      _message(e)) from None
  ev = d["eval"]
  ks = tuple(int(k) for k in ev["ks"])
  if not ks or min(ks) < 1:
    raise ConfigError("lm.eval.ks", f"need positive cut-offs, got {ks}")
  for name in ("beam_size", "batch_size", "sid2text_tokens"):
    if int(ev[name]) < 1:
      raise ConfigError(f"lm.eval.{name}", f"must be >= 1, got {ev[name]}")
  for name in ("valid_users", "max_users", "text_holdout"):
    if int(ev[name]) < 0:
      raise ConfigError(f"lm.eval.{name}", f"must be >= 0, got {ev[name]}")
  best = d["train"]["best_metric"]
  known = ({f"valid/{m}@{k}" for m in ("recall", "ndcg") for k in ks}
           | ({"valid/text2sid_acc@1", "valid/text2sid_acc@10"} if ev["text_holdout"] >= 2
              else set()))
  if best not in known:
    raise ConfigError("lm.train.best_metric", f"'{best}' is not among {sorted(known)}")
  cs = d["cold_start"]
  if not 0.0 <= float(cs["fraction"]) < 1.0:
    raise ConfigError("lm.cold_start.fraction", f"must be in [0, 1), got {cs['fraction']}")
  if cs["by"] not in ("random", "first_seen"):
    raise ConfigError("lm.cold_start.by", f"must be random or first_seen, got {cs['by']!r}")
  ai = d["after_item"]
  if int(ai["num_items"]) < 0 or int(ai["top_k"]) < 1:
    raise ConfigError("lm.after_item.num_items" if int(ai["num_items"]) < 0
                      else "lm.after_item.top_k", f"bad value in {ai}")
  co = d["continued"]
  for name in ("steps", "eval_every", "eval_items"):
    if int(co[name]) < 1:
      raise ConfigError(f"lm.continued.{name}", f"must be >= 1, got {co[name]}")
  if not 0.0 <= float(co["replay_fraction"]) < 1.0:
    raise ConfigError("lm.continued.replay_fraction", f"must be in [0, 1), got "
                      f"{co['replay_fraction']}")
  if not float(co["learning_rate"]) > 0 or int(co["batch_size"]) < 0:
    raise ConfigError("lm.continued.learning_rate", "must be > 0 (and batch_size >= 0)")
  if int(ev["text_holdout"]) and "title" not in tasks.text_fields:
    raise ConfigError("lm.tasks.text_fields", "needs 'title' (text->SID / SID->text are "
                      "evaluated on titles), or set lm.eval.text_holdout=0")
  if d["vocab"]["text_tokenizer"] == "bpe" and int(d["vocab"]["bpe_vocab_size"]) < 258:
    raise ConfigError("lm.vocab.bpe_vocab_size", f"must be > 257, got "
                      f"{d['vocab']['bpe_vocab_size']}")
  return LMSpec(section=d, tasks=tasks, train=dict(d["train"]), ks=ks)


def _message(e: ConfigError) -> str:
  text = str(e)
  return text.split(": ", 1)[1] if text.startswith(e.field + ": ") else text


def _merge(defaults: dict, d: Mapping) -> dict:
  out = dict(defaults)
  for k, v in d.items():
    out[k] = _merge(defaults[k], v) if isinstance(v, Mapping) and isinstance(
        defaults.get(k), Mapping) and k != "weights" else (dict(v) if isinstance(v, Mapping)
                                                            else v)
  return out


# -- preparation -----------------------------------------------------------------------------

@dataclasses.dataclass
class LMPrepared:
  """What the LM stage reads, derived from the dataset, the SID table and the vocabulary."""
  dataset: Any
  split: Any                   # LeaveOneOut over the training sequences (cold items removed)
  table: Any                   # SIDTable
  vocab: Any                   # JointVocab
  trie: Any                    # SIDTrie over the table's full codes
  tasks: Any                   # LMTaskConfig
  text_valid: np.ndarray       # held-out item ids (no link examples): validation ...
  text_test: np.ndarray        # ... and test of text -> SID / SID -> text
  cold: Any = None             # ColdStartSplit or None
  sid_id: str = ""

  @property
  def text_holdout(self) -> np.ndarray:
    return np.concatenate([self.text_valid, self.text_test])


def build_vocab(spec: LMSpec, catalog, table):
  """The JointVocab of the config (an HF checkpoint's tokenizer when `init_from` is set)."""
  v = spec.vocab
  text_tokenizer, text_rows = v["text_tokenizer"], None
  if spec.init_from:
    if text_tokenizer == "bpe":
      text_tokenizer = spec.init_from
    text_rows = int(read_hf_config(spec.init_from).get("vocab_size", 0)) or None
  try:
    return make_joint_vocab(catalog, table.full_codebook_sizes, text_tokenizer=text_tokenizer,
                            bpe_vocab_size=int(v["bpe_vocab_size"]),
                            bpe_min_frequency=int(v["bpe_min_frequency"]),
                            num_sentinels=int(v["num_sentinels"]),
                            fields=tuple(spec.tasks.text_fields),
                            pad_id=None if int(v["pad_id"]) < 0 else int(v["pad_id"]),
                            text_rows=text_rows)
  except ConfigError as e:
    raise ConfigError("lm.vocab." + e.field, _message(e)) from None


def vocab_stage(spec: LMSpec, run_dir: pathlib.Path, catalog, table, sid_id: str):
  """Builds and saves run_dir/lm/vocab, or loads it when complete for this config and SIDs."""
  out = pathlib.Path(run_dir) / "lm" / "vocab"
  stage_config = {"vocab": spec.vocab, "init_from": spec.init_from,
                  "fields": list(spec.tasks.text_fields)}
  inputs = {"sid": sid_id}
  if artifacts.is_complete(out, stage_config, inputs):
    return JointVocab.load(out)
  vocab = build_vocab(spec, catalog, table)
  if jax.process_index() == 0:
    (out / artifacts.MANIFEST).unlink(missing_ok=True)
    vocab.save(out)
    artifacts.write_manifest(out, stage="lm/vocab", config=stage_config, inputs=inputs,
                             counts={"size": vocab.size, "padded_size": vocab.padded_size,
                                     "text_size": vocab.text_size, "pad": vocab.pad})
  return vocab


def prepare(spec: LMSpec, dataset, table, vocab, *, sid_id: str = "",
            seed: int = 0) -> LMPrepared:
  """Splits, held-out titles and cold items (all from `seed`), the trie."""
  catalog = dataset.catalog
  if not np.isin(catalog.item_ids, table.item_ids).all():
    raise ConfigError("sid", "the SID table does not cover the catalog; refit it")
  sequences, cold = dataset.sequences, None
  cs = spec.cold_start
  if float(cs["fraction"]) > 0:
    cold = cold_start_split(sequences, catalog, fraction=float(cs["fraction"]),
                            seed=int(cs["seed"]), by=cs["by"])
    sequences = cold.train
  split = leave_one_out(sequences)
  titles = catalog.fields.get("title")
  n = int(spec.eval["text_holdout"])
  with_title = np.array([], np.int64) if titles is None else catalog.item_ids[
      np.array([field_text(t) is not None for t in titles], bool)]
  if cold is not None:   # cold items are for the cold-start numbers, keep them linked
    with_title = with_title[~np.isin(with_title, cold.cold_items)]
  n = min(n, len(with_title))
  chosen = np.random.default_rng([seed, 17]).choice(with_title, n, replace=False) \
      if n else np.zeros(0, np.int64)
  return LMPrepared(dataset=dataset, split=split, table=table, vocab=vocab,
                    trie=trie_from_table(table), tasks=spec.tasks,
                    text_valid=np.sort(chosen[:n // 2]), text_test=np.sort(chosen[n // 2:]),
                    cold=cold, sid_id=sid_id)


def training_rows(prep: LMPrepared) -> tuple[dict[str, np.ndarray], Any]:
  """Packed rows of the weighted task mix (held-out titles kept out of the linking tasks)."""
  return T.training_rows(prep.dataset.catalog, prep.table, prep.vocab, prep.split, prep.tasks,
              holdout_items=prep.text_holdout)


# -- model -----------------------------------------------------------------------------------

def model_config(spec: LMSpec, vocab):
  """The LMConfig of the `lm` section over `vocab` (not for `init_from`)."""
  m = dict(spec.model)
  fields = dict(LM_SIZES[spec.size]) if spec.size else {}
  fields.update({k: int(m[k]) for k in MODEL_SIZE_FIELDS if int(m[k]) > 0})
  fields.update(rope_theta=float(m["rope_theta"]), tie_embeddings=bool(m["tie_embeddings"]),
                init_std=float(m["init_std"]), dtype=m["dtype"],
                attention_impl=m["attention_impl"] or None, remat=bool(m["remat"]))
  try:
    return LMConfig(vocab_size=vocab.padded_size, sid_start=vocab.sid_offset,
                    codebook_sizes=vocab.codebook_sizes, **fields)
  except ConfigError as e:
    raise ConfigError("lm." + e.field, _message(e)) from None


def build_model(spec: LMSpec, vocab, *, seed: int, mesh=None):
  """A fresh LM, or the HF checkpoint `init_from` with SID rows appended."""
  if spec.init_from:
    m = spec.model
    return load_hf_lm(spec.init_from, codebook_sizes=vocab.codebook_sizes,
                      sid_start=vocab.sid_offset, vocab_size=vocab.padded_size,
                      noise_scale=float(spec.init_noise_scale), seed=seed, mesh=mesh,
                      dtype=m["dtype"], attention_impl=m["attention_impl"] or None,
                      remat=bool(m["remat"]))
  cfg = model_config(spec, vocab)
  with sharding_context(mesh):
    return LM(cfg, rngs=nnx.Rngs(params=seed))


def count_params(model) -> int:
  return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(nnx.state(model, nnx.Param))))


# -- decoding and metrics --------------------------------------------------------------------

def _decode_sids(model, prompts, trie, *, k: int, beam_size: int, batch_size: int):
  if len(prompts) == 0:
    return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
  rec = recommend(SIDDecoder(model), prompts.tokens, prompts.segment_ids > 0, trie,
                  beam_size=max(beam_size, k), top_k=k, batch_size=batch_size)
  return rec.items, rec.scores


def text2sid_accuracy(model, prep: LMPrepared, item_ids, *, beam_size: int,
                      batch_size: int) -> dict[str, float]:
  """Accuracy@1 / @10 of constrained text -> SID decoding from each item's title."""
  prompts = text2sid_prompts(prep.dataset.catalog, prep.table, prep.vocab, item_ids,
                             prep.tasks, field="title")
  if len(prompts) == 0:
    return {"text2sid_acc@1": 0.0, "text2sid_acc@10": 0.0, "items": 0}
  items, _ = _decode_sids(model, prompts, prep.trie, k=10, beam_size=beam_size,
                          batch_size=batch_size)
  hit = items == prompts.item_ids[:, None]
  return {"text2sid_acc@1": float(hit[:, :1].any(1).mean()),
          "text2sid_acc@10": float(hit.any(1).mean()), "items": int(len(prompts))}


def next_item_ranking(model, prep: LMPrepared, eval_set, *, k: int, beam_size: int,
                      batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Top-k items per user of an EvalSet (constrained beam search), and the targets."""
  prompts = next_prompts(eval_set, prep.dataset.catalog, prep.table, prep.vocab, prep.tasks)
  items, _ = _decode_sids(model, prompts, prep.trie, k=k, beam_size=beam_size,
                          batch_size=batch_size)
  return items, prompts.item_ids


def text_token_mask(vocab, vocab_size: int) -> np.ndarray:
  """What SID -> text may generate: the text tokenizer's ids, the field markers and eos (no
  padding, no SIDs, no task or other special tokens). Shape: -> bool [vocab_size]."""
  allowed = np.zeros(vocab_size, bool)
  allowed[:vocab.tokenizer_size] = True
  allowed[vocab.pad] = False
  allowed[[vocab.eos] + [vocab.field(f) for f in vocab.fields]] = True
  return allowed


@functools.partial(jax.jit, static_argnames=("graphdef", "num_tokens"))
def _greedy_batch(graphdef, params, prompt, valid, prefix, allowed, *, num_tokens: int):
  """One batch of `greedy_generate`; the graphdef is static and the params traced, so one
  compile serves every batch and checkpoint of an architecture (as lrm/decode/generative)."""
  return greedy_generate(nnx.merge(graphdef, params), prompt, valid, num_tokens,
                         prompt_prefix=prefix, allowed=allowed)


def greedy_text(model, prompts, allowed: np.ndarray, *, num_tokens: int,
                batch_size: int) -> np.ndarray:
  """Greedy generation of `num_tokens` allowed tokens (`text_token_mask`) after each prompt,
  in fixed-size batches (the last one padded: static shapes).

  Shape: prompts.tokens / segment_ids / prefix [m, P], allowed bool [v]
    -> int32 [m, num_tokens].
  """
  model.eval()
  graphdef, params = nnx.split(model)
  allowed = jnp.asarray(allowed, bool)
  m = len(prompts.tokens)
  valid = prompts.segment_ids > 0
  batch_size = max(1, min(batch_size, m))
  out = []
  for lo in range(0, m, batch_size):
    rows = slice(lo, lo + batch_size)
    batch = [jnp.asarray(pad_rows(np.asarray(x[rows]), batch_size))
             for x in (prompts.tokens, valid, prompts.prefix)]
    generated = _greedy_batch(graphdef, params, *batch, allowed, num_tokens=int(num_tokens))
    out.append(np.asarray(generated)[:min(batch_size, m - lo)])
  return np.concatenate(out) if out else np.zeros((0, num_tokens), np.int32)


def generated_title(vocab, ids: np.ndarray) -> str:
  """The text after <field:title> (up to the next marker or eos) of generated ids."""
  ids = np.asarray(ids, np.int64)
  stop = np.flatnonzero(ids == vocab.eos)
  ids = ids[:stop[0]] if len(stop) else ids
  marker = np.flatnonzero(ids == vocab.field("title")) if "title" in vocab.fields else []
  if not len(marker):
    return ""
  rest = ids[marker[0] + 1:]
  text = vocab.is_text(rest)
  end = int(np.argmin(text)) if not text.all() else len(rest)
  return vocab.decode_text(rest[:end]) if end else ""


def words(text: str) -> list[str]:
  return re.findall(r"\w+", text.lower())


def token_f1(predicted: str, reference: str) -> float:
  """Word-level F1 (lower-cased, SQuAD style): 2PR / (P + R) over the bag of words."""
  p, r = words(predicted), words(reference)
  common = sum((collections.Counter(p) & collections.Counter(r)).values())
  if not p or not r or not common:
    return 0.0
  precision, recall = common / len(p), common / len(r)
  return 2 * precision * recall / (precision + recall)


def sid2text_f1(model, prep: LMPrepared, item_ids, *, num_tokens: int,
                batch_size: int) -> dict[str, Any]:
  """Mean title token F1 of greedy SID -> text generation, with a few examples."""
  catalog = prep.dataset.catalog
  item_ids = np.asarray(item_ids, np.int64)
  if len(item_ids) == 0:
    return {"sid2text_f1": 0.0, "items": 0, "examples": []}
  prompts = sid2text_prompts(catalog, prep.table, prep.vocab, item_ids, prep.tasks)
  generated = greedy_text(model, prompts, text_token_mask(prep.vocab, model.config.vocab_size),
                          num_tokens=num_tokens, batch_size=batch_size)
  titles = catalog.fields["title"]
  rows = catalog.rows(prompts.item_ids)
  scores, examples = [], []
  for ids, r in zip(generated, rows):
    truth = field_text(titles[r]) or ""
    guess = generated_title(prep.vocab, ids)
    scores.append(token_f1(guess, truth))
    if len(examples) < 5:
      examples.append({"item": int(catalog.item_ids[r]), "title": truth, "generated": guess})
  return {"sid2text_f1": float(np.mean(scores)), "items": int(len(scores)),
          "examples": examples}


def _subset(eval_set, rows: np.ndarray):
  ts = eval_set.target_timestamps
  return EvalSet(user_ids=eval_set.user_ids[rows], histories=eval_set.histories.take_users(rows),
                 targets=eval_set.targets[rows], target_timestamps=None if ts is None else ts[rows])


def sample_users(eval_set, limit: int, seed: int):
  """A fixed random subset of at most `limit` users (0 = all), in their original order."""
  n = len(eval_set.targets)
  if limit <= 0 or limit >= n:
    return eval_set
  return _subset(eval_set, np.sort(np.random.default_rng(seed).choice(n, limit, replace=False)))


def make_evaluate_fn(spec: LMSpec, prep: LMPrepared, *, seed: int):
  """Periodic validation: next-item Recall/NDCG@K on `valid_users` users, text -> SID accuracy
  on the validation half of the held-out titles (keys prefixed `valid/`)."""
  ev = spec.eval
  users = sample_users(prep.split.valid, int(ev["valid_users"]), seed)

  def evaluate(model) -> dict[str, float]:
    out = {}
    ranked, targets = next_item_ranking(model, prep, users, k=max(spec.ks),
                                        beam_size=int(ev["beam_size"]),
                                        batch_size=int(ev["batch_size"]))
    out.update({f"valid/{k}": v for k, v in retrieval_metrics(ranked, targets, spec.ks).items()})
    if len(prep.text_valid):
      acc = text2sid_accuracy(model, prep, prep.text_valid, beam_size=int(ev["beam_size"]),
                              batch_size=int(ev["batch_size"]))
      out.update({f"valid/{k}": v for k, v in acc.items() if k != "items"})
    return out

  return evaluate


# -- training --------------------------------------------------------------------------------

def stage_dir(run_dir: pathlib.Path, variant: str = "") -> pathlib.Path:
  out = pathlib.Path(run_dir) / "lm"
  return out / variant if variant else out


def has_checkpoints(out: pathlib.Path) -> bool:
  folder = pathlib.Path(out) / "checkpoints"
  return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def _train_spec(spec: LMSpec, prep: LMPrepared, vocab_cfg) -> dict[str, Any]:
  """What the checkpoints are bound to (the train section may change: resume continues)."""
  return {"model": dataclasses.asdict(vocab_cfg) if dataclasses.is_dataclass(vocab_cfg)
          else vocab_cfg, "init_from": spec.init_from, "tasks": _jsonable(prep.tasks),
          "sid": prep.sid_id, "vocab_size": prep.vocab.padded_size,
          "text_holdout": int(spec.eval["text_holdout"]), "cold_start": dict(spec.cold_start)}


def _jsonable(x) -> Any:
  return json.loads(json.dumps(dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x,
                               default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def _check_spec(out: pathlib.Path, spec: dict[str, Any]) -> None:
  path = out / "train_spec.json"
  spec = _jsonable(spec)
  if path.exists():
    saved = json.loads(path.read_text())
    if saved != spec:
      diff = sorted(k for k in set(saved) | set(spec) if saved.get(k) != spec.get(k))
      raise ConfigError(f"lm.{diff[0]}", f"differs from the checkpoints in {out} (trained with "
                        f"{saved.get(diff[0])}); use another lm.variant / run_dir or delete it")
  elif jax.process_index() == 0:
    artifacts.atomic_write_json(path, spec)


def train_lm(spec: LMSpec, out: pathlib.Path, prep: LMPrepared, *, seed: int, mesh=None,
             resume: bool = True) -> tuple[Any, dict[str, Any]]:
  """Trains (or resumes, or reuses) the LM in `out`; returns (model, summary)."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  model = build_model(spec, prep.vocab, seed=seed, mesh=mesh)
  bound = _train_spec(spec, prep, model.config)
  _check_spec(out, bound)
  train_cfg = {k: v for k, v in spec.train.items() if k != "worker_count"}
  stage_config = _jsonable({**bound, "train": train_cfg, "eval": dict(spec.eval),
                            "weights": dict(prep.tasks.weights)})
  inputs = {"sid": prep.sid_id}
  if resume and artifacts.is_complete(out, stage_config, inputs) and has_checkpoints(out):
    logging.info("lm: reusing %s", out)
    return load_trained(spec, out, prep, seed=seed), artifacts.read_manifest(out)["summary"]
  (out / artifacts.MANIFEST).unlink(missing_ok=True)
  rows, stats = training_rows(prep)
  logging.info("lm: %d rows of %d tokens (%d examples, fill %.2f), %d parameters",
               stats.num_rows, prep.tasks.row_length, stats.num_examples, stats.fill,
               count_params(model))
  result = train(model, lm_loss, rows, config=spec.train, workdir=out,
                 evaluate_fn=make_evaluate_fn(spec, prep, seed=seed), mesh=mesh,
                 extra={"train_spec": _jsonable(bound)})
  summary = {"steps": result.step, "best_step": result.best_step,
             "best_valid": result.best_metrics, "stopped_early": result.stopped_early,
             "steps_per_s": round(result.steps_per_s, 3), "train_wall_s": round(result.wall_s, 1),
             "validation_s": round(result.eval_s, 1), "num_params": count_params(model),
             "rows": stats.num_rows, "examples": stats.num_examples,
             "truncated": stats.num_truncated, "fill": round(stats.fill, 4),
             "history": result.history}
  if jax.process_index() == 0:
    artifacts.write_manifest(out, stage="lm", config=stage_config, inputs=inputs,
                             summary=summary)
  return model, summary


def restore(spec: LMSpec, out: pathlib.Path, vocab, *, seed: int, step: int | str = "latest",
            cfg=None):
  """(model, optimizer, step) from `out`/checkpoints (`cfg`: the LMConfig, when grown)."""
  if not has_checkpoints(out):
    raise FileNotFoundError(f"no LM checkpoints in {pathlib.Path(out) / 'checkpoints'}: train "
                            f"the stage first (lrm lm)")
  cfg = cfg or (build_model(spec, vocab, seed=seed).config if spec.init_from
                else model_config(spec, vocab))
  model = LM(cfg, rngs=nnx.Rngs(params=seed))
  optimizer = nnx.Optimizer(model, optimizer_from_config(spec.train), wrt=nnx.Param)
  with Checkpointer(pathlib.Path(out) / "checkpoints") as ckpt:
    if step == "best" and ckpt.best_step() is None:
      step = "latest"
    state = nnx.state((model, optimizer), nnx.Not(nnx.RngState))
    restored, _ = ckpt.restore(state, step=step)
    nnx.update((model, optimizer), restored)
    at = ckpt.latest_step() if step == "latest" else (
        ckpt.best_step() if step == "best" else int(step))
  return model, optimizer, int(at)


def load_trained(spec: LMSpec, out: pathlib.Path, prep: LMPrepared, *, seed: int):
  """The model with the best (else latest) checkpoint's weights."""
  return restore(spec, out, prep.vocab, seed=seed, step="best")[0]


# -- evaluation ------------------------------------------------------------------------------

def _retrieval_numbers(run_dir: pathlib.Path) -> dict[str, Any]:
  """Test metrics of the retrieval models evaluated in the same run directory."""
  out = {}
  for path in sorted((pathlib.Path(run_dir) / "retrieval").glob("*/metrics.json")):
    try:
      out[path.parent.name] = json.loads(path.read_text())
    except json.JSONDecodeError:
      continue
  return out


def evaluate_lm(spec: LMSpec, out: pathlib.Path, prep: LMPrepared, model, *, seed: int,
                run_dir: pathlib.Path | None = None) -> dict[str, Any]:
  """Every number of the stage; writes predictions, metrics.json and the after-item table."""
  out = pathlib.Path(out)
  ev = spec.eval
  beam, batch = int(ev["beam_size"]), int(ev["batch_size"])
  k = max(spec.ks)
  record: dict[str, Any] = {}
  start = time.perf_counter()
  # Linking on held-out titles, and on as many linked (trained) items for reference.
  linked = np.setdiff1d(prep.dataset.catalog.item_ids, prep.text_holdout)
  seen = np.sort(np.random.default_rng([seed, 5]).choice(
      linked, min(len(linked), max(len(prep.text_test), 1)), replace=False))
  for name, items in (("heldout", prep.text_test), ("trained", seen)):
    record[f"text2sid_{name}"] = text2sid_accuracy(model, prep, items, beam_size=beam,
                                                   batch_size=batch)
    record[f"sid2text_{name}"] = sid2text_f1(model, prep, items,
                                             num_tokens=int(ev["sid2text_tokens"]),
                                             batch_size=batch)
  popular = most_popular_ranking(prep.split.train, k)
  splits = [(s, getattr(prep.split, s)) for s in SPLITS]
  if prep.cold is not None and len(prep.cold.test.targets):
    splits.append(("cold_test", prep.cold.test))
  for split, eval_set in splits:
    users = sample_users(eval_set, int(ev["max_users"]), seed)
    t0 = time.perf_counter()
    ranked, targets = next_item_ranking(model, prep, users, k=k, beam_size=beam,
                                        batch_size=batch)
    if jax.process_index() == 0:
      write_predictions(out / f"predictions_{split}.jsonl", users.user_ids, ranked)
    pop = retrieval_metrics(np.broadcast_to(popular, (len(targets), k)), targets, spec.ks)
    record[split] = {**retrieval_metrics(ranked, targets, spec.ks), "users": int(len(targets)),
                     "popularity": pop, "wall_s": round(time.perf_counter() - t0, 2)}
  if run_dir is not None:
    retrieval = _retrieval_numbers(run_dir)
    if retrieval:
      record["retrieval_models"] = {name: m.get("test") for name, m in retrieval.items()}
  ai = spec.after_item
  if int(ai["num_items"]) > 0 and jax.process_index() == 0:
    table = after_item_table(model, prep, num_items=int(ai["num_items"]),
                             top_k=int(ai["top_k"]), beam_size=beam, batch_size=batch)
    table.save(out / "after_item", config=dict(ai), inputs={"sid": prep.sid_id})
    record["after_item"] = {"items": int(len(table.item_ids)), "top_k": int(table.top_k),
                            "dir": str(out / "after_item")}
  record["eval_wall_s"] = round(time.perf_counter() - start, 1)
  if jax.process_index() == 0:
    artifacts.atomic_write_json(out / "metrics.json", record)
  return record


def report(record: Mapping[str, Any], ks: Sequence[int], title: str = "lm") -> None:
  """Prints the stage's tables."""
  rows = []
  for name in ("heldout", "trained"):
    t, s = record.get(f"text2sid_{name}", {}), record.get(f"sid2text_{name}", {})
    rows.append([name, t.get("items"), t.get("text2sid_acc@1"), t.get("text2sid_acc@10"),
                 s.get("sid2text_f1")])
  print_table([f"{title}: linking items", "n", "text->SID acc@1", "acc@10", "SID->text F1"],
              rows)
  cols = [f"{m}@{k}" for k in ks for m in ("recall", "ndcg")]
  rows = []
  for split in (*SPLITS, "cold_test"):
    if split in record:
      r = record[split]
      rows.append([f"{title} {split}", r["users"], *[r.get(c) for c in cols]])
      rows.append([f"popularity {split}", r["users"], *[r["popularity"].get(c) for c in cols]])
  for name, m in (record.get("retrieval_models") or {}).items():
    if m:
      rows.append([f"{name} test (retrieval)", m.get("users"), *[m.get(c) for c in cols]])
  print_table(["next item", "users", *cols], rows)


# -- the offline after-item table ------------------------------------------------------------

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
  items, scores = _decode_sids(model, prompts, prep.trie, k=top_k + 1, beam_size=beam_size,
                               batch_size=batch_size)
  keep = (items != heads[:, None]) & (items >= 0)
  order = np.argsort(~keep, axis=1, kind="stable")[:, :top_k]
  rec = np.take_along_axis(items, order, 1)
  ok = np.take_along_axis(keep, order, 1)
  return AfterItemTable(item_ids=heads.astype(np.int64), recommended=np.where(ok, rec, -1),
                        scores=np.where(ok, np.take_along_axis(scores, order, 1),
                                        -np.inf).astype(np.float32))


# -- the stage -------------------------------------------------------------------------------

def lm_stage(config, run_dir: pathlib.Path, dataset, *, train: bool = True,
             evaluate: bool = True, mesh=None) -> dict[str, Any]:
  """The LM stage on a run directory holding a SID artifact (run_dir/sid)."""
  spec = validate(config.lm)
  run_dir = pathlib.Path(run_dir)
  seed = int(config.seed)
  table = SIDTable.load(run_dir / "sid")
  if not np.array_equal(np.asarray(table.item_ids), np.asarray(dataset.catalog.item_ids)):
    raise ConfigError("sid", f"the SID table in {run_dir / 'sid'} is for another catalog")
  sid_id = artifacts.artifact_id(run_dir / "sid")
  vocab = vocab_stage(spec, run_dir, dataset.catalog, table, sid_id)
  prep = prepare(spec, dataset, table, vocab, sid_id=sid_id, seed=seed)
  out = stage_dir(run_dir, spec.variant)
  result: dict[str, Any] = {"variant": spec.variant or "main",
                            "weights": dict(spec.tasks.weights),
                            "vocab": {"size": vocab.size, "padded_size": vocab.padded_size}}
  model = None
  if train:
    model, summary = train_lm(spec, out, prep, seed=seed, mesh=mesh,
                              resume=bool(config.get("resume", True)))
    result["train"] = {k: v for k, v in summary.items() if k != "history"}
  if evaluate:
    model = model if model is not None else load_trained(spec, out, prep, seed=seed)
    record = evaluate_lm(spec, out, prep, model, seed=seed, run_dir=run_dir)
    report(record, spec.ks, title=f"lm {spec.variant}".strip())
    result["evaluated"] = record
  if jax.process_index() == 0:
    path = out / "results.json"
    previous = json.loads(path.read_text()) if path.exists() else {}
    artifacts.atomic_write_json(path, {**previous, **result})
  return result


def run(config, *, train: bool = True, evaluate: bool = True) -> dict[str, Any]:
  """The data / embed / sid stages (lrm.pipeline, reused when complete), then the LM stage;
  the result lands in run_dir/results.json under "lm" (or "lm/<variant>")."""
  spec = validate(config.lm)
  run_dir, dataset, results = prepare_stages(pipeline_config(config))
  if jax.process_index() == 0:
    artifacts.atomic_write_json(stage_dir(run_dir, spec.variant) / "config.json",
                                config.to_dict())
  out = lm_stage(config, run_dir, dataset, train=train, evaluate=evaluate,
                 mesh=mesh_from_config(config.mesh))
  key = f"lm/{spec.variant}" if spec.variant else "lm"
  if jax.process_index() == 0:
    write_results(run_dir, {key: out, "sid": results["sid"], "dataset": results["dataset"]})
  return {**results, key: out}


# -- continued pretraining -------------------------------------------------------------------

def parent_keys(table, vocab) -> np.ndarray:
  """Each vocabulary id's parent-prefix key for `grow_vocab` (-1: not a SID token or unused):
  a level-l code's key is the prefix (codes of levels < l) of the first item using it, as one
  mixed-radix integer (level 0: 0)."""
  full = table.full_codes.astype(np.int64)
  sizes = np.asarray(vocab.codebook_sizes, np.int64)
  keys = np.full(vocab.padded_size, -1, np.int64)
  for level in range(vocab.num_levels):
    codes, first = np.unique(full[:, level], return_index=True)
    prefix = full[first, :level]
    key = np.zeros(len(first), np.int64)
    for c in range(level):
      key = key * sizes[c] + prefix[:, c]
    keys[vocab.level_slice(level).start + codes] = key
  return keys


def replay_rows(prep: LMPrepared, new_items: np.ndarray, *, replay_fraction: float,
                seed: int) -> tuple[dict[str, np.ndarray], Any]:
  """Packed rows for continued pretraining: every task on the grown data, links of new items
  only, plus a replay of old items' links (`replay_fraction` of all examples)."""
  catalog = prep.dataset.catalog
  old_items = np.setdiff1d(catalog.item_ids, new_items)
  fresh = T.build_examples(catalog, prep.table, prep.vocab, prep.split, prep.tasks,
                           holdout_items=np.concatenate([old_items, prep.text_holdout]))
  parts = [T.mix(fresh, prep.tasks.weights, seed=seed)]
  link_weights = {n: w for n, w in prep.tasks.weights.items()
                  if n in ("sid2text", "text2sid") and w > 0}
  count = int(round(len(parts[0]) * replay_fraction / (1.0 - replay_fraction)))
  if count and link_weights:
    old_cfg = dataclasses.replace(prep.tasks, weights=link_weights)
    replay = T.build_examples(catalog, prep.table, prep.vocab, prep.split, old_cfg,
                              holdout_items=np.concatenate([new_items, prep.text_holdout]))
    parts.append(T.mix(replay, link_weights, seed=seed + 1, num_examples=count))
  mixed = T.LMExamples.concat(parts)
  mixed = mixed.take(np.random.default_rng(seed).permutation(len(mixed)))
  return T.pack(mixed, row_length=prep.tasks.row_length, overflow=prep.tasks.overflow,
                open_rows=prep.tasks.open_rows)


def continue_pretraining(spec: LMSpec, *, old_dir: pathlib.Path, old_prep: LMPrepared,
                         new_dataset, new_embeddings: np.ndarray, sid_tokenizer,
                         out_dir: pathlib.Path, seed: int = 0, mesh=None) -> dict[str, Any]:
  """Resumes a trained LM (`old_dir`) on a grown catalog; returns the freshness report.

  New items (in `new_dataset` but not in the old SID table) get codes from the fitted SID
  tokenizer (`new_embeddings`: one row per `new_dataset.catalog` item, as the embed stage
  computes them); the SID table is extended (old rows unchanged), the vocabulary and the
  model grow (new rows start from prefix siblings, AdamW state carried), and training
  continues from the old step on the grown data (`replay_rows`) for `lm.continued.steps`
  steps at a constant rate. Every `eval_every` steps (and before the first): text -> SID
  accuracy on new items, next-item recall of test users whose target is a new item, and
  text -> SID on old items (forgetting). Written to out_dir/freshness.json.
  """
  co = spec.continued
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  catalog = new_dataset.catalog
  emb = np.asarray(new_embeddings, np.float32)
  if emb.ndim != 2 or len(emb) != len(catalog):
    raise DataError(f"new_embeddings must have one row per new catalog item "
                    f"({len(catalog)}), got shape {emb.shape}")
  old_table, old_vocab = old_prep.table, old_prep.vocab
  is_new = ~np.isin(catalog.item_ids, old_table.item_ids)
  new_items = catalog.item_ids[is_new]
  if not len(new_items):
    raise DataError("the new catalog has no item the old SID table lacks")
  codes = assign_codes(sid_tokenizer, emb[is_new])
  table = old_table.extend(new_items, codes[:, :old_table.num_semantic_levels])
  vocab, old_to_new = old_vocab.extend_sid_levels(table.full_codebook_sizes)
  prep = prepare(spec, new_dataset, table, vocab, sid_id=old_prep.sid_id, seed=seed)
  # Held-out titles are chosen on the grown catalog; keep new items linked (they are the point).
  prep.text_valid = prep.text_valid[~np.isin(prep.text_valid, new_items)]
  prep.text_test = prep.text_test[~np.isin(prep.text_test, new_items)]

  old_model, old_opt, start_step = restore(spec, old_dir, old_vocab, seed=seed, step="latest")
  model, optimizer = grow_vocab(old_model, old_opt, old_to_new=old_to_new,
                                new_vocab_size=vocab.padded_size, sid_start=vocab.sid_offset,
                                codebook_sizes=vocab.codebook_sizes,
                                parents=parent_keys(table, vocab), seed=seed, mesh=mesh)
  train_cfg = {**spec.train, "num_steps": start_step + int(co["steps"]),
               "eval_every": int(co["eval_every"]), "checkpoint_every": int(co["eval_every"]),
               "learning_rate": float(co["learning_rate"]), "warmup_steps": 0,
               "decay": "constant", "patience": 0, "best_metric": "fresh/text2sid_acc@10",
               "batch_size": int(co["batch_size"]) or int(spec.train["batch_size"])}
  ckpt_dir = out_dir / "checkpoints"
  fresh_start = not has_checkpoints(out_dir)
  if fresh_start:
    # The grown state as the continued run's first checkpoint: the trainer resumes from it
    # with the AdamW moments and step count carried.
    with Checkpointer(ckpt_dir, best_metric=None) as ckpt:
      ckpt.save(start_step, nnx.state((model, optimizer), nnx.Not(nnx.RngState)), force=True)
    vocab.save(out_dir / "vocab")
    table.save(out_dir / "sid_table", config={"extended_from": str(old_dir)})
  else:
    model = LM(model.config, rngs=nnx.Rngs(params=seed))   # weights come from the checkpoint

  eval_items = np.sort(np.random.default_rng([seed, 9]).choice(
      new_items, min(len(new_items), int(co["eval_items"])), replace=False))
  old_sample = np.sort(np.random.default_rng([seed, 10]).choice(
      np.asarray(old_table.item_ids), min(len(old_table.item_ids), int(co["eval_items"])),
      replace=False))
  test = prep.split.test
  fresh_rows = np.flatnonzero(np.isin(test.targets, new_items))
  fresh_test = _subset(test, fresh_rows) if len(fresh_rows) else None
  ev = spec.eval
  beam, batch = int(ev["beam_size"]), int(ev["batch_size"])

  def evaluate(m) -> dict[str, float]:
    new = text2sid_accuracy(m, prep, eval_items, beam_size=beam, batch_size=batch)
    old = text2sid_accuracy(m, prep, old_sample, beam_size=beam, batch_size=batch)
    metrics = {"fresh/text2sid_acc@1": new["text2sid_acc@1"],
               "fresh/text2sid_acc@10": new["text2sid_acc@10"],
               "old/text2sid_acc@10": old["text2sid_acc@10"]}
    if fresh_test is not None:
      ranked, targets = next_item_ranking(m, prep, fresh_test, k=10, beam_size=beam,
                                          batch_size=batch)
      r = retrieval_metrics(ranked, targets, (10,))
      metrics["fresh/next_recall@10"] = r["recall@10"]
    return metrics

  model.eval()
  before = {"step": start_step, **evaluate(model)} if fresh_start else None
  rows, stats = replay_rows(prep, new_items, replay_fraction=float(co["replay_fraction"]),
                            seed=seed)
  result = train(model, lm_loss, rows, config=train_cfg, workdir=out_dir, evaluate_fn=evaluate,
                 mesh=mesh, progress=False)
  history = ([before] if before else []) + result.history
  history = sorted({h["step"]: h for h in history}.values(), key=lambda h: h["step"])

  def first_step(key: str, bar: float) -> int | None:
    for h in history:
      if key in h and h[key] >= bar and h[key] > 0:
        return int(h["step"] - start_step)
    return None

  final = history[-1]
  freshness = {
      "start_step": start_step, "steps": int(co["steps"]), "new_items": int(len(new_items)),
      "old_items": int(old_table.num_items), "fresh_test_users": int(len(fresh_rows)),
      "old_vocab_size": old_vocab.padded_size, "new_vocab_size": vocab.padded_size,
      "codebook_sizes": list(vocab.codebook_sizes), "replay_rows": stats.num_rows,
      "steps_to_text2sid_threshold": first_step("fresh/text2sid_acc@10",
                                                float(co["threshold"])),
      "steps_to_half_final_text2sid": first_step(
          "fresh/text2sid_acc@10", 0.5 * final.get("fresh/text2sid_acc@10", 0.0)),
      "steps_to_half_final_next": first_step(
          "fresh/next_recall@10", 0.5 * final.get("fresh/next_recall@10", 0.0)),
      "history": history,
  }
  if jax.process_index() == 0:
    artifacts.atomic_write_json(out_dir / "freshness.json", freshness)
  return freshness
