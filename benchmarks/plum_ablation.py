"""PLUM's SID ablation (arXiv 2510.07784, its table of SID-v1 vs SID-v2) on Amazon Beauty / Sports.

Rows (each fitted with `--seeds` seeds):
  v1            plain RQ-VAE on the fused MiniLM embedding (title; brand; categories), 3 x 256
  v2            SID-v2: two text embeddings as two modalities (MODALITIES: Beauty's title and
                its brand + categories; Sports has no titles, so its brand and its categories),
                each its own encoder and reconstruction; multi-resolution codebooks; progressive masking;
                co-occurrence InfoNCE on items co-consumed in the leave-one-out training part
  v2_no_multires       v2 with uniform 3 x 256 codebooks
  v2_no_multi_input    v2 on the one fused embedding
  v2_no_cooccurrence   v2 with cooccurrence_weight = 0
  v1_ft, v2_ft  the same two on the contrastively fine-tuned encoder's embeddings (FLUID;
                `--finetuned=W/encoder` from `lrm finetune`; skipped without it)
  rq_kmeans     reference, not in PLUM's table: the project's default tokenizer (RQ-KMeans,
                configs/<dataset>.py's `sid` section) on the same fused embedding, 3 x 256, so
                the strongest row can be set against both plain RQ-VAE and RQ-KMeans SIDs

Multi-resolution sizes for a 12k-item catalog: (512, 256, 128). PLUM halves the sizes with
depth from 2048 for a corpus of many millions; here the product stays 2^24, the same capacity as
v1's 256^3, so a difference in uniqueness comes from how codes are spread over levels, not from
more capacity, and the first level (512 codes, ~24 items per code) is about as fine as
TIGER's 256 on Beauty's 12,101 items is coarse.

Per row and seed: uniqueness of the 3-level code before the collision level (distinct codes /
items), fit seconds, each level's code perplexity, and a behaviour signal that switching the
co-occurrence term off cannot win: `heldout_share@1/2`, the share of held-out co-consumed pairs
(each evaluated user's validation target with the last `--pair_window` items of its history,
pairs that are not training pairs) whose codes agree on the first 1 / 2 levels, next to
`chance_share@1/2`, the same for the pairs with their second items shuffled (what code sizes
and popularity alone give); with `--retrieval_steps` > 0 also generative retrieval (TIGER seq2seq,
configs/<dataset>.py, the same budget for every row) Recall/NDCG@5/10 on the test split, and
Recall@10 on test targets rare in training (<= 5 training interactions). Means and spreads
(max - min over seeds); a difference to v1 smaller than the larger of the two spreads is
reported as "none".

  # CPU (2 cores): SID part for all rows, tiny retrieval for two rows
  python benchmarks/plum_ablation.py --dataset=beauty --sid_steps=300 --seeds=0,1,2
  python benchmarks/plum_ablation.py --dataset=beauty --sid_steps=300 --seeds=0 \
      --rows=v1,v2 --retrieval_steps=100 --config_arg=cpu
  # records of other seeds (one per session or per 10-minute GPU call) -> one record
  python benchmarks/plum_ablation.py --merge=a.json,b.json,c.json
  # GPU (full)
  python benchmarks/plum_ablation.py --dataset=beauty --finetuned=runs/finetune_beauty/encoder \
      --sid_steps=20000 --retrieval_steps=30000 --seeds=0,1,2
  # Sports (configs/finetune_sports.py for the fine-tuned encoder)
  python benchmarks/plum_ablation.py --dataset=sports --finetuned=runs/finetune_sports/encoder \
      --sid_steps=1000 --retrieval_steps=1500 --config_arg=cpu --rows=v1 --seeds=0

Writes benchmarks/results/plum_ablation_<dataset>_<device>_<timestamp>.json.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
ROWS = ("v1", "v2", "v2_no_multires", "v2_no_multi_input", "v2_no_cooccurrence", "v1_ft",
        "v2_ft", "rq_kmeans")
MULTIRES = (512, 256, 128)
UNIFORM = (256, 256, 256)
PLUM_REFERENCE = {  # PLUM's table (900M model, YouTube video Recall@10); theirs, not ours.
    "v1": {"uniqueness": 0.940, "recall@10": 0.123},
    "v2": {"uniqueness": 0.967, "recall@10": 0.144},
    "v2_no_multires": {"uniqueness": 0.948, "recall@10": 0.132},
    "v2_no_multi_input": {"uniqueness": 0.969, "recall@10": 0.128},
    "v2_no_cooccurrence": {"uniqueness": 0.918, "recall@10": 0.126},
}

_DATASET = flags.DEFINE_enum("dataset", "beauty", ["beauty", "sports"], "Amazon dataset")
_DATA_ROOT = flags.DEFINE_string("data_root", str(REPO.parent / "shared" / "data"),
                                 "folder holding amazon_beauty / amazon_sports")
_ENCODER = flags.DEFINE_string("encoder", "all-MiniLM-L6-v2", "base sentence encoder")
_FINETUNED = flags.DEFINE_string("finetuned", None, "fine-tuned encoder folder (lrm finetune's "
                                 "W/encoder); rows *_ft need it")
_ROWS = flags.DEFINE_list("rows", list(ROWS), "rows to run")
_SEEDS = flags.DEFINE_list("seeds", ["0", "1", "2"], "seeds")
_SID_STEPS = flags.DEFINE_integer("sid_steps", 20000, "tokenizer training steps per fit")
_SID_BATCH = flags.DEFINE_integer("sid_batch", 1024, "tokenizer batch size")
_COOC_WEIGHT = flags.DEFINE_float("cooccurrence_weight", 0.1, "SID-v2 co-occurrence weight")
_WINDOW = flags.DEFINE_integer("pair_window", 3, "co-consumption window (positions)")
_COOC_SIMILARITY = flags.DEFINE_enum("cooccurrence_similarity", None, ["l2", "cosine"],
                                     "SID-v2 co-occurrence similarity (default: SIDv2Config's)")
_COOC_SPACE = flags.DEFINE_enum("cooccurrence_space", None, ["quantized", "latent"],
                                "SID-v2 co-occurrence space (default: SIDv2Config's)")
_RETRIEVAL_STEPS = flags.DEFINE_integer("retrieval_steps", 0, "TIGER training steps per row "
                                        "and seed (0: SID part only)")
_CONFIG_ARG = flags.DEFINE_string("config_arg", "", "argument of configs/<dataset>.py (cpu)")
_WORKDIR = flags.DEFINE_string("workdir", "runs/plum_ablation", "embeddings cache, SID tables, "
                               "retrieval runs")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")
_MERGE = flags.DEFINE_list("merge", [], "instead of fitting: records of this benchmark with the "
                           "same settings and disjoint seeds -> one record over all their seeds")
# The two input embeddings of the multi-input rows, per dataset: (cache name, item fields).
# Sports items have no title (its README), so a title modality would be one constant vector.
MODALITIES = {"beauty": (("title", ("title",)), ("brand_cat", ("brand", "categories"))),
              "sports": (("brand", ("brand",)), ("cat", ("categories",)))}
FUSED_FIELDS = ("title", "brand", "categories")
# A modality whose text is empty for more than this share of items is refused.
MAX_EMPTY_TEXT = 0.5

# Settings that must agree for records to be merged (rows and seeds may differ).
MERGE_KEYS = ("benchmark", "dataset", "sid_steps", "sid_batch", "multires_sizes",
              "uniform_sizes", "cooccurrence_weight", "pair_window", "cooccurrence_similarity",
              "cooccurrence_space", "retrieval_steps", "config_arg")


def _embeddings(workdir: pathlib.Path, catalog, encoder, name: str, fields) -> np.ndarray:
  """Encodes `fields` of every item once (cached as workdir/<name>.npy)."""
  path = workdir / f"{name}.npy"
  if path.exists():
    return np.load(path)
  texts = catalog.text(fields)
  empty = sum(not t.strip() for t in texts) / max(len(texts), 1)
  if empty > MAX_EMPTY_TEXT:
    from lrm.core.errors import ConfigError
    raise ConfigError("modalities", f"{name}: fields {list(fields)} are empty for {empty:.0%} "
                      f"of {workdir.name}'s items; pick fields the catalog has (MODALITIES)")
  x = encoder.encode(texts, show_progress=True).astype(np.float32)
  path.parent.mkdir(parents=True, exist_ok=True)
  np.save(path, x)
  return x


def _input_embeddings(workdir: pathlib.Path, catalog, encoder, prefix: str, dataset: str
                      ) -> dict:
  """An encoder's unit-length inputs of every row: `<prefix>fused` (FUSED_FIELDS) and
  `<prefix>split` (the dataset's MODALITIES, in order)."""
  def embed(name, fields):
    return _normalise(_embeddings(workdir, catalog, encoder, prefix + name, fields))
  return {prefix + "fused": embed("fused", FUSED_FIELDS),
          prefix + "split": [embed(name, fields) for name, fields in MODALITIES[dataset]]}


def _normalise(x: np.ndarray) -> np.ndarray:
  return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def _row_spec(row: str, seed: int, modalities: dict[str, np.ndarray]):
  """(SIDSpec, input matrix) of one ablation row."""
  from lrm.jobs.sid import SIDSpec
  ft = row.endswith("_ft")
  fused = modalities["ft_fused" if ft else "fused"]
  split = modalities["ft_split" if ft else "split"]
  if row == "rq_kmeans":    # SIDSpec's k-means settings, which configs/base.py's sid takes
    return SIDSpec(method="rq_kmeans", codebook_sizes=UNIFORM, seed=seed), fused
  rq = {"steps": _SID_STEPS.value, "batch_size": _SID_BATCH.value}
  if row.startswith("v1"):
    return SIDSpec(method="rq_vae", codebook_sizes=UNIFORM, seed=seed, rqvae=rq), fused
  v2 = {**rq, "cooccurrence_weight": _COOC_WEIGHT.value, "pair_window": _WINDOW.value}
  for key, flag in (("cooccurrence_similarity", _COOC_SIMILARITY),
                    ("cooccurrence_space", _COOC_SPACE)):
    if flag.value is not None:
      v2[key] = flag.value
  sizes, x = MULTIRES, np.concatenate(split, 1)
  if row == "v2_no_multires":
    sizes = UNIFORM
  if row == "v2_no_multi_input":
    x = fused
  if row == "v2_no_cooccurrence":
    v2["cooccurrence_weight"] = 0.0
  v2["modality_dims"] = (x.shape[1],) if x is fused else tuple(m.shape[1] for m in split)
  return SIDSpec(method="sid_v2", codebook_sizes=sizes, seed=seed, sid_v2=v2), x


def heldout_pairs(valid, catalog, window: int, train_pairs: np.ndarray) -> np.ndarray:
  """Catalog-row pairs (a < b) of each evaluated user's validation target with the last
  `window` items of its history, minus the training pairs: co-consumption the tokenizer never
  saw. Shape: train_pairs int [p, 2] -> int64 [q, 2]."""
  hist = valid.histories
  target = catalog.rows(valid.targets, what="validation target")
  parts = []
  for back in range(1, window + 1):
    has = hist.lengths >= back
    a = catalog.rows(hist.items[hist.offsets[1:][has] - back], what="history item")
    b = target[has]
    parts.append(np.stack([np.minimum(a, b), np.maximum(a, b)], 1))
  pairs = np.unique(np.concatenate(parts), axis=0)
  pairs = pairs[pairs[:, 0] != pairs[:, 1]]
  n = len(catalog)
  seen = np.isin(pairs[:, 0] * n + pairs[:, 1], train_pairs[:, 0] * n + train_pairs[:, 1])
  return pairs[~seen].astype(np.int64)


def behaviour_metrics(codes: np.ndarray, pairs: np.ndarray, sizes, seed: int) -> dict[str, Any]:
  """Shares of `pairs` whose codes agree on the first 1 / 2 levels, the same with the second
  items shuffled (chance), and each level's code perplexity. Shape: codes int [n, L]."""
  from lrm.sid.quality import level_usage
  from lrm.sid.sid_v2 import prefix_sharing
  shuffled = np.stack([pairs[:, 0], np.random.default_rng(seed).permutation(pairs[:, 1])], 1)
  out: dict[str, Any] = {}
  for level in (1, 2):
    out[f"heldout_share@{level}"] = prefix_sharing(codes, pairs, level)
    out[f"chance_share@{level}"] = prefix_sharing(codes, shuffled, level)
  out["perplexity"] = [round(level_usage(codes[:, c], k)["perplexity"], 1)
                       for c, k in enumerate(sizes)]
  return out


def _rare_recall(predictions: pathlib.Path, split, train_counts: dict[int, int],
                 k: int = 10) -> dict[str, float]:
  ranked = {}
  with open(predictions) as f:
    for line in f:
      rec = json.loads(line)
      ranked[int(rec["user"])] = rec["items"][:k]
  hits, total = 0, 0
  for user, target in zip(split.test.user_ids, split.test.targets):
    if train_counts.get(int(target), 0) <= 5:
      total += 1
      hits += int(int(target) in ranked.get(int(user), []))
  return {f"rare_recall@{k}": hits / total if total else float("nan"), "rare_users": total}


def _retrieval(config, run_dir: pathlib.Path, dataset, sid_dir: pathlib.Path,
               split) -> dict[str, Any]:
  from lrm.jobs import retrieval
  from lrm.parallel.mesh import mesh_from_config
  prep = retrieval.prepare(config, dataset, sid_dir)
  mesh = mesh_from_config(config.mesh)
  train = retrieval.train_model(config, run_dir, prep, "tiger", mesh=mesh)
  record = retrieval.evaluate_model(config, run_dir, prep, "tiger")
  counts = dict(zip(*np.unique(split.train.items, return_counts=True)))
  rare = _rare_recall(retrieval.model_dir(run_dir, "tiger") / "predictions_test.jsonl", split,
                      {int(k): int(v) for k, v in counts.items()})
  return {"test": record["test"], **rare, "train_steps": train.get("steps"),
          "train_wall_s": train.get("train_wall_s")}


def _summarise(per_seed: dict[str, list[dict]]) -> dict[str, Any]:
  """Mean and spread (max - min) per metric, and differences to v1 beyond the spread."""
  summary: dict[str, Any] = {}
  for row, runs in per_seed.items():
    metrics: dict[str, list[float]] = {}
    for run in runs:
      flat = {k: run[k] for k in ("uniqueness", "fit_s", "heldout_share@1", "heldout_share@2",
                                  "chance_share@1", "chance_share@2") if k in run}
      if "retrieval" in run:
        flat.update({k: v for k, v in run["retrieval"]["test"].items()
                     if k.startswith(("recall@", "ndcg@"))})
        flat["rare_recall@10"] = run["retrieval"]["rare_recall@10"]
      for k, v in flat.items():
        metrics.setdefault(k, []).append(float(v))
    summary[row] = {k: {"mean": float(np.mean(v)), "spread": float(np.max(v) - np.min(v)),
                        "n": len(v)} for k, v in metrics.items()}
  base = summary.get("v1")
  for row, s in summary.items():
    if base is None or row == "v1":
      continue
    for k, m in s.items():
      if k in base and k != "fit_s":
        diff = m["mean"] - base[k]["mean"]
        noise = max(m["spread"], base[k]["spread"])
        m["vs_v1"] = "none" if abs(diff) <= noise or m["n"] < 2 else round(diff, 4)
  return summary


def _train(per_seed: dict[str, list[dict]]) -> dict[str, float]:
  """What the runs spent training: every tokenizer fit and every retrieval model's training."""
  runs = [run for row in per_seed.values() for run in row]
  sid = sum(run["fit_s"] for run in runs)
  model = sum((run.get("retrieval") or {}).get("train_wall_s") or 0.0 for run in runs)
  return {"train_wall_s": round(sid + model, 1), "sid_fit_s": round(sid, 1),
          "retrieval_train_s": round(model, 1)}


def merge_records(records: list[dict], paths: list[str]) -> dict:
  """Records of the same settings and disjoint seeds -> one record: the per-seed runs of every
  row pooled and summarised again. Raises ValueError naming the record that does not fit."""
  from lrm.core.artifacts import RECORD_FIELDS, benchmark_record
  first = records[0]
  per_seed: dict[str, list[dict]] = {}
  # The fine-tuned encoder only matters to the *_ft rows: it must agree among the records that
  # have such rows (a record without them may have been run without --finetuned).
  finetuned, ft_path = None, None
  for record, path in zip(records, paths):
    if record.get("benchmark") != "plum_ablation":
      raise ValueError(f"{path}: not a plum_ablation record")
    for key in MERGE_KEYS:
      if record.get(key) != first.get(key):
        raise ValueError(f"{path}: {key} {record.get(key)!r} differs from {paths[0]}'s "
                         f"{first.get(key)!r}")
    if any(row.endswith("_ft") for row in record["per_seed"]):
      if ft_path is not None and record.get("finetuned") != finetuned:
        raise ValueError(f"{path}: finetuned {record.get('finetuned')!r} differs from "
                         f"{ft_path}'s {finetuned!r}")
      finetuned, ft_path = record.get("finetuned"), path
    for row, runs in record["per_seed"].items():
      have = {r["seed"] for r in per_seed.get(row, [])}
      for run in runs:
        if run["seed"] in have:
          raise ValueError(f"{path}: row {row!r} seed {run['seed']} is already in an earlier "
                           "record")
        per_seed.setdefault(row, []).append(run)
  rows = [r for r in ROWS if r in per_seed]
  per_seed = {r: sorted(per_seed[r], key=lambda run: run["seed"]) for r in rows}
  seeds = sorted({run["seed"] for runs in per_seed.values() for run in runs})
  summary = _summarise(per_seed)
  own = ("per_seed", "summary", "rows", "seeds", "finetuned", "merged_from")
  # commit and command: the merging process's; device: the first record's, as before.
  return benchmark_record(
      "plum_ablation", dataset=first["dataset"], split=first.get("split"),
      model="tiger" if first.get("retrieval_steps") else None,
      variant=rows[0] if len(rows) == 1 else None, metrics=summary, train=_train(per_seed),
      wall_s=sum(r["wall_s"] for r in records), seed=seeds, device=first.get("device"),
      **{k: v for k, v in first.items() if k not in RECORD_FIELDS + own},
      rows=rows, seeds=seeds, per_seed=per_seed, summary=summary, finetuned=finetuned,
      merged_from=[{"path": str(p), "commit": r.get("commit"), "command": r.get("command"),
                    "wall_s": r.get("wall_s"), "device": r.get("device")}
                   for r, p in zip(records, paths)])


def _merge(paths: list[str]) -> None:
  from lrm.core.artifacts import read_json, write_benchmark_result
  try:
    record = merge_records([read_json(pathlib.Path(p)) for p in paths], paths)
  except ValueError as e:
    raise app.UsageError(f"--merge: {e}") from None
  _print_summary(record["summary"])
  write_benchmark_result(_OUT.value, f"plum_ablation_{record['dataset']}_merged", record)


TABLE_METRICS = ("uniqueness", "heldout_share@1", "recall@5", "ndcg@5", "recall@10", "ndcg@10",
                 "recall@20", "rare_recall@10")


def summary_table(summary: dict) -> tuple[list[str], list[list[str]]]:
  """(header, rows) of the README's ablation table: each cell "mean ± spread" over the seeds,
  with "*" where the row differs from v1 by more than the spread (`_summarise`'s vs_v1)."""
  def cell(m):
    if m is None:
      return "-"
    flag = "*" if m.get("vs_v1") not in (None, "none") else ""
    return f"{m['mean']:.4f} ± {m['spread']:.4f}{flag}"
  header = ["row", "seeds", *TABLE_METRICS]
  rows = []
  for row, metrics in summary.items():
    n = max((m["n"] for m in metrics.values()), default=0)
    rows.append([row, str(n), *(cell(metrics.get(k)) for k in TABLE_METRICS)])
  return header, rows


def _print_summary(summary: dict) -> None:
  from lrm.core.report import print_table
  print_table(*summary_table(summary))


def main(argv):
  del argv
  if _MERGE.value:
    _merge(_MERGE.value)
    return
  import jax

  from lrm.core.artifacts import (benchmark_record, device_description, git_commit,
                                  write_benchmark_result)
  from lrm.core.config import load_config
  from lrm.core.errors import ConfigError
  from lrm.data import read_dataset
  from lrm.data.splits import leave_one_out
  from lrm.encoders import load_encoder
  from lrm.jobs import sid as stage

  start = time.perf_counter()
  git_commit()     # the commit of the code that runs (read once)
  rows = [r for r in _ROWS.value if r]
  for r in rows:
    if r not in ROWS:
      raise ConfigError("rows", f"unknown row {r!r}; known: {ROWS}")
  if any(r.endswith("_ft") for r in rows) and not _FINETUNED.value:
    print("no --finetuned encoder: skipping rows", [r for r in rows if r.endswith("_ft")])
    rows = [r for r in rows if not r.endswith("_ft")]
  name = f"amazon_{_DATASET.value}"
  data_dir = pathlib.Path(_DATA_ROOT.value) / name
  workdir = pathlib.Path(_WORKDIR.value) / name
  dataset = read_dataset(data_dir)
  catalog = dataset.catalog
  split = leave_one_out(dataset.sequences)
  train_rows = stage.cooccurrence_rows(stage.SIDSpec(sid_v2={"pair_window": _WINDOW.value}),
                                       catalog.item_ids, split.train)
  held_out = heldout_pairs(split.valid, catalog, _WINDOW.value, train_rows)

  encoders = {"": load_encoder(_ENCODER.value)}
  if _FINETUNED.value:
    from lrm.encoders.contrastive import load_finetuned
    encoders["ft_"] = load_finetuned(_FINETUNED.value)
  modalities = {}
  for prefix, encoder in encoders.items():
    modalities.update(_input_embeddings(workdir, catalog, encoder, prefix, _DATASET.value))
  categories = catalog.leaf_category("categories")

  config = None
  if _RETRIEVAL_STEPS.value > 0:
    config = load_config(REPO / "configs" / f"{_DATASET.value}.py", _CONFIG_ARG.value or None)
    config.data.path = str(data_dir)
    config.train.num_steps = _RETRIEVAL_STEPS.value
    config.train.eval_every = _RETRIEVAL_STEPS.value
    config.train.checkpoint_every = _RETRIEVAL_STEPS.value
    config.train.warmup_steps = min(int(config.train.warmup_steps), _RETRIEVAL_STEPS.value // 10)

  per_seed: dict[str, list[dict]] = {}
  for row in rows:
    for seed in (int(s) for s in _SEEDS.value):
      spec, x = _row_spec(row, seed, modalities)
      result = stage.fit_sids(x, spec, item_ids=catalog.item_ids, categories=categories,
                              cooccurrence=train_rows if spec.method == "sid_v2" else None,
                              show_progress=False)
      codes = result.table.codes
      run = {"seed": seed, "fit_s": round(result.fit_s, 2),
             "uniqueness": len(np.unique(codes, axis=0)) / len(codes),
             "codebook_sizes": list(spec.sizes),
             **behaviour_metrics(codes, held_out, spec.sizes, seed),
             "quality": stage.summary(result.report)}
      sid_dir = workdir / row / f"seed{seed}" / "sid"
      stage.write_sids(sid_dir, result, spec)
      if config is not None:
        config.seed = seed
        run["retrieval"] = _retrieval(config, workdir / row / f"seed{seed}", dataset, sid_dir,
                                      split)
      per_seed.setdefault(row, []).append(run)
      print(row, seed, {k: v for k, v in run.items() if k in (
          "uniqueness", "fit_s", "heldout_share@1", "heldout_share@2", "chance_share@1",
          "perplexity")},
            run.get("retrieval", {}).get("test", {}).get("recall@10"), flush=True)

  slug = device_description()[1]
  summary = _summarise(per_seed)
  record = benchmark_record(
      "plum_ablation", dataset=name, split="test",
      model="tiger" if _RETRIEVAL_STEPS.value > 0 else None,
      variant=rows[0] if len(rows) == 1 else None, metrics=summary, train=_train(per_seed),
      wall_s=time.perf_counter() - start, seed=[int(s) for s in _SEEDS.value],
      rows=rows, seeds=[int(s) for s in _SEEDS.value],
      sid_steps=_SID_STEPS.value, sid_batch=_SID_BATCH.value,
      multires_sizes=list(MULTIRES), uniform_sizes=list(UNIFORM),
      cooccurrence_weight=_COOC_WEIGHT.value, pair_window=_WINDOW.value,
      cooccurrence_pairs=int(len(train_rows)), heldout_pairs=int(len(held_out)),
      cooccurrence_similarity=_COOC_SIMILARITY.value, cooccurrence_space=_COOC_SPACE.value,
      retrieval_steps=_RETRIEVAL_STEPS.value, config_arg=_CONFIG_ARG.value,
      finetuned=_FINETUNED.value,
      fused_fields=list(FUSED_FIELDS),
      modalities=[list(fields) for _, fields in MODALITIES[_DATASET.value]],
      per_seed=per_seed, summary=summary,
      jax_version=jax.__version__, jax_devices=len(jax.devices()),
      reference={"plum": PLUM_REFERENCE})
  write_benchmark_result(_OUT.value, f"plum_ablation_{name}_{slug}", record)


if __name__ == "__main__":
  app.run(main)
