"""Generative retrieval on a dataset config: train (or resume) and evaluate with the TIGER
protocol, then record test Recall/NDCG@K beside TIGER's published numbers.

  python benchmarks/retrieval.py --config=configs/beauty.py:cpu      # 2-core CPU budget
  python benchmarks/retrieval.py --config=configs/beauty.py          # full recipe (GPU)
  python benchmarks/retrieval.py --config=configs/beauty.py --config.model.name=sasrec
  python benchmarks/retrieval.py --config=configs/sports.py

Any `--config.FIELD=VALUE` override applies (e.g. `--config.run_dir=`, or
`--config.data.path=DIR --config.embed.modalities=npy --config.embed.npy=FILE.npy`;
benchmarks/gpu_suite.sh passes the data folder and the encoder this way). A run directory with a
finished model is reused (the record then reports the original training's speed and wall time
from its manifest).
Writes benchmarks/results/retrieval_<dataset>_<model>_<device>_<timestamp>.json: test metrics
(TIGER's protocol: all items ranked) and, for models that score every item, `history_excluded`
(eSASRec's protocol); `train.train_wall_s` covers the SID tokenizer's fit plus the model's
training; `curve` is validation quality against training minutes.

  python benchmarks/retrieval.py --merge results/a.json results/b.json ...   # seeds -> mean, spread
"""

from __future__ import annotations

import pathlib
import time

from absl import app, flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file("config", str(REPO / "configs" / "beauty.py"),
                                          "experiment config", lock_config=True)
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")
_MERGE = flags.DEFINE_bool("merge", False, "merge the records named as arguments (one per seed "
                           "of the same dataset and model) into mean and spread")


def _flat_metrics(record: dict) -> dict[str, float]:
  out = {k: v for k, v in record["metrics"].items() if k.startswith(("recall@", "ndcg@"))}
  for k, v in record["metrics"].get("history_excluded", {}).items():
    out[f"history_excluded/{k}"] = v
  out["train_wall_s"] = record["train"]["train_wall_s"]
  return out


def merge_records(records: list[dict], paths: list[str]) -> dict:
  """Mean and spread (max - min) per metric over seeds of one dataset + model."""
  import numpy as np
  from lrm.core.artifacts import benchmark_record
  keys = {(r["dataset"], r["model"], r.get("variant")) for r in records}
  if len(keys) != 1:
    raise SystemExit(f"retrieval --merge: records mix datasets / models / variants: {sorted(keys)}")
  seeds = [r.get("seed") for r in records]
  if len(set(seeds)) != len(seeds):
    raise SystemExit(f"retrieval --merge: repeated seeds {seeds}")
  flat = [_flat_metrics(r) for r in records]
  names = [k for k in flat[0] if all(k in f for f in flat)]
  summary = {k: {"mean": float(np.mean([f[k] for f in flat])),
                 "spread": float(np.ptp([f[k] for f in flat])),
                 "values": [f[k] for f in flat]} for k in names}
  first = records[0]
  return benchmark_record(
      "retrieval", dataset=first["dataset"], split="test", model=first["model"],
      variant=first.get("variant"), metrics={k: v["mean"] for k, v in summary.items()},
      train={"train_wall_s": summary["train_wall_s"]["mean"]}, seed=seeds,
      device=sorted({r["device"] for r in records}),
      commit=sorted({str(r["commit"]) for r in records}), merged=paths, seeds=seeds,
      summary=summary, reference=first.get("reference", {}))


def _merge(paths: list[str]) -> None:
  import json
  from lrm.core.artifacts import write_benchmark_result
  from lrm.core.report import print_table
  records = [json.loads(pathlib.Path(p).read_text()) for p in paths]
  merged = merge_records(records, paths)
  rows = [[k, f"{v['mean']:.4f}", f"{v['spread']:.4f}", len(v["values"])]
          for k, v in merged["summary"].items()]
  print_table(["metric", "mean", "spread", "seeds"], rows)
  tag = f"_{merged['variant']}" if merged.get("variant") else ""
  write_benchmark_result(_OUT.value, f"retrieval_{merged['dataset']}_{merged['model']}{tag}"
                         "_merged", merged)


def main(argv):
  if _MERGE.value:
    if len(argv) < 3:
      raise SystemExit("retrieval --merge needs at least two records")
    _merge(argv[1:])
    return
  if len(argv) > 1:
    raise SystemExit(f"retrieval: unexpected arguments {argv[1:]}")
  import jax
  from lrm.core.artifacts import (benchmark_record, device_description, git_commit,
                                  write_benchmark_result)
  from lrm.eval.report import TIGER_REFERENCE
  from lrm.jobs.retrieval import run_pipeline
  config = _CONFIG.value
  start = time.perf_counter()
  git_commit()     # the commit of the code that runs (read once)
  results = run_pipeline(config, train=True, evaluate=True)
  wall = time.perf_counter() - start
  retrieval = results["retrieval"]
  name = retrieval["model"]
  evaluated = retrieval["evaluated"]
  dataset = pathlib.Path(config.data.path).name if config.data.source == "layout" \
      else config.data.source
  slug = device_description()[1]
  hyper = config.model[name].to_dict()
  train = dict(retrieval["train"])
  # The tokenizer's fit is part of what a model costs (a reused SID artifact: its recorded fit).
  train["model_wall_s"] = train["train_wall_s"]
  train["tokenizer_s"] = float(results["sid"].get("fit_s") or 0.0)
  train["train_wall_s"] = round(train["model_wall_s"] + train["tokenizer_s"], 1)
  record = benchmark_record(
      "retrieval", dataset=dataset, split="test", model=name, variant=None,
      metrics=evaluated[name]["test"], train=train, wall_s=wall, seed=int(config.seed),
      model_config=hyper, task=config.task.to_dict(), sid=results["sid"],
      valid=evaluated[name]["valid"], popularity=evaluated["popularity"],
      curve=retrieval["train"].get("history", []), train_config=config.train.to_dict(),
      eval_config=config.eval.to_dict(), jax_devices=len(jax.devices()),
      train_seed=int(config.train.seed), reference=TIGER_REFERENCE.get(dataset, {}))
  write_benchmark_result(_OUT.value, f"retrieval_{dataset}_{name}_{slug}", record)


if __name__ == "__main__":
  app.run(main)
