"""Generative retrieval on a dataset config: train (or resume) and evaluate with the TIGER
protocol, then record test Recall/NDCG@K beside TIGER's published numbers.

  python benchmarks/retrieval.py --config=configs/beauty.py:cpu      # 2-core CPU budget
  python benchmarks/retrieval.py --config=configs/beauty.py          # full recipe (GPU)
  python benchmarks/retrieval.py --config=configs/beauty.py --config.model.name=sasrec
  python benchmarks/retrieval.py --config=configs/sports.py

Any `--config.FIELD=VALUE` override applies (e.g. `--config.run_dir=`, or on the GPU machine
`--config.data.path=.gpu/amazon_beauty --config.embed.modalities=npy
--config.embed.npy=.gpu/beauty_minilm.npy`). A run directory with a finished model is reused
(the record then reports the original training's speed and wall time from its manifest).
Writes benchmarks/results/retrieval_<dataset>_<model>_<device>_<timestamp>.json.
"""

from __future__ import annotations

import pathlib
import sys
import time

from absl import app, flags
from ml_collections import config_flags

REPO = pathlib.Path(__file__).resolve().parents[1]
_CONFIG = config_flags.DEFINE_config_file("config", str(REPO / "configs" / "beauty.py"),
                                          "experiment config", lock_config=True)
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")


def main(argv):
  del argv
  import jax
  from lrm.core.artifacts import device_description, git_commit, write_benchmark_result
  from lrm.eval.report import TIGER_REFERENCE
  from lrm.pipeline import run_pipeline
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
  device, slug = device_description()
  hyper = config.model[name].to_dict()
  record = {
      "benchmark": "retrieval",
      "dataset": dataset,
      "split": "test",
      "model": name,
      "model_config": hyper,
      "task": config.task.to_dict(),
      "sid": results["sid"],
      "metrics": evaluated[name]["test"],
      "valid": evaluated[name]["valid"],
      "popularity": evaluated["popularity"],
      "train": retrieval["train"],
      "train_config": config.train.to_dict(),
      "eval_config": config.eval.to_dict(),
      "device": device,
      "jax_devices": len(jax.devices()),
      "wall_s": round(wall, 1),
      "commit": git_commit(),
      "command": " ".join(["python", *sys.argv]),
      "reference": TIGER_REFERENCE.get(dataset, {}),
  }
  write_benchmark_result(_OUT.value, f"retrieval_{dataset}_{name}_{slug}", record)


if __name__ == "__main__":
  app.run(main)
