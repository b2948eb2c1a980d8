"""ID-free ranking on the synthetic world's cold-start split (issue 8's targets), on CPU.

  python benchmarks/ranking.py                    # ~20-30 min per seed on 2 CPU cores
  python benchmarks/ranking.py --train_steps=300        # a quick look
  python benchmarks/ranking.py --seeds=0,1,2             # targets checked on the seed means
  python benchmarks/ranking.py --merge=a.json,b.json     # single-seed records -> one record
  python benchmarks/ranking.py --dataset=movielens --train_steps=1000   # user-side ablation
  python benchmarks/ranking.py --dataset=beauty --ablation --variants=id,late
  python benchmarks/ranking.py --dataset=beauty --variants=late --seeds=0,1,2 \
      --sid_level_dropout=0,0.2,0.8 \
      --history_level_dropout=0,0.2,0.5              # a subset of the rankers, other settings
  python benchmarks/ranking.py --dataset=movielens --long_history=256 --variants=late \
      --train_steps=600                              # long-history user encoder comparison

Measures: ID / early-fusion / late-fusion rankers on warm and cold candidates (click AUC, GAUC);
staged warmup from an ID-carrying checkpoint (loss and AUC through the transition); the
two-tower with and without k-means cluster IDs (cold coverage, cold Recall@K); static vs
static + dynamic SIDs on the live rooms' slice-dependent follow signal. Writes one JSON under
benchmarks/results/ with device, commit and command.

`--variants` naming fewer than all five rankers trains only those (no warmup, two-tower or
room measurements) and writes `ranking_variants_<dataset>_<time>.json`: warm / cold metrics per
seed and variant, and the late ranker's share of its lift kept on cold items.

`--ablation` (always on for MovieLens 100k) measures issue 8's user-side tokens instead: each
variant trained on the same examples without, then with, user-attribute tokens (where the
dataset has them: MovieLens' age / gender / occupation / zip area) and interaction-count
tokens; click AUC / GAUC on warm and cold candidates and, on MovieLens, rating RMSE (on the
0..1 scale the ranker fits, and x4 on the 1..5 stars). The warmup, two-tower and room
measurements are skipped in this mode.

`--long_history=T` measures the long-term user token instead (lrm/models/ranker.py): each
variant trained on the same examples (each carrying its user's last T visible events) with
the short history only, then + the compressed long history, then + the full-attention long
history (`--long_mixers`), without the user-side tokens; click AUC / GAUC warm and cold,
rating RMSE, and the seconds per training step (jitted, after two warmup steps, the mean of
`--time_steps`).
"""

from __future__ import annotations

import hashlib
import json
import pathlib
import re
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags
from flax import nnx

from lrm.core import artifacts
from lrm.data.synthetic import WorldConfig, make_world
from lrm.models import two_tower as tt
from lrm.models.layers import count_params
from lrm.models.ranker import Ranker, ranker_arrays, ranker_loss
from lrm.jobs.ranking import (evaluate_ranker, fit_codes, item_content, prepare, ranker_config,
                              ranker_train_section, ranking_defaults, run_variants,
                              train_ranker, warmup_train)
from lrm.jobs.replay import train_two_tower
from lrm.sid.rq_kmeans import cluster_ids_fit, rq_assign
from lrm.sid.table import majority_vote
from lrm.tasks.ranking import room_examples
from lrm.train.optimizer import optimizer_from_config
from lrm.train.trainer import make_train_step

DATA = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data"  # beside the checkout

_STEPS = flags.DEFINE_integer("train_steps", 1500, "training steps per ranker")
_SEED = flags.DEFINE_integer("seed", 0, "seed")
_SEEDS = flags.DEFINE_list("seeds", [], "several seeds (the full benchmark): one record with "
                          "each seed's metrics and checks, their means and [min, max], and "
                          "the targets checked on the means")
_MERGE = flags.DEFINE_list("merge", [], "instead of training: result JSONs of single-seed "
                          "full-benchmark runs (same dataset and steps, distinct seeds), "
                          "written as one multi-seed record as --seeds would")
_DATASET = flags.DEFINE_enum("dataset", "synthetic", ["synthetic", "beauty", "movielens"],
                             "synthetic world (every measurement), Amazon Beauty (no rooms) or "
                             "MovieLens 100k (the user-side ablation)")
_BEAUTY = flags.DEFINE_string("beauty_path", str(DATA / "amazon_beauty"),
                              "Beauty in the standard layout")
_MOVIELENS = flags.DEFINE_string("movielens_path", str(DATA / "movielens_100k"),
                                 "MovieLens 100k as RecBole atomic files (.inter/.item/.user)")
_ABLATION = flags.DEFINE_bool("ablation", False,
                              "variants without and with the user-side tokens only (module "
                              "docstring); always on for movielens")
_VARIANTS = flags.DEFINE_list("variants", [], "rankers to train; default: all (synthetic, "
                              "beauty), id,replace,late (movielens)")
_USER_FEATURES = flags.DEFINE_bool("user_features", False,
                                   "user-attribute tokens in the main (non-ablation) run")
_COUNTS = flags.DEFINE_bool("interaction_counts", False,
                            "interaction-count tokens in the main (non-ablation) run")
_MAX_TRAIN = flags.DEFINE_integer("max_train_events", 0,
                                  "training positives kept (0 = the dataset's default)")
_LONG = flags.DEFINE_integer("long_history", 0, "T > 0: the long-history comparison (module "
                             "docstring) with the last T events; 0 = off")
_LONG_MIXERS = flags.DEFINE_list("long_mixers", ["none", "compress", "full"],
                                 "long-history runs: none (short history only), compress, full")
_EVAL_NEG = flags.DEFINE_integer("eval_negatives", 0, "negatives per evaluation positive "
                                 "(0 = the dataset's default)")
_TIME_STEPS = flags.DEFINE_integer("time_steps", 20, "steps timed per ranker (long history)")
_LEVEL_DROPOUT = flags.DEFINE_list("sid_level_dropout", [], "per-level SID dropout rates of "
                                   "the SID rankers (e.g. 0,0.2,0.8); default: the section's")
_HISTORY_DROPOUT = flags.DEFINE_list("history_level_dropout", [], "the same for history "
                                     "items; default: the section's (None = the candidate's)")
_CONTENT = flags.DEFINE_string("content", "", "an embed-stage folder (embeddings.npy + "
                                "item_ids.npy, e.g. from `lrm embed`) for the items' SIDs; "
                                "default: the dataset's embeddings, else hashed text")
_OUT = flags.DEFINE_string("out", str(pathlib.Path(__file__).parent / "results"),
                           "folder of the results JSON (ranking[_kind]_<dataset>_<time>.json)")


ALL_VARIANTS = ("id", "replace", "concat", "gate", "late")   # the full benchmark's rankers


def _world(seed: int):
  """The synthetic world of one seed (rooms for the dynamic-SID measurement)."""
  return make_world(WorldConfig(seed=seed, num_rooms=300, room_slices=48))


def _lift_kept(r) -> float:
  return _lift_ratio(r["warm"]["click/auc"], r["cold"]["click/auc"])


def _lift_ratio(warm: float, cold: float) -> float:
  """Share of the warm-item AUC lift over chance that cold items keep."""
  return (cold - 0.5) / max(warm - 0.5, 1e-9)


def main(argv):
  del argv
  start = time.perf_counter()
  artifacts.git_commit()     # the commit of the code that runs (read once)
  seed, steps = _SEED.value, _STEPS.value
  if _MERGE.value:
    _merge(_MERGE.value, start)
    return
  section = ranking_defaults()
  section.num_steps = steps
  if _DATASET.value == "movielens":
    dataset = _movielens(section)
    if _LONG.value:
      _long_history(dataset, section, seed, steps, start)
    else:
      _ablation(dataset, section, seed, steps, start)
    return
  if _DATASET.value == "synthetic":
    world = _world(seed)
    dataset = world.dataset
  else:
    from lrm.data.layout import read_dataset
    world, dataset = None, read_dataset(_BEAUTY.value)
    section.codebook_sizes = (32, 32, 32)
    section.max_train_events = 100000
  if _VARIANTS.value:
    section.variants = tuple(_VARIANTS.value)
  if _MAX_TRAIN.value:
    section.max_train_events = _MAX_TRAIN.value
  if _LEVEL_DROPOUT.value:
    section.sid_level_dropout = tuple(float(x) for x in _LEVEL_DROPOUT.value)
  if _HISTORY_DROPOUT.value:
    section.history_level_dropout = tuple(float(x) for x in _HISTORY_DROPOUT.value)
  if _LONG.value:
    _long_history(dataset, section, seed, steps, start)
    return
  if _ABLATION.value:
    _ablation(dataset, section, seed, steps, start)
    return
  section.user_features = _USER_FEATURES.value
  section.interaction_counts = _COUNTS.value
  seeds = [int(x) for x in _SEEDS.value] or [seed]
  if not set(ALL_VARIANTS) <= set(section.variants):
    # A new world per seed on synthetic, as in the full benchmark.
    dataset_of = lambda s: (dataset if world is None or world.config.seed == s else
                            _world(s).dataset)
    _variants_only(dataset_of, section, seeds, steps, start)
    return
  runs = {}
  for s in seeds:
    if world is not None and world.config.seed != s:       # a world per seed
      world = _world(s)
      dataset = world.dataset
    runs[s], split = _full_benchmark(world, dataset, section, s, steps)
  _write_seeds(runs, dataset.name, _split_counts(split), start, steps, **_dropout_fields(section),
               **_content_fields(_CONTENT.value))


def _variants_only(dataset_of, section, seeds: list[int], steps: int, start: float) -> None:
  """A subset of the rankers (no warmup, two-tower or rooms): warm / cold metrics per seed and
  variant, and the late ranker's lift kept where it runs. One record (`ranking_variants`)."""
  runs, split = {}, None
  for s in seeds:
    dataset = dataset_of(s)
    split, codes = prepare(section, dataset, s, content=_content(dataset, s, section, _CONTENT.value))
    v = run_variants(section, split, codes, seed=s)
    runs[str(s)] = {"variants": v, **({"late_lift_kept": _lift_kept(v["late"])} if "late" in v
                                      else {})}
  _write("ranking_variants", dataset.name, _split_counts(split), start, steps, seed=seeds,
         variant=_one(section.variants), metrics=runs, seeds=seeds,
         variants=list(section.variants), **_dropout_fields(section), **_content_fields(_CONTENT.value),
         per_seed=runs)
  for s, r in runs.items():
    print(s, {k: (round(x["warm"]["click/auc"], 4), round(x["cold"]["click/auc"], 4))
              for k, x in r["variants"].items()}, r.get("late_lift_kept"))


def _write_seeds(runs: dict, dataset_name: str, counts: dict, start: float, steps: int,
                 **fields) -> None:
  """One record of the full benchmark: one seed's results, or every seed's and their means."""
  seeds = list(runs)
  if len(seeds) == 1:
    results = runs[seeds[0]]
    _write("ranking", dataset_name, counts, start, steps, seed=seeds, seeds=seeds,
           metrics=results, checks=_checks(results), **fields)
  else:
    # The targets are checked on the seed means; each seed's own checks are kept beside them.
    results = _reduce_tree(list(runs.values()), np.mean)
    results["late_lift_kept"] = _lift_kept(results["variants"]["late"])
    _write("ranking", dataset_name, counts, start, steps, seed=seeds, seeds=seeds,
           metrics=results, checks=_checks(results),
           spread=_reduce_tree(list(runs.values()), lambda x: [min(x), max(x)]),
           per_seed={str(s): {"metrics": r, "checks": _checks(r)} for s, r in runs.items()},
           **fields)
    print(_seed_table(runs))
  v = results["variants"]
  print(json.dumps({"checks": _checks(results),
                    "variants": {k: {"warm": x["warm"]["click/auc"], "cold": x["cold"]["click/auc"]}
                                 for k, x in v.items()},
                    "two_tower": results["two_tower"], "dynamic": results["dynamic"]},
                   indent=1, default=float))


def _merge(paths: list[str], start: float) -> None:
  """Single-seed records of the full benchmark -> one multi-seed record (no training)."""
  try:
    runs, first, sources = merge_seed_records(
        [artifacts.read_json(pathlib.Path(p)) for p in paths], paths)
  except ValueError as e:
    raise SystemExit(f"--merge: {e}") from None
  _write_seeds(runs, first["dataset"], first["counts"], start, first["steps"],
               **{k: first[k] for k in _dropout_fields(ranking_defaults())},
               content_kind=first["content_kind"], merged_from=sources)


def merge_seed_records(records: list[dict], paths: list[str]) -> tuple[dict, dict, list]:
  """The merge rule: single-seed records of one setting -> (metrics by seed, the first record,
  the sources). ValueError names the record and field of anything that may not join: another
  dataset, step count, split, kind of content or SID level dropout rates, or a repeated seed."""
  runs, sources, first = {}, [], None
  defaults = _dropout_fields(ranking_defaults())
  for path, record in zip(paths, records):
    record = dict(record)
    if record.get("benchmark") != "ranking" or "variants" not in record.get("metrics", {}):
      raise ValueError(f"{path}: not a full ranking benchmark record")
    seeds = record.get("seeds") or [int(re.search(r"--seed=(\d+)", record["command"]).group(1))
                                    if "--seed=" in record["command"] else 0]
    if len(seeds) != 1 or seeds[0] in runs:
      raise ValueError(f"{path}: needs one seed not already merged, has {seeds}")
    # Records from before the flags existed ran the section's default rates.
    for key, value in defaults.items():
      record.setdefault(key, value)
    record["content_kind"] = _content_kind(record)
    first = first or record
    for key in ("dataset", "steps", "split", "content_kind", *defaults):
      if record[key] != first[key]:
        raise ValueError(f"{path}: {key} {record[key]!r} differs from {paths[0]}'s "
                         f"{first[key]!r}")
    runs[seeds[0]] = record["metrics"]
    sources.append({"path": str(path), "commit": record["commit"], "command": record["command"],
                    "wall_s": record["wall_s"], "counts": record["counts"],
                    "content": record.get("content")})
  return runs, first, sources


def _content_kind(record) -> str:
  """Which item embeddings a record's SIDs came from: "finetuned" (an encoder fine-tuned on
  this seed's warm co-consumption), "embed" (an encoder that read no interactions) or
  "default" (the dataset's own, else hashed text). Seeds of one merge must agree; the folder
  itself differs per seed when the encoder is fine-tuned per split."""
  if "content" not in record:           # records from before the field: read the command
    return "embed" if "--content=" in record["command"] else "default"
  content = record["content"]
  if content is None:
    return "default"
  pairs = content.get("pairs") or {}
  return "finetuned" if pairs.get("item_to_item") else "embed"


def _dropout_fields(section) -> dict:
  """The SID level dropout rates a record names (history: None = the candidate's)."""
  history = section.get("history_level_dropout")
  return {"sid_level_dropout": list(section.sid_level_dropout),
          "history_level_dropout": None if history is None else list(history)}


def _full_benchmark(world, dataset, section, seed: int, steps: int):
  """Every measurement of the cold-start benchmark at one seed -> (results, split)."""
  given = _content(dataset, seed, section, _CONTENT.value)  # read once: the SIDs and the two-tower
  split, codes = prepare(section, dataset, seed, content=given)
  results = {"variants": run_variants(section, split, codes, seed=seed)}
  v = results["variants"]
  results["late_lift_kept"] = _lift_kept(v["late"])

  # Staged warmup: an ID-carrying late ranker, then the ID retired over `steps` steps.
  tasks = split.train.tasks
  arrays = ranker_arrays(split.train, codes, tasks)
  model = Ranker(ranker_config(section, "late", split.num_items, tasks, candidate_id=True),
                 rngs=nnx.Rngs(seed))
  train_ranker(model, arrays, num_steps=steps, batch_size=256, learning_rate=2e-3, seed=seed,
               desc="ranker late+id (before warmup)")
  evaluate = lambda m: {
      "warm_auc_id": evaluate_ranker(m, split.warm, codes, id_keep=1.0)["click/auc"],
      "warm_auc_no_id": evaluate_ranker(m, split.warm, codes, id_keep=0.0)["click/auc"],
      "cold_auc_no_id": evaluate_ranker(m, split.cold, codes, id_keep=0.0)["click/auc"]}
  before = evaluate(model)
  curve = warmup_train(model, arrays, num_steps=steps, hold_steps=steps // 5,
                       decay_steps=steps // 2, batch_size=256, learning_rate=1e-3, seed=seed,
                       eval_every=max(steps // 6, 1), evaluate_fn=evaluate)
  results["warmup"] = {"before": before, "after": curve[-1], "curve": curve}

  # Two-tower: ID only vs cluster IDs (+ content).
  content = item_content(dataset.catalog) if given is None else given
  clusters = cluster_ids_fit(content, 64, key=jax.random.key(seed), iters=20).codes[:, 0]
  pos = split.train.labels["click"] > 0
  hist, target = split.train.history[pos], split.train.candidate[pos]
  known = np.isin(np.arange(split.num_items), np.r_[target, hist[hist >= 0]])
  wpos, cpos = split.warm.labels["click"] > 0, split.cold.labels["click"] > 0
  towers = {"id_only": dict(use_item_id=True, use_content=False),
            "cluster_ids": dict(num_clusters=64, use_content=False),
            "cluster_ids+content": dict(num_clusters=64),
            "cluster_ids+content+id": dict(num_clusters=64, use_item_id=True)}
  results["two_tower"] = {}
  for name, kw in towers.items():
    cfg = tt.TwoTowerConfig(num_items=split.num_items, content_dim=content.shape[1], **kw)
    m = tt.TwoTower(cfg, content, clusters, id_known=known, rngs=nnx.Rngs(seed))
    loss = train_two_tower(m, hist, target, num_steps=steps, batch_size=256,
                           learning_rate=3e-3, seed=seed, desc=f"two-tower {name}")
    top_warm = tt.top_k(m, split.warm.history[wpos], 20)
    top_cold = tt.top_k(m, split.cold.history[cpos], 20)
    results["two_tower"][name] = {
        "loss": loss, "cold_coverage@20": tt.cold_coverage(top_warm, split.cold_rows),
        "cold_recall@20": tt.recall_at_k(top_cold, split.cold.candidate[cpos]),
        "warm_recall@20": tt.recall_at_k(top_warm, split.warm.candidate[wpos])}

  results["dynamic"] = {}
  if world is not None:
    _dynamic(world, section, split, content, results, steps, seed)
  return results, split


def _checks(results) -> dict:
  """Issue 8's targets, from one seed's results or from the seed means."""
  v = results["variants"]
  best_warm = max(r["warm"]["click/auc"] for r in v.values())
  early_cold = max(v[k]["cold"]["click/auc"] for k in ("replace", "concat", "gate"))
  towers = results["two_tower"]
  checks = {
      "id_cold_auc_near_chance": bool(abs(v["id"]["cold"]["click/auc"] - 0.5) < 0.03),
      "late_keeps_80pct_lift": bool(_lift_kept(v["late"]) >= 0.8),
      "late_ge_early_on_cold": bool(v["late"]["cold"]["click/auc"] >= early_cold),
      "late_within_1pct_of_best_warm": bool(v["late"]["warm"]["click/auc"] >= best_warm - 0.01),
      "cluster_ids_raise_cold_coverage": bool(towers["cluster_ids"]["cold_coverage@20"]
                                              > towers["id_only"]["cold_coverage@20"])}
  # The same late-fusion targets for the staged-warmup model: a late ranker too (no candidate
  # ID once the warmup has retired it), reached from an ID-carrying start as FLUID deploys it.
  after = (results.get("warmup") or {}).get("after")
  if after:
    warm, cold = after["warm_auc_no_id"], after["cold_auc_no_id"]
    checks["warmed_late_keeps_80pct_lift"] = bool(_lift_ratio(warm, cold) >= 0.8)
    checks["warmed_late_ge_early_on_cold"] = bool(cold >= early_cold)
    checks["warmed_late_within_1pct_of_best_warm"] = bool(warm >= best_warm - 0.01)
  d = results.get("dynamic") or {}
  if d:
    checks["dynamic_sids_raise_follow_auc"] = bool(
        d["static+dynamic"]["follow/auc"] > d["static"]["follow/auc"])
    checks["dynamic_sids_raise_follow_auc/own_tables"] = bool(
        d["static+dynamic/own_tables"]["follow/auc"] > d["static/own_tables"]["follow/auc"])
  return checks


def _reduce_tree(trees: list, fn):
  """fn over the seeds of every number the trees share (lists such as curves are skipped)."""
  first = trees[0]
  if isinstance(first, dict):
    out = {k: _reduce_tree([t[k] for t in trees], fn) for k in first
           if all(isinstance(t, dict) and k in t for t in trees)}
    return {k: x for k, x in out.items() if x is not None}
  if all(isinstance(t, (int, float, np.number)) and not isinstance(t, bool) for t in trees):
    out = fn([float(t) for t in trees])
    return float(out) if np.ndim(out) == 0 else [float(x) for x in out]
  return None


def _seed_table(runs: dict) -> str:
  """Click AUC warm / cold per variant and seed, then the mean."""
  seeds = list(runs)
  names = list(runs[seeds[0]]["variants"])
  auc = lambda r, k, part: r["variants"][k][part]["click/auc"]
  lines = ["| variant | " + " | ".join(f"seed {s}" for s in seeds) + " | mean |",
           "|---" * (len(seeds) + 2) + "|"]
  for k in names:
    cells = [f"{auc(r, k, 'warm'):.3f} / {auc(r, k, 'cold'):.3f}" for r in runs.values()]
    mw = np.mean([auc(r, k, "warm") for r in runs.values()])
    mc = np.mean([auc(r, k, "cold") for r in runs.values()])
    lines.append(f"| {k} | " + " | ".join(cells) + f" | {mw:.3f} / {mc:.3f} |")
  return "\n".join(lines)


def _split_counts(split) -> dict:
  return {"train": len(split.train), "warm": len(split.warm), "cold": len(split.cold),
          "cold_items": len(split.cold_rows)}


def _one(variants) -> str | None:
  """The ranker variant of a run that trains one (None: several)."""
  return variants[0] if len(variants) == 1 else None


def _write(benchmark: str, dataset_name: str, counts: dict, start: float, steps: int, *,
           seed, metrics, variant: str | None = None, **fields) -> None:
  """One run's JSON under --out: `fields` plus what every record of this script carries."""
  # The rankers' training time is not measured apart from their evaluation (`wall_s` holds both).
  record = artifacts.benchmark_record(
      benchmark, dataset=dataset_name, split="cold_start_items_10pct", model="ranker",
      variant=variant, metrics=metrics, train={"train_wall_s": None},
      wall_s=time.perf_counter() - start, seed=seed, **fields, steps=steps, counts=counts)
  artifacts.write_benchmark_result(_OUT.value, f"{benchmark}_{dataset_name}", record)


def _movielens(section):
  """MovieLens 100k from its RecBole files, and the section configs/rank_movielens.py uses."""
  from lrm.data.movielens import read_recbole_atomic
  from lrm.core.config import load_config
  ml = load_config(pathlib.Path(__file__).resolve().parents[1] / "configs" / "rank_movielens.py",
                   None).ranking
  for key in ("max_history", "codebook_sizes", "text_fields", "max_train_events"):
    section[key] = ml[key]
  section.variants = tuple(_VARIANTS.value or ("id", "replace", "late"))
  if _MAX_TRAIN.value:
    section.max_train_events = _MAX_TRAIN.value
  return read_recbole_atomic(_MOVIELENS.value)


def _content(dataset, seed: int, section, folder: str) -> np.ndarray | None:
  """The embeddings of `folder` (--content) in catalog order (None when it is empty).

  An encoder fine-tuned on co-consumption pairs (lrm finetune) may feed the SIDs only when its
  pairs came from this run's warm training part (`pairs.cold_fraction` and `cold_seed` equal to
  the split's): otherwise the cold items' interactions, or the warm evaluation targets, would
  have shaped their codes.
  """
  if not folder:
    return None
  folder = pathlib.Path(folder)
  emb, ids = np.load(folder / "embeddings.npy"), np.load(folder / "item_ids.npy")
  if not np.array_equal(ids, dataset.catalog.item_ids):
    raise SystemExit(f"{folder}/item_ids.npy is not the catalog's item order")
  pairs = _content_pairs(_content_manifest(folder))
  if pairs and pairs.get("item_to_item"):
    want = (float(section.cold_fraction), int(seed))
    got = (float(pairs.get("cold_fraction", 0.0)), int(pairs.get("cold_seed", 0)))
    if got != want:
      raise SystemExit(
          f"{folder}/manifest.json: embedding_info.pairs has cold_fraction, cold_seed = {got}, "
          f"but this run's cold-start split is {want}: the encoder learned from co-consumption "
          f"outside this split's training part (lrm finetune --config.pairs.cold_fraction="
          f"{want[0]} --config.pairs.cold_seed={want[1]})")
  return emb


def _content_fields(folder: str) -> dict:
  """What a record says of `folder` (--content): the folder, its encoder, the embeddings' sha256 and, for
  a fine-tuned encoder, the pairs it learned from (None without the flag or a manifest).

  The hash because SIDs, and so every AUC, follow the embeddings' exact bits: a re-made embed
  folder need not match the old one bit for bit, and that once moved a seed's warm AUC by .013.
  """
  if not folder:
    return {"content": None}
  folder = pathlib.Path(folder)
  manifest = _content_manifest(folder)
  embeddings = folder / "embeddings.npy"
  digest = (hashlib.sha256(embeddings.read_bytes()).hexdigest() if embeddings.is_file()
            else None)
  return {"content": {"path": str(folder), "encoder": manifest.get("encoder"),
                      "embeddings_sha256": digest, "pairs": _content_pairs(manifest)}}


def _content_manifest(folder: pathlib.Path) -> dict:
  """An embed folder's manifest ({} without one)."""
  path = folder / artifacts.MANIFEST
  return artifacts.read_json(path) if path.exists() else {}


def _content_pairs(manifest: dict) -> dict | None:
  """The co-consumption pairs a fine-tuned encoder learned from (None for a plain encoder)."""
  return manifest.get("embedding_info", {}).get("pairs")


def _ablation(dataset, section, seed, steps, start) -> None:
  """Each variant without, then with, the user-side tokens, on the same examples."""
  on = section.copy_and_resolve_references()
  on.user_features = dataset.users is not None and bool(dataset.users.fields)
  on.interaction_counts = True
  split, codes = prepare(on, dataset, seed)          # examples carry features and counts
  off = section.copy_and_resolve_references()
  off.user_features = off.interaction_counts = False
  runs = {"base": run_variants(off, split, codes, seed=seed),
          "user_side": run_variants(on, split, codes, seed=seed)}
  for run in runs.values():
    for r in run.values():
      for part in ("warm", "cold"):
        if "rating/rmse" in r[part]:
          r[part]["rating/rmse_stars"] = 4.0 * r[part]["rating/rmse"]   # back to 1..5
  baselines = {}
  if "rating" in split.train.labels:   # RMSE (stars) of always predicting the training mean
    known = lambda d: d.labels["rating"][d.masks["rating"] > 0]
    mean = float(known(split.train).mean())
    baselines = {f"{part}/rating/rmse_stars_train_mean": 4.0 * float(
        np.sqrt(np.mean((known(getattr(split, part)) - mean) ** 2))) for part in ("warm", "cold")}
  auc = lambda run, v, part: runs[run][v][part]["click/auc"]
  variants = tuple(section.variants)
  checks = {f"user_side_raises_warm_auc/{v}": auc("user_side", v, "warm") > auc("base", v, "warm")
            for v in variants}
  checks.update({f"user_side_raises_cold_auc/{v}": auc("user_side", v, "cold")
                 > auc("base", v, "cold") for v in variants})
  if "id" in variants:
    checks["id_cold_auc_near_chance"] = abs(auc("base", "id", "cold") - 0.5) < 0.03
    for v in variants:
      if v != "id":
        checks[f"{v}_cold_auc_above_id"] = auc("base", v, "cold") > auc("base", "id", "cold")
  _write("ranking_user_side", dataset.name, _split_counts(split), start, steps, seed=seed,
         variant=_one(variants), metrics={"ablation": runs}, checks=checks, baselines=baselines,
         section=on.to_dict(),
         user_features=(None if split.user_features is None else
                        dict(zip(split.user_features.names, split.user_features.sizes))))
  summary = {run: {v: {f"{part}/{m}": round(float(r[part][m]), 4) for part in ("warm", "cold")
                       for m in ("click/auc", "click/gauc", "rating/rmse_stars") if m in r[part]}
                   for v, r in res.items()} for run, res in runs.items()}
  print(json.dumps({"checks": checks, "baselines": baselines, "ablation": summary}, indent=1))


def _step_seconds(model, arrays, batch_size: int, steps: int, seed: int) -> float:
  """Mean seconds of the trainer's jitted step on the ranker (`train_ranker`'s optimizer),
  after two warmup steps; on a copy, so `model` is untouched."""
  model = nnx.clone(model)
  model.train()
  section = ranker_train_section(num_steps=steps + 2, batch_size=batch_size,
                                 learning_rate=1e-3, seed=seed)
  optimizer = nnx.Optimizer(model, optimizer_from_config(section), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  step = make_train_step(graphdef, ranker_loss, seed)
  rng = np.random.default_rng(seed)
  n = len(arrays["cand_id"])
  batches = [{k: jnp.asarray(v[rows]) for k, v in arrays.items()}
             for rows in rng.integers(0, n, (steps + 2, batch_size))]
  for i, batch in enumerate(batches[:2]):
    state, aux = step(state, batch, np.int32(i))
  jax.block_until_ready(aux)
  begin = time.perf_counter()
  for i, batch in enumerate(batches[2:], start=2):
    state, aux = step(state, batch, np.int32(i))
  jax.block_until_ready(aux)
  return (time.perf_counter() - begin) / steps


def _long_history(dataset, section, seed, steps, start) -> None:
  """Each variant with the short history only, then + the long-term token per mixer."""
  section = section.copy_and_resolve_references()
  section.user_features = section.interaction_counts = False
  section.long_history = _LONG.value
  if _EVAL_NEG.value:
    section.eval_negatives = _EVAL_NEG.value
  split, codes = prepare(section, dataset, seed)       # every example carries its long history
  tasks = split.train.tasks
  arrays = ranker_arrays(split.train, codes, tasks)
  runs = {}
  for mixer in _LONG_MIXERS.value:
    run = section.copy_and_resolve_references()
    if mixer == "none":
      run.long_history = 0
    else:
      run.long_encoder.mixer = mixer
    runs[mixer] = run_variants(run, split, codes, seed=seed)
    for variant, r in runs[mixer].items():
      model = Ranker(ranker_config(run, variant, split.num_items, tasks), rngs=nnx.Rngs(seed),
                     item_codes=codes)
      used = arrays if model.long_encoder is not None else {
          k: v for k, v in arrays.items() if k != "long_hist"}
      r["s_per_step"] = _step_seconds(model, used, int(run.batch_size), _TIME_STEPS.value, seed)
      r["params"] = count_params(model)
      for part in ("warm", "cold"):
        if "rating/rmse" in r[part]:
          r[part]["rating/rmse_stars"] = 4.0 * r[part]["rating/rmse"]
      print(mixer, variant, {k: round(float(r[p][k]), 4) for p in ("warm", "cold")
                             for k in ("click/auc",) if k in r[p]},
            f"{r['s_per_step']:.4f} s/step", flush=True)
  long = split.train.long_history
  events = {"mean": float((long >= 0).sum(1).mean()),
            "full_rows_share": float((long[:, 0] >= 0).mean())}
  _write("ranking_long_history", dataset.name, _split_counts(split), start, steps, seed=seed,
         variant=_one(section.variants), metrics={"long_history": runs},
         section=section.to_dict(), long_history_events=events)
  summary = {mixer: {v: {**{f"{part}/{m}": round(float(r[part][m]), 4)
                            for part in ("warm", "cold")
                            for m in ("click/auc", "click/gauc", "rating/rmse_stars")
                            if m in r[part]}, "s_per_step": round(r["s_per_step"], 4)}
                     for v, r in res.items()} for mixer, res in runs.items()}
  print(json.dumps({"long_history": summary, "long_history_events": events}, indent=1))


def _dynamic(world, section, split, content, results, steps, seed) -> None:
  """Static vs static + dynamic SIDs on the live rooms' slice-dependent signals."""
  # Slice codes from the items' RQ-KMeans (one code space), room code by majority vote.
  t = world.truth
  rq = fit_codes(content, section.codebook_sizes, seed=seed, iters=20)
  r, s = t.room_slice_topics.shape
  slice_emb = np.concatenate([t.room_slice_embeddings[m] for m in sorted(t.room_slice_embeddings)],
                             axis=2).reshape(r * s, -1)
  slice_codes = rq_assign(rq, slice_emb).reshape(r, s, -1)
  room_codes = majority_vote(slice_codes.reshape(r * s, -1), np.repeat(np.arange(r), s),
                             num_parents=r)
  last = world.sequences.offsets[1:] - 1
  rooms = room_examples(world.sequences, world.catalog, leaf_path=t.leaf_path,
                        user_interest=t.event_interest[last], room_slice_topics=t.room_slice_topics,
                        num_examples=100000, seed=seed)
  users = np.unique(rooms.user)
  test_users = np.random.default_rng(seed).choice(users, len(users) // 5, replace=False)
  is_test = np.isin(rooms.user, test_users)
  train_rooms = rooms.take(np.flatnonzero(~is_test))
  test_rooms = rooms.take(np.flatnonzero(is_test))
  sizes = tuple(section.codebook_sizes)
  for name, families, cand, shared in (
      ("static", (("room", sizes),), {"room": room_codes}, True),
      ("static+dynamic", (("room", sizes), ("slice", sizes)),
       {"room": room_codes, "slice": slice_codes}, True),
      ("static/own_tables", (("room", sizes),), {"room": room_codes}, False),
      ("static+dynamic/own_tables", (("room", sizes), ("slice", sizes)),
       {"room": room_codes, "slice": slice_codes}, False)):
    cfg = ranker_config(section, "late", split.num_items, ("follow", "watch_time"),
                        candidate_families=families, shared_tables=shared)
    m = Ranker(cfg, rngs=nnx.Rngs(seed))
    arr = ranker_arrays(train_rooms, rq.codes, cfg.tasks, candidate_codes=cand)
    train_ranker(m, arr, num_steps=steps, batch_size=256, learning_rate=2e-3, seed=seed)
    results["dynamic"][name] = evaluate_ranker(m, test_rooms, rq.codes, candidate_codes=cand)
  results["room_counts"] = {"train": len(train_rooms), "test": len(test_rooms)}


if __name__ == "__main__":
  app.run(main)
