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

import argparse
import datetime
import json
import os
import pathlib
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "amazon_beauty"
ENCODERS = {"minilm": "all-MiniLM-L6-v2", "hashing": "hashing"}


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


def run_encoder(key: str, texts: list[str], labels: np.ndarray, args) -> tuple[dict, np.ndarray]:
  from lrm.encoders import load_encoder
  kwargs = {}
  if key == "minilm":
    if args.tokens_per_batch:
      kwargs["tokens_per_batch"] = args.tokens_per_batch
    if args.dtype:
      kwargs["dtype"] = args.dtype
    if args.micro_batches:
      kwargs["micro_batches"] = args.micro_batches
  start = time.perf_counter()
  encoder = load_encoder(args.model if key == "minilm" else "hashing", **kwargs)
  load_s = time.perf_counter() - start
  encode = lambda: encoder.encode(texts, batch_size=args.batch_size, show_progress=True)
  start = time.perf_counter()
  first = encode()  # compiles every shape this catalog needs
  first_s = time.perf_counter() - start
  walls = []
  for _ in range(args.repeats):
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


def set_cpu_devices(argv) -> None:
  """--cpu-devices N: N XLA host devices, set before jax starts (default: one per core, unless
  XLA_FLAGS already says). Data parallelism over host devices keeps every core busy between the
  small ops of a batch: on 2 cores, 2 devices encoded ~7% more items/s than 1 device (which
  already splits each batch in two) and compiled half as long. 0 leaves jax's default (1)."""
  value = None
  for i, arg in enumerate(argv):
    if arg.startswith("--cpu-devices="):
      value = int(arg.split("=", 1)[1])
    elif arg == "--cpu-devices" and i + 1 < len(argv):
      value = int(argv[i + 1])
  flags = os.environ.get("XLA_FLAGS", "")
  if value is None:
    if "xla_force_host_platform_device_count" in flags:
      return
    value = min(os.cpu_count() or 1, 8)
  if value > 0:
    os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={value}"


def main(argv=None) -> None:
  set_cpu_devices(sys.argv[1:] if argv is None else argv)
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--data", type=pathlib.Path, default=DEFAULT_DATA)
  parser.add_argument("--encoders", default="minilm,hashing", help="minilm,hashing")
  parser.add_argument("--model", default="all-MiniLM-L6-v2", help="name or folder of the model")
  parser.add_argument("--batch-size", type=int, default=None, help="most texts per batch")
  parser.add_argument("--tokens-per-batch", type=int, default=None)
  parser.add_argument("--micro-batches", type=int, default=None,
                      help="independent sub-batches per batch (default: the encoder's)")
  parser.add_argument("--dtype", default=None, help="float32 (default) or bfloat16")
  parser.add_argument("--cpu-devices", type=int, default=None,
                      help="XLA host devices on a CPU (default: one per core, at most 8; "
                      "0: jax's default of 1)")
  parser.add_argument("--repeats", type=int, default=1, help="timed warm runs (best is kept)")
  parser.add_argument("--limit", type=int, default=None, help="only the first N items")
  parser.add_argument("--compare-st", type=pathlib.Path, default=None,
                      help="sentence-transformers embeddings (.npy) of the same texts")
  parser.add_argument("--save-embeddings", type=pathlib.Path, default=None,
                      help="where to save the MiniLM embeddings (.npy)")
  parser.add_argument("--out", type=pathlib.Path, default=REPO / "benchmarks" / "results")
  args = parser.parse_args(argv)

  from lrm.core import artifacts
  catalog = read_catalog(args.data)
  if args.limit:
    catalog = catalog.take(np.arange(min(args.limit, len(catalog))))
  texts = catalog.text()
  labels = catalog.leaf_category("categories")
  dataset = args.data.name
  device, device_slug = artifacts.device_description()
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  for key in args.encoders.split(","):
    if key not in ENCODERS:
      raise SystemExit(f"unknown encoder '{key}'; use {sorted(ENCODERS)}")
    start = time.perf_counter()
    record, emb = run_encoder(key, texts, labels, args)
    if key == "minilm" and args.save_embeddings:
      artifacts.save_npy(args.save_embeddings, emb)
    if key == "minilm" and args.compare_st:
      record["metrics"]["parity_vs_sentence_transformers"] = compare(emb, args.compare_st)
    result = {
        "benchmark": "embed_throughput",
        "dataset": dataset,
        "model": args.model if key == "minilm" else "hashing (lrm fallback)",
        "metrics": record["metrics"],
        "encoder": record["encoder"],
        "device": device,
        "wall_s": round(time.perf_counter() - start, 3),
        "commit": artifacts.git_commit(),
        "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
        "versions": artifacts.package_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    path = args.out / f"embed_{key}_{dataset}_{device_slug}_{stamp}.json"
    artifacts.atomic_write_json(path, result)
    print(json.dumps({"file": str(path), "model": result["model"], **result["metrics"]},
                     indent=2))


if __name__ == "__main__":
  main()
