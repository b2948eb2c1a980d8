"""The LM stage: training (resumed, or reused when complete), evaluation of every number, and
the job's entry points `run` and `evaluate` (data, embed and sid stages first)."""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from absl import logging
from flax import nnx

from lrm.core import artifacts
from lrm.core.config import pipeline_config
from lrm.core.errors import ConfigError
from lrm.core.report import print_table
from lrm.eval.metrics import most_popular_ranking, retrieval_metrics
from lrm.eval.report import write_predictions
from lrm.jobs.common import (at_workdir, check_spec, has_checkpoints, jsonable,
                             restore as restore_state, sample_users, train_summary)
from lrm.jobs.lm.after_item import after_item_table
from lrm.jobs.lm.config import LMSpec, validate
from lrm.jobs.lm.metrics import (make_evaluate_fn, next_item_ranking, sid2text_f1,
                                 text2sid_accuracy)
from lrm.jobs.lm.prepare import (LMPrepared, build_model, model_config, prepare, training_rows,
                                 vocab_stage)
from lrm.jobs.stages import prepare_stages, write_results
from lrm.models.layers import count_params
from lrm.models.lm import LM, lm_loss, lm_rngs
from lrm.parallel.mesh import mesh_from_config
from lrm.sid.table import SIDTable
from lrm.train.optimizer import optimizer_from_config
from lrm.train.trainer import train

SPLITS = ("valid", "test")


def stage_dir(run_dir: pathlib.Path, variant: str = "") -> pathlib.Path:
  out = pathlib.Path(run_dir) / "lm"
  return out / variant if variant else out


def _train_spec(spec: LMSpec, prep: LMPrepared, vocab_cfg) -> dict[str, Any]:
  """What the checkpoints are bound to (the train section may change: resume continues)."""
  return {"model": jsonable(vocab_cfg), "init_from": spec.init_from,
          "tasks": jsonable(prep.tasks), "sid": prep.sid_id, "vocab_size": prep.vocab.padded_size,
          "text_holdout": int(spec.eval["text_holdout"]), "cold_start": dict(spec.cold_start)}


def train_lm(spec: LMSpec, out: pathlib.Path, prep: LMPrepared, *, seed: int, mesh=None,
             resume: bool = True) -> tuple[Any, dict[str, Any]]:
  """Trains (or resumes, or reuses) the LM in `out`; returns (model, summary)."""
  out = pathlib.Path(out)
  out.mkdir(parents=True, exist_ok=True)
  model = build_model(spec, prep.vocab, seed=seed, mesh=mesh)
  bound = _train_spec(spec, prep, model.config)
  check_spec(out, bound, field=lambda key: f"lm.{key}", other="lm.variant / run_dir")
  train_cfg = {k: v for k, v in spec.train.items() if k != "worker_count"}
  stage_config = jsonable({**bound, "train": train_cfg, "eval": dict(spec.eval),
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
                 extra={"train_spec": jsonable(bound)})
  # Throughput of the training steps alone (validation excluded); model FLOPs by the usual
  # 6 x parameters per token (forward and backward, attention not counted).
  tokens_per_s = result.steps_per_s * int(spec.train["batch_size"]) * prep.tasks.row_length
  summary = train_summary(result, model, rows=stats.num_rows, examples=stats.num_examples,
                          truncated=stats.num_truncated, fill=round(stats.fill, 4),
                          tokens_per_s=round(tokens_per_s, 1),
                          model_flops_per_s=round(6 * count_params(model) * tokens_per_s))
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
  model = LM(cfg, rngs=lm_rngs(seed))
  optimizer = nnx.Optimizer(model, optimizer_from_config(spec.train), wrt=nnx.Param)
  return model, optimizer, restore_state(out, model, optimizer, step)


def load_trained(spec: LMSpec, out: pathlib.Path, prep: LMPrepared, *, seed: int):
  """The model with the best (else latest) checkpoint's weights."""
  return restore(spec, out, prep.vocab, seed=seed, step="best")[0]


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
  elif (out / artifacts.MANIFEST).is_file():
    result["train"] = {k: v for k, v in artifacts.read_manifest(out)["summary"].items()
                       if k != "history"}    # what the run that trained it recorded
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


def run(config, workdir=None, *, train: bool = True, evaluate: bool = True) -> dict[str, Any]:
  """The data / embed / sid stages (lrm.jobs.pipeline, reused when complete), then the LM stage
  in `workdir` (default: config.run_dir); the result lands in run_dir/results.json under "lm"
  (or "lm/<variant>"), the config in run_dir/config.json (what `lrm evaluate` reads) and
  beside the stage."""
  spec = validate(at_workdir(config, workdir).lm)
  run_dir, dataset, results = prepare_stages(pipeline_config(config))
  if jax.process_index() == 0:
    for folder in (run_dir, stage_dir(run_dir, spec.variant)):
      artifacts.atomic_write_json(folder / "config.json", config.to_dict())
  out = lm_stage(config, run_dir, dataset, train=train, evaluate=evaluate,
                 mesh=mesh_from_config(config.mesh))
  key = f"lm/{spec.variant}" if spec.variant else "lm"
  if jax.process_index() == 0:
    write_results(run_dir, {key: out, "sid": results["sid"], "dataset": results["dataset"]})
  return {**results, key: out}




def evaluate(config, workdir=None) -> dict[str, Any]:
  """The trained LM's numbers again, without training (`run` with train=False)."""
  return run(config, workdir, train=False)
