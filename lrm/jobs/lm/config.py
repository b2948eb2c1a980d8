"""The `lm` config section: every field with its default (`lm_defaults`), and `validate`, which
checks a section before anything runs and gives the `LMSpec` the other modules read.

The section is not in configs/base.py: `pipeline_config` strips it before the data / embed /
sid stages validate the rest.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Mapping

from lrm.core.config import check_known
from lrm.core.errors import ConfigError
from lrm.jobs.defaults import lm_defaults
from lrm.models.lm import LM_SIZES
from lrm.tasks.lm_tasks import LMTaskConfig
from lrm.train.optimizer import optimizer_from_config
from lrm.train.trainer import LoopSpec

MODEL_SIZE_FIELDS = ("d_model", "num_layers", "num_heads", "num_kv_heads", "head_dim", "mlp_dim")




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
