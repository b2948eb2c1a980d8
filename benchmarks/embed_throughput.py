"""Content-encoder benchmark: throughput and sanity of meaning on an item catalog.

For each encoder (the Flax all-MiniLM-L6-v2 port, the hashing fallback), embeds every item's text
(title; brand; categories joined by " > ") and records:
- items/s and wall time of a warm run (model loaded and compiled; tokenization included), and
  separately the first run (which includes XLA compilation) and the model load time;
- nearest-neighbour leaf-category agreement: the share of items whose cosine nearest neighbour
  (itself excluded) has the same finest category (the reference model gets about 60%).
Optionally compares against sentence-transformers' embeddings of the same texts (saved by
benchmarks/embed_reference_st.py with --save-embeddings): max abs difference, min cosine.

One JSON per encoder and run: benchmarks/results/embed_<encoder>_<dataset>_<device>_<time>.json

  python benchmarks/embed_throughput.py                       # MiniLM + hashing, Amazon Beauty
  python benchmarks/embed_throughput.py --encoders minilm --compare-st /tmp/st_beauty.npy
  python benchmarks/embed_throughput.py --cpu-devices 0        # one XLA CPU device
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import time

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "amazon_beauty"
ENCODERS = {"minilm": "all-MiniLM-L6-v2", "hashing": "hashing"}

_DATA = flags.DEFINE_string("data", str(DEFAULT_DATA), "dataset folder")
_ENCODERS = flags.DEFINE_string("encoders", "minilm,hashing", "minilm,hashing")
_MODEL = flags.DEFINE_string("model", "all-MiniLM-L6-v2", "name or folder of the model")
_BATCH_SIZE = flags.DEFINE_integer("batch-size", None, "most texts per batch")
_TOKENS_PER_BATCH = flags.DEFINE_integer("tokens-per-batch", None,
                                         "most tokens per batch (default: the encoder's)")
_MICRO_BATCHES = flags.DEFINE_integer("micro-batches", None, "independent sub-batches per batch "
                                      "(default: the encoder's)")
_DTYPE = flags.DEFINE_string("dtype", None, "float32 (default) or bfloat16")
_CPU_DEVICES = flags.DEFINE_integer("cpu-devices", None, "XLA host devices on a CPU (default: "
                                    "one per core, at most 8; 0: jax's default of 1)")
_REPEATS = flags.DEFINE_integer("repeats", 1, "timed warm runs (best is kept)")
_LIMIT = flags.DEFINE_integer("limit", None, "only the first N items")
_COMPARE_ST = flags.DEFINE_string("compare-st", None,
                                  "sentence-transformers embeddings (.npy) of the same texts")
_SAVE_EMBEDDINGS = flags.DEFINE_string("save-embeddings", None,
                                       "where to save the MiniLM embeddings (.npy)")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")


def read_catalog(data_dir: pathlib.Path):
  """The dataset's catalog via lrm.data when it reads this layout, else items.jsonl directly."""
  from lrm.data.types import Catalog
  try:
    from lrm.data import read_dataset
    return read_dataset(data_dir).catalog
  except ImportError:
    pass
  ids, fields = [], {"title": [], "brand": [], "categories": []}
  with open(data_dir / "items.jsonl") as f:
    for line in f:
      record = json.loads(line)
      ids.append(record["item_id"])
      for k in fields:
        fields[k].append(record.get(k))
  return Catalog(item_ids=np.asarray(ids), fields=fields)


def nn_agreement(emb: np.ndarray, labels: np.ndarray) -> dict[str, float]:
  from lrm.encoders.quality import neighbour_label_agreement
  return neighbour_label_agreement(emb, labels)


def run_encoder(key: str, texts: list[str], labels: np.ndarray) -> tuple[dict, np.ndarray]:
  from lrm.encoders import load_encoder
  kwargs = {}
  if key == "minilm":
    if _TOKENS_PER_BATCH.value:
      kwargs["tokens_per_batch"] = _TOKENS_PER_BATCH.value
    if _DTYPE.value:
      kwargs["dtype"] = _DTYPE.value
    if _MICRO_BATCHES.value:
      kwargs["micro_batches"] = _MICRO_BATCHES.value
  start = time.perf_counter()
  encoder = load_encoder(_MODEL.value if key == "minilm" else "hashing", **kwargs)
  load_s = time.perf_counter() - start
  encode = lambda: encoder.encode(texts, batch_size=_BATCH_SIZE.value, show_progress=True)
  start = time.perf_counter()
  first = encode()  # compiles every shape this catalog needs
  first_s = time.perf_counter() - start
  walls = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    emb = encode()
    walls.append(time.perf_counter() - start)
  wall = min(walls)
  if not np.array_equal(first, emb):
    raise AssertionError("the warm run gave different embeddings from the first")
  quality = nn_agreement(emb, labels)
  metrics = {
      "items_per_s": round(len(texts) / wall, 1),
      "wall_s": round(wall, 3),
      "wall_s_runs": [round(w, 3) for w in walls],
      "first_run_wall_s": round(first_s, 3),
      "first_run_items_per_s": round(len(texts) / first_s, 1),
      "compile_s": round(max(first_s - wall, 0.0), 3),
      "load_s": round(load_s, 3),
      "nn_leaf_category_agreement": round(quality["nn_label_agreement"], 4),
      "nn_leaf_category_chance": round(quality["chance"], 4),
      "items": len(texts),
      "dim": int(emb.shape[1]),
  }
  return {"metrics": metrics, "encoder": encoder.describe()}, emb


def compare(ours: np.ndarray, theirs_path: pathlib.Path) -> dict[str, float]:
  theirs = np.load(theirs_path, allow_pickle=False).astype(np.float32)
  if theirs.shape != ours.shape:
    raise SystemExit(f"{theirs_path}: shape {theirs.shape}, ours {ours.shape}")
  cos = (ours * theirs).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(theirs, axis=1)
  return {"max_abs_diff": float(np.abs(ours - theirs).max()), "min_cosine": float(cos.min()),
          "mean_cosine": float(cos.mean()), "file": str(theirs_path)}


def set_cpu_devices(value: int | None) -> None:
  """--cpu-devices N: N XLA host devices, set before jax starts (default: one per core, unless
  XLA_FLAGS already says). Data parallelism over host devices keeps every core busy between the
  small ops of a batch: on 2 cores, 2 devices encoded ~7% more items/s than 1 device (which
  already splits each batch in two) and compiled half as long. 0 leaves jax's default (1)."""
  xla_flags = os.environ.get("XLA_FLAGS", "")
  if value is None:
    if "xla_force_host_platform_device_count" in xla_flags:
      return
    value = min(os.cpu_count() or 1, 8)
  if value > 0:
    os.environ["XLA_FLAGS"] = f"{xla_flags} --xla_force_host_platform_device_count={value}"


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  set_cpu_devices(_CPU_DEVICES.value)
  data = pathlib.Path(_DATA.value)

  from lrm.core import artifacts
  catalog = read_catalog(data)
  if _LIMIT.value:
    catalog = catalog.take(np.arange(min(_LIMIT.value, len(catalog))))
  texts = catalog.text()
  labels = catalog.leaf_category("categories")
  dataset = data.name
  device_slug = artifacts.device_description()[1]
  for key in _ENCODERS.value.split(","):
    if key not in ENCODERS:
      raise SystemExit(f"unknown encoder '{key}'; use {sorted(ENCODERS)}")
    start = time.perf_counter()
    record, emb = run_encoder(key, texts, labels)
    if key == "minilm" and _SAVE_EMBEDDINGS.value:
      artifacts.save_npy(pathlib.Path(_SAVE_EMBEDDINGS.value), emb)
    if key == "minilm" and _COMPARE_ST.value:
      record["metrics"]["parity_vs_sentence_transformers"] = compare(
          emb, pathlib.Path(_COMPARE_ST.value))
    result = artifacts.benchmark_record(
        "embed_throughput", dataset=dataset,
        model=_MODEL.value if key == "minilm" else "hashing (lrm fallback)",
        metrics=record["metrics"], wall_s=time.perf_counter() - start,
        encoder=record["encoder"], versions=artifacts.package_versions(),
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    path = artifacts.write_benchmark_result(_OUT.value, f"embed_{key}_{dataset}_{device_slug}",
                                            result)
    print(json.dumps({"file": str(path), "model": result["model"], **result["metrics"]},
                     indent=2))


if __name__ == "__main__":
  app.run(main)
