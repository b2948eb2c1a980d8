"""The `lm` config section: every field with its default (`lm_defaults`), and `validate`, which
checks a section before anything runs and gives the `LMSpec` the other modules read.

The section is not in configs/base.py: `pipeline_config` strips it before the data / embed /
sid stages validate the rest.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

import ml_collections

from lrm.core.config import check_known
from lrm.core.errors import ConfigError
from lrm.models.lm import LM_SIZES
from lrm.tasks.lm_tasks import LMTaskConfig
from lrm.train.optimizer import optimizer_from_config
from lrm.train.trainer import LoopSpec

MODEL_SIZE_FIELDS = ("d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim")


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
    raise ConfigError("lm." + e.field.replace("lm_tasks.", "tasks."), bare_message(e)) from None
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
                      bare_message(e)) from None
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


def bare_message(e: ConfigError) -> str:
  text = str(e)
  return text.split(": ", 1)[1] if text.startswith(e.field + ": ") else text


def _merge(defaults: dict, d: Mapping) -> dict:
  out = dict(defaults)
  for k, v in d.items():
    out[k] = _merge(defaults[k], v) if isinstance(v, Mapping) and isinstance(
        defaults.get(k), Mapping) and k != "weights" else (dict(v) if isinstance(v, Mapping)
                                                            else v)
  return out
