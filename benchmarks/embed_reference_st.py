"""Reference for embed_throughput.py: sentence-transformers + torch on CPU, same texts, same metric.

Runs in its own virtual environment, outside lrm's dependencies (it does not import lrm):

  python3 -m venv /tmp/st-venv && /tmp/st-venv/bin/pip install torch==2.13.0 sentence-transformers \
      absl-py
  HF_HUB_OFFLINE=1 /tmp/st-venv/bin/python benchmarks/embed_reference_st.py \
      --model /root/.cache/lrm/all-MiniLM-L6-v2 --save-embeddings /tmp/st_beauty.npy

Texts are built exactly as lrm's Catalog.text(): "title; brand; categories joined by ' > '",
skipping missing fields. Writes benchmarks/results/embed_reference_st_<dataset>_<device>_<time>.json
with the numbers under "reference" (never mixed with ours).
"""

from __future__ import annotations

import datetime
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # never touch the network

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "amazon_beauty"
TEXT_FIELDS = ("title", "brand", "categories")

_DATA = flags.DEFINE_string("data", str(DEFAULT_DATA), "dataset folder (items.jsonl)")
_MODEL = flags.DEFINE_string("model", str(pathlib.Path.home() / ".cache" / "lrm" /
                                          "all-MiniLM-L6-v2"),
                             "sentence-transformers model name or folder")
_BATCH_SIZE = flags.DEFINE_integer("batch-size", 32, "sentence-transformers' default")
_DEVICE = flags.DEFINE_string("device", "cpu", "torch device: cpu or cuda")
_LIMIT = flags.DEFINE_integer("limit", None, "only the first N items")
_REPEATS = flags.DEFINE_integer("repeats", 1, "timed runs (best is kept)")
_SAVE_EMBEDDINGS = flags.DEFINE_string("save-embeddings", None,
                                       "where to save the embeddings (.npy)")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")


def read_items(path: pathlib.Path) -> tuple[list[str], np.ndarray]:
  """Texts (as Catalog.text()) and leaf-category labels (-1 when none), in file order."""
  texts, labels, vocab = [], [], {}
  with open(path) as f:
    for line in f:
      record = json.loads(line)
      parts = []
      for field in TEXT_FIELDS:
        v = record.get(field)
        if v is None or v == "" or v == []:
          continue
        parts.append(" > ".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v))
      texts.append("; ".join(parts))
      cats = record.get("categories")
      if isinstance(cats, list) and cats:
        labels.append(vocab.setdefault(str(cats[-1]), len(vocab)))
      elif isinstance(cats, str) and cats:
        labels.append(vocab.setdefault(cats, len(vocab)))
      else:
        labels.append(-1)
  return texts, np.asarray(labels, np.int64)


def nn_agreement(emb: np.ndarray, labels: np.ndarray, chunk: int = 2048) -> tuple[float, float]:
  """Share of labelled items whose cosine nearest neighbour (not itself) has the same label."""
  emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  rows_all = np.flatnonzero(labels >= 0)
  hits = 0
  for start in range(0, len(rows_all), chunk):
    rows = rows_all[start:start + chunk]
    sims = emb[rows] @ emb.T
    sims[np.arange(len(rows)), rows] = -np.inf
    hits += int((labels[sims.argmax(1)] == labels[rows]).sum())
  counts = np.bincount(labels[rows_all])
  m = len(rows_all)
  chance = float((counts * (counts - 1)).sum() / (m * (m - 1))) if m > 1 else 0.0
  return hits / max(m, 1), chance


def cpu_name() -> str:
  try:
    for line in open("/proc/cpuinfo"):
      if line.startswith("model name"):
        return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or "cpu"


def git_commit() -> str | None:
  try:
    out = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                         capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain",
                            "--untracked-files=no"], capture_output=True, text=True, timeout=5,
                           check=True).stdout.strip()
    return out + ("-dirty" if dirty else "")
  except (OSError, subprocess.SubprocessError):
    return None


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  data = pathlib.Path(_DATA.value)
  out = pathlib.Path(_OUT.value)

  import sentence_transformers
  import torch
  from sentence_transformers import SentenceTransformer

  texts, labels = read_items(data / "items.jsonl")
  if _LIMIT.value:
    texts, labels = texts[:_LIMIT.value], labels[:_LIMIT.value]
  total_start = time.perf_counter()
  start = time.perf_counter()
  model = SentenceTransformer(_MODEL.value, device=_DEVICE.value)
  load_s = time.perf_counter() - start
  model.encode(texts[:256], batch_size=_BATCH_SIZE.value)  # warm-up (allocator, kernels)
  walls = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    emb = model.encode(texts, batch_size=_BATCH_SIZE.value, show_progress_bar=True,
                       convert_to_numpy=True)
    walls.append(time.perf_counter() - start)
  wall = min(walls)
  emb = np.asarray(emb, np.float32)
  agreement, chance = nn_agreement(emb, labels)
  if _SAVE_EMBEDDINGS.value:
    np.save(_SAVE_EMBEDDINGS.value, emb)
  cores = os.cpu_count()
  result = {
      # lrm.core.artifacts.RECORD_FIELDS, by hand: this venv has no lrm (nor jax) to import
      # benchmark_record from. The numbers are a third party's: under "reference", not "metrics".
      "benchmark": "embed_reference",
      "dataset": data.name,
      "split": None,
      "model": f"sentence-transformers/all-MiniLM-L6-v2 (torch {_DEVICE.value})",
      "variant": None,
      "metrics": None,
      "train": None,
      "seed": None,
      "reference": {
          "items_per_s": round(len(texts) / wall, 1),
          "wall_s": round(wall, 3),
          "wall_s_runs": [round(w, 3) for w in walls],
          "load_s": round(load_s, 3),
          "nn_leaf_category_agreement": round(agreement, 4),
          "nn_leaf_category_chance": round(chance, 4),
          "items": len(texts),
          "dim": int(emb.shape[1]),
          "batch_size": _BATCH_SIZE.value,
          "max_seq_length": model.max_seq_length,
          "torch_threads": torch.get_num_threads(),
      },
      "device": (f"{cpu_name()}, {cores} cores (torch CPU)" if _DEVICE.value == "cpu"
                 else f"{torch.cuda.get_device_name()} (torch {_DEVICE.value})"),
      "wall_s": round(time.perf_counter() - total_start, 3),
      "commit": git_commit(),
      "command": " ".join([os.path.relpath(sys.argv[0], REPO)] + sys.argv[1:]),
      "versions": {"python": platform.python_version(), "torch": torch.__version__,
                   "sentence_transformers": sentence_transformers.__version__,
                   "numpy": np.__version__},
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
  }
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  out.mkdir(parents=True, exist_ok=True)
  path = out / (f"embed_reference_st_{data.name}_"
                f"{'cpu' + str(cores) if _DEVICE.value == 'cpu' else 'gpu'}_{stamp}.json")
  tmp = path.with_suffix(".json.tmp")
  tmp.write_text(json.dumps(result, indent=2) + "\n")
  os.replace(tmp, path)  # atomic, like lrm's artifacts
  print(json.dumps({"file": str(path), **result["reference"]}, indent=2))


if __name__ == "__main__":
  app.run(main)
