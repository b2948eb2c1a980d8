"""The ranking stage: cold-start ranking data -> SIDs -> rankers (ID / early / late fusion) ->
AUC and GAUC per task on warm and cold candidates; it may import every stage before it.

Its config section (`ranking`, defaults in `ranking_defaults()`) is not part of
configs/base.py, so `pipeline_config` strips it before `lrm.jobs.stages` validates the rest
(as the lm job does). Results go to run_dir/ranking/results.json.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import time
from typing import Any, Callable, Mapping

import jax
import ml_collections
import numpy as np
from flax import nnx

from lrm.core import artifacts
from lrm.core.config import load_config, merged_section, pipeline_config
from lrm.core.errors import ConfigError
from lrm.data.layout import read_dataset
from lrm.data.types import Catalog
from lrm.encoders.hashing import HashingEncoder
from lrm.eval.ranking import task_metrics
from lrm.jobs.common import at_workdir
from lrm.jobs.defaults import ranking_defaults
from lrm.jobs.embed import read_embeddings
from lrm.jobs.finetune import run_finetune
from lrm.jobs.stages import data_stage, embed_stage, validate
from lrm.models.compression import CompressionConfig
from lrm.models.ranker import (Ranker, RankerConfig, id_keep_probability, predict,
                               ranker_arrays, ranker_loss)
from lrm.sid.rq_kmeans import rq_kmeans_fit
from lrm.tasks.ranking import (BINARY_TASKS, MAX_LONG_HISTORY, ColdWarmSplit, RankingData,
                               cold_warm_split, encode_user_features)
from lrm.train.checkpoint import Checkpointer
from lrm.train.trainer import Hook, light_section, train


def long_encoder_config(section) -> CompressionConfig | None:
  """The section's long-history encoder (None when `long_history` is 0); its d_model is the
  ranker's d unless given (and then it must agree). Errors name `ranking.long_encoder.<field>`."""
  if not int(section.get("long_history", 0)):
    return None
  given = section.get("long_encoder")
  given = dict(given.to_dict() if hasattr(given, "to_dict") else given or {})
  if int(given.setdefault("d_model", int(section.d))) != int(section.d):
    raise ConfigError("ranking.long_encoder.d_model", f"must equal ranking.d={section.d}, got "
                      f"{given['d_model']}")
  return CompressionConfig.from_dict(given, where="ranking.long_encoder")


def ranking_section(config) -> ml_collections.ConfigDict:
  """The `ranking` section merged over the defaults; unknown fields raise ConfigError."""
  out = merged_section(config, "ranking", ranking_defaults())
  for name in ("num_steps", "batch_size", "max_history", "num_negatives", "eval_negatives", "d"):
    if int(out[name]) < 1:
      raise ConfigError(f"ranking.{name}", f"must be >= 1, got {out[name]}")
  if out.content not in ("catalog", "embed", "finetuned"):
    raise ConfigError("ranking.content", f"must be 'catalog', 'embed' or 'finetuned', got "
                      f"{out.content!r}")
  if out.content == "finetuned" and not out.finetune_config:
    raise ConfigError("ranking.finetune_config", "content 'finetuned' needs a fine-tuning "
                      "config file (e.g. configs/finetune_beauty.py:cpu)")
  for name in ("user_feature_buckets", "count_buckets"):
    if int(out[name]) < 2:
      raise ConfigError(f"ranking.{name}", f"must be >= 2, got {out[name]}")
  if not 0 <= int(out.long_history) <= MAX_LONG_HISTORY:
    raise ConfigError("ranking.long_history", f"must be in [0, {MAX_LONG_HISTORY}] (0 = off), "
                      f"got {out.long_history}")
  encoder = long_encoder_config(out)
  if encoder is not None and int(out.long_history) % encoder.fold:
    raise ConfigError("ranking.long_encoder.fold", f"{encoder.fold} does not divide "
                      f"long_history={out.long_history}")
  return out


def item_content(catalog: Catalog, text_fields=()) -> np.ndarray:
  """The catalog's content embeddings (modalities concatenated in name order), or hashed text
  embeddings of `text_fields` (default: `Catalog.text`'s) when it has none
  (`lrm.encoders.hashing`)."""
  if catalog.embeddings:
    return np.concatenate([catalog.embeddings[m] for m in sorted(catalog.embeddings)], axis=1)
  text = catalog.text(tuple(text_fields)) if text_fields else catalog.text()
  return np.asarray(HashingEncoder(dim=128).encode(text), np.float32)


def fit_codes(content: np.ndarray, sizes, *, seed: int, iters: int):
  """RQ-KMeans on the content; returns the fitted model (its `codes` are per catalog row)."""
  return rq_kmeans_fit(content, tuple(sizes), key=jax.random.key(seed), iters=iters)


def ranker_train_section(*, num_steps: int, batch_size: int, learning_rate: float,
                         seed: int) -> dict[str, Any]:
  """The `train` section of every ranker fit (`lrm rank` and the benchmarks alike): AdamW
  with a short warmup and cosine decay, one evaluation and checkpoint at the end."""
  return {"batch_size": batch_size, "num_steps": num_steps, "learning_rate": learning_rate,
          "warmup_steps": min(100, num_steps // 10), "decay": "cosine", "weight_decay": 0.01,
          "eval_every": num_steps, "log_every": max(1, min(100, num_steps)),
          "checkpoint_every": num_steps, "seed": seed}


def train_ranker(model: Ranker, arrays: Mapping[str, np.ndarray], *, num_steps: int,
                 batch_size: int, learning_rate: float, seed: int,
                 workdir: pathlib.Path | None = None, desc: str | None = None) -> float:
  """Trains `model` in place through the project's trainer; returns the last logged training
  loss. With `workdir`, checkpoints and metrics go there (resumed when present); without, a
  light run (`desc`: show progress under that name)."""
  result = train(model, ranker_loss, arrays,
                 config=ranker_train_section(num_steps=num_steps, batch_size=batch_size,
                                             learning_rate=learning_rate, seed=seed),
                 workdir=workdir, progress=desc or False)
  if workdir is not None and not np.isfinite(result.train_loss):
    return _last_train_loss(workdir)   # resumed at the last step: nothing ran this time
  return result.train_loss


def _id_keep_batches(arrays: Mapping[str, np.ndarray], *, batch_size: int, seed: int,
                     hold_steps: int, decay_steps: int):
  """Shuffled batches (a new permutation per epoch) with `id_keep`: each example keeps its
  candidate-ID token with the schedule's probability at that batch's step."""
  rng = np.random.default_rng(seed)
  n = len(arrays["cand_id"])
  order, cursor, step = rng.permutation(n), 0, 0
  while True:
    if cursor + batch_size > n:
      order, cursor = rng.permutation(n), 0
    rows = order[cursor:cursor + batch_size]
    cursor += batch_size
    keep = id_keep_probability(step, hold_steps=hold_steps, decay_steps=decay_steps)
    yield {**{k: v[rows] for k, v in arrays.items()}, "id_keep": rng.random(batch_size) < keep}
    step += 1


def warmup_train(model: Ranker, arrays: Mapping[str, np.ndarray], *, num_steps: int,
                 hold_steps: int, decay_steps: int, batch_size: int, learning_rate: float,
                 seed: int, eval_every: int = 0,
                 evaluate_fn: Callable[[Ranker], dict[str, float]] | None = None
                 ) -> list[dict[str, float]]:
  """Incremental training of a model with a candidate-ID token, retiring the ID.

  At step s each example keeps its ID token with probability `id_keep_probability(s)`; the
  loss and, every `eval_every` steps (and at the end), `evaluate_fn(model)` are recorded,
  giving the curves through the transition. Trains `model` in place (light trainer run,
  AdamW at a constant rate).

  Returns: one record per `eval_every` steps: step, keep_prob, loss (mean since the last
  record) and the evaluation's metrics.
  """
  if not model.cfg.candidate_id:
    raise ConfigError("candidate_id", "warmup needs a late ranker with candidate_id=True")
  if len(arrays["cand_id"]) < batch_size:
    raise ConfigError("batch_size", f"{batch_size} > {len(arrays['cand_id'])} examples")
  every = eval_every or num_steps

  def record(step: int, m: Ranker) -> dict[str, float]:
    out = {"keep_prob": id_keep_probability(step, hold_steps=hold_steps,
                                            decay_steps=decay_steps)}
    if evaluate_fn is not None:
      m.eval()
      out.update(evaluate_fn(m))
    return out

  batches = _id_keep_batches(arrays, batch_size=batch_size, seed=seed, hold_steps=hold_steps,
                             decay_steps=decay_steps)
  result = train(model, ranker_loss, batches=batches, hooks=[Hook(every, record)],
                 config=light_section(num_steps=num_steps, batch_size=batch_size,
                                      learning_rate=learning_rate, weight_decay=0.01,
                                      seed=seed, log_every=every), progress=False)
  return [{k: v for k, v in r.items() if k != "train_s"} for r in result.history]


def evaluate_ranker(model: Ranker, data: RankingData, item_codes: np.ndarray, *,
                    candidate_codes=None, id_keep: float | None = None) -> dict[str, float]:
  arrays = ranker_arrays(data, item_codes, model.cfg.tasks, candidate_codes=candidate_codes)
  outputs = predict(model, arrays, id_keep=id_keep)
  return task_metrics(outputs, data.labels, data.masks, data.user, model.cfg.tasks,
                      BINARY_TASKS)


def ranker_config(section, variant: str, num_items: int, tasks, *,
                  user_feature_sizes=(), **kw) -> RankerConfig:
  """The ranker of `variant`; user-feature tokens when `user_feature_sizes` is given (the
  split's encoding) and the section asks for them, count tokens when it asks for counts."""
  kw.setdefault("interaction_counts", bool(section.get("interaction_counts", False)))
  kw.setdefault("count_buckets", int(section.get("count_buckets", 8)))
  sizes = tuple(user_feature_sizes) if section.get("user_features", False) else ()
  return RankerConfig(variant=variant, num_items=num_items,
                      item_codebook_sizes=tuple(section.codebook_sizes), tasks=tuple(tasks),
                      max_history=int(section.max_history), d=int(section.d),
                      num_layers=int(section.num_layers), num_heads=int(section.num_heads),
                      mlp_dim=int(section.mlp_dim), dropout=float(section.dropout),
                      user_feature_sizes=sizes,
                      late_tokens=str(section.get("late_tokens", "family")),
                      sid_level_dropout=(tuple(section.get("sid_level_dropout", ()))
                                         if variant != "id" else ()),
                      history_level_dropout=(
                          None if variant == "id" or section.get("history_level_dropout") is None
                          else tuple(section.history_level_dropout)),
                      long_encoder=long_encoder_config(section), **kw)


def prepare(section, dataset, seed: int, content: np.ndarray | None = None
            ) -> tuple[ColdWarmSplit, np.ndarray]:
  """The items' SIDs (RQ-KMeans on `content`, default `item_content`; known before the split:
  the counts need them), then the cold/warm split of the dataset with the user-side features
  the section asks for."""
  if content is None:
    content = item_content(dataset.catalog, section.get("text_fields", ()))
  if len(content) != len(dataset.catalog):
    raise ConfigError("ranking.content", f"{len(content)} content rows for "
                      f"{len(dataset.catalog)} items")
  codes = fit_codes(content, section.codebook_sizes, seed=seed,
                    iters=int(section.kmeans_iters)).codes
  features = None
  if section.get("user_features", False):
    users = getattr(dataset, "users", None)
    if users is None or not users.fields:
      raise ConfigError("ranking.user_features", f"dataset {dataset.name!r} has no user "
                        f"attributes (Dataset.users: a RecBole .user file or users.jsonl)")
    features = encode_user_features(users, num_buckets=int(section.user_feature_buckets))
  split = cold_warm_split(dataset.sequences, dataset.catalog,
                          cold_fraction=float(section.cold_fraction),
                          max_history=int(section.max_history),
                          num_negatives=int(section.num_negatives),
                          eval_negatives=int(section.eval_negatives), seed=seed,
                          max_train_events=int(section.max_train_events) or None,
                          user_features=features,
                          count_codes=codes if section.get("interaction_counts", False)
                          else None, long_history=int(section.get("long_history", 0)))
  return split, codes


def run_variants(section, split: ColdWarmSplit, codes: np.ndarray, *, seed: int,
                 workdir: pathlib.Path | None = None, train_models: bool = True
                 ) -> dict[str, dict[str, Any]]:
  """Trains every configured variant on the split; warm and cold metrics per variant.

  Each variant trains through `train_ranker`: with `workdir`, checkpoints and metrics under
  workdir/<variant> (resumed when present); without, a light run.
  `train_models=False` (`lrm evaluate`) only restores: every variant's checkpoint must have
  reached `num_steps`, else a ConfigError names the variant and its step.
  """
  if not train_models:
    if workdir is None:
      raise ConfigError("workdir", "evaluating without training needs the run's checkpoints")
    _check_trained(section, workdir)
  out = {}
  tasks = split.train.tasks
  arrays = ranker_arrays(split.train, codes, tasks)
  sizes = () if split.user_features is None else split.user_features.sizes
  for variant in section.variants:
    start = time.perf_counter()
    model = Ranker(ranker_config(section, variant, split.num_items, tasks,
                                 user_feature_sizes=sizes), rngs=nnx.Rngs(seed),
                   item_codes=codes)
    # A ranker without the long-term token never reads the long history: skip its gathers.
    used = (arrays if model.long_encoder is not None else
            {k: v for k, v in arrays.items() if k != "long_hist"})
    loss = train_ranker(model, used, num_steps=int(section.num_steps),
                        batch_size=int(section.batch_size),
                        learning_rate=float(section.learning_rate), seed=seed,
                        workdir=None if workdir is None else workdir / variant,
                        desc=f"ranker {variant}")
    out[variant] = {"train_loss": loss,
                    "warm": evaluate_ranker(model, split.warm, codes),
                    "cold": evaluate_ranker(model, split.cold, codes),
                    "wall_s": time.perf_counter() - start}
  return out


def _check_trained(section, workdir: pathlib.Path) -> None:
  """Every configured variant has a checkpoint at `num_steps` under workdir/<variant>."""
  for variant in section.variants:
    folder = workdir / variant / "checkpoints"
    step = 0
    if folder.is_dir():
      with Checkpointer(folder) as ckpt:
        step = ckpt.latest_step() or 0
    if step < int(section.num_steps):
      raise ConfigError("ranking.variants", f"{variant!r} is trained to step {step} of "
                        f"{section.num_steps} in {folder}: train it first (lrm train or "
                        f"lrm rank with this config and workdir)")


def _last_train_loss(workdir: pathlib.Path) -> float:
  """The last logged train/loss in workdir/metrics.jsonl (nan if none)."""
  path = workdir / "metrics.jsonl"
  loss = float("nan")
  if path.exists():
    for line in path.read_text().splitlines():
      record = json.loads(line)
      loss = float(record.get("train/loss", loss))
  return loss


def finetuned_content(section, seed: int, run_dir: pathlib.Path, data_dir,
                      num_items: int) -> np.ndarray:
  """Item embeddings of an encoder fine-tuned for this run's cold-start split (FLUID).

  The fine-tune (`ranking.finetune_config`, its data replaced by this run's) reads
  co-consumption pairs from the warm training part of the split of `cold_fraction` and `seed`
  only (`pairs.cold_fraction` / `cold_seed`, lrm.data.splits.warm_leave_one_out): the cold
  items' codes come from content the encoder learned from other items' behaviour, never their
  own. Its folder is keyed by fraction and seed; a finished one is reused, an interrupted one
  resumes from its checkpoints; a changed fine-tuning config gets a folder of its own (the key
  ends in a hash of the config), so nothing of an earlier one is reused or overwritten.
  """
  path, _, arg = str(section.finetune_config).partition(":")
  if not pathlib.Path(path).is_file():
    raise ConfigError("ranking.finetune_config", f"no such config file: {path}")
  config = load_config(path, arg or None)
  config.data = str(data_dir)
  config.pairs.cold_fraction = float(section.cold_fraction)
  config.pairs.cold_seed = int(seed)
  digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
  workdir = run_dir / "finetune" / (f"cold{float(section.cold_fraction):g}_seed{int(seed)}_"
                                    f"{digest.hexdigest()[:8]}")
  if not (workdir / "embed" / artifacts.MANIFEST).exists():
    run_finetune(config, workdir)
  return read_embeddings(workdir / "embed", num_items=num_items)


def run(config, workdir=None, *, train_models: bool = True) -> dict[str, Any]:
  """The data stage (lrm.jobs.stages), then ranking in `workdir` (default: config.run_dir);
  writes run_dir/ranking/results.json and the config to run_dir/config.json (what `lrm evaluate
  --workdir` reads). `train_models=False` evaluates the trained rankers without training
  (`run_variants`)."""
  section = ranking_section(at_workdir(config, workdir))
  base = pipeline_config(config)
  validate(base)
  run_dir = pathlib.Path(base.run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  artifacts.atomic_write_json(run_dir / "config.json", config.to_dict())
  data_dir = data_stage(base, run_dir)
  dataset = read_dataset(data_dir)
  content = None
  if section.content == "embed":
    content = embed_stage(base, run_dir, data_dir, dataset)[0]
  elif section.content == "finetuned":
    content = finetuned_content(section, int(base.seed), run_dir, data_dir, len(dataset.catalog))
  split, codes = prepare(section, dataset, int(base.seed), content=content)
  results = {"dataset": dataset.name, "section": section.to_dict(),
             "counts": {"train": len(split.train), "warm": len(split.warm),
                        "cold": len(split.cold), "cold_items": len(split.cold_rows)},
             "user_features": (None if split.user_features is None else
                               dict(zip(split.user_features.names,
                                        split.user_features.sizes))),
             "variants": run_variants(section, split, codes, seed=int(base.seed),
                                      workdir=run_dir / "ranking",
                                      train_models=train_models)}
  out = run_dir / "ranking"
  out.mkdir(parents=True, exist_ok=True)
  artifacts.atomic_write_text(out / "results.json", json.dumps(results, indent=1,
                                                                default=float))
  for name, r in results["variants"].items():
    rmse = "".join(f"  {part} rating RMSE {r[part]['rating/rmse']:.4f}"
                   for part in ("warm", "cold") if "rating/rmse" in r[part])
    print(f"{name:8s} warm click AUC {r['warm'].get('click/auc', float('nan')):.4f}  "
          f"cold click AUC {r['cold'].get('click/auc', float('nan')):.4f}{rmse}")
  return results


def evaluate(config, workdir=None) -> dict[str, Any]:
  """The trained rankers scored again on warm and cold candidates, without training."""
  return run(config, workdir, train_models=False)
