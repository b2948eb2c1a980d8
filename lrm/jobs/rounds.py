"""Continuous pretraining rounds: dated snapshots of a growing catalog, one training round each.

A deployed recommender is retrained as items and interactions arrive. Each round here takes
the snapshot of catalog + interactions at its time and:

1. refreshes the SIDs: RQ-KMeans warm-started from the previous round's codebooks, refit on
   every item (`rounds.refit = "warm"`), or the previous codebooks kept and only new items
   assigned (`"assign"`); the churn of old items' codes is reported either way, and old
   items' collision codes are kept where their semantic codes are;
2. extends the vocabulary (the collision level grows with the catalog; its rows are appended);
3. resumes the model and its optimizer from the previous round's latest checkpoint, grafted
   onto the grown tables (`lrm.train.warm_start`), and trains `rounds.steps` more steps on
   the snapshot's training part (leave-one-out), a replay of old and new interactions alike;
4. evaluates on the snapshot's test users, overall and on the users whose test item is new in
   this round (freshness: are new items retrievable?), beside popularity; writes
   `run_dir/rounds/round_<r>/report.json` and a table over rounds in
   `run_dir/rounds/report.json`.

Each round's directory holds an ordinary `sid/` artifact and `retrieval/<model>/` training
run, so a round resumes like any training and can be evaluated with the usual tools. Content
embeddings come from the embed stage run once over the latest catalog (an item's content does
not change between rounds).
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from lrm.core import artifacts
from lrm.core.errors import ConfigError
from lrm.core.report import print_table
from lrm.data import read_dataset
from lrm.data.synthetic import snapshots
from lrm.eval.metrics import most_popular_ranking, retrieval_metrics
from lrm.eval.report import read_predictions
from lrm.jobs import retrieval, sid as sid_lib, stages
from lrm.jobs.common import at_workdir, saved_results
from lrm.jobs.sid import SIDResult, SIDSpec, write_sids
from lrm.parallel.mesh import mesh_from_config
from lrm.sid import quality as quality_lib, rq_kmeans
from lrm.sid.table import SIDTable, stability_report, with_collision_level
from lrm.train.optimizer import optimizer_from_config
from lrm.train.trainer import LoopSpec
from lrm.train.warm_start import graft_into

REFIT_MODES = ("warm", "assign")


@dataclasses.dataclass(frozen=True)
class RoundsSpec:
  """The `rounds` config section."""
  fractions: tuple[float, ...] = (0.6, 0.8, 1.0)   # snapshot times as fractions of the world
  steps: tuple[int, ...] = (600, 300, 300)          # training steps per round
  refit: str = "warm"                               # warm | assign
  model: str = "tiger"

  @classmethod
  def from_config(cls, section) -> "RoundsSpec":
    spec = cls(fractions=tuple(float(f) for f in section.fractions),
               steps=tuple(int(s) for s in section.steps), refit=str(section.refit),
               model=str(section.get("model", "tiger")))
    if not spec.fractions or any(b <= a for a, b in zip(spec.fractions, spec.fractions[1:])):
      raise ConfigError("rounds.fractions", f"must be increasing, got {spec.fractions}")
    if any(not 0.0 < f <= 1.0 + 1e-9 for f in spec.fractions):
      raise ConfigError("rounds.fractions", f"must lie in (0, 1], got {spec.fractions}")
    if len(spec.steps) != len(spec.fractions):
      raise ConfigError("rounds.steps", f"needs one count per round ({len(spec.fractions)}), "
                        f"got {spec.steps}")
    if any(s < 1 for s in spec.steps):
      raise ConfigError("rounds.steps", f"must be >= 1, got {spec.steps}")
    if spec.refit not in REFIT_MODES:
      raise ConfigError("rounds.refit", f"'{spec.refit}' is not one of {REFIT_MODES}")
    if spec.model not in retrieval.GENERATIVE:
      raise ConfigError("rounds.model", f"'{spec.model}' is not one of "
                        f"{retrieval.GENERATIVE} (rounds need a SID model)")
    return spec


def snapshot_times(dataset, fractions) -> list[float]:
  """Absolute times for fractions of the span of the dataset's events."""
  t = np.asarray(dataset.sequences.timestamps, np.float64)
  lo, hi = float(t.min()), float(t.max())
  # The last round at fraction 1 includes the last event.
  return [lo + f * (hi - lo) + (1.0 if f >= 1.0 else 0.0) for f in fractions]


def refresh_sids(embeddings: np.ndarray, item_ids: np.ndarray, spec, mode: str,
                 previous: dict | None, *, seed: int):
  """This round's SIDs (an `lrm.jobs.sid.SIDResult`) and the churn of old items' codes.

  `previous` holds the last round's {"tokenizer", "table"}; None in the first round.
  """
  x = np.asarray(embeddings, np.float32)
  start = time.perf_counter()
  key = jax.random.key(seed)
  if previous is None or mode == "warm":
    warm = None if previous is None else list(previous["tokenizer"].codebooks)
    tokenizer = rq_kmeans.rq_kmeans_fit(x, spec.sizes, key=key, iters=spec.iters,
                                        metric=spec.metric, init_codebooks=warm)
    codes = np.asarray(tokenizer.codes)
  else:
    tokenizer = previous["tokenizer"]
    codes = rq_kmeans.rq_assign(tokenizer, x)
  fit_s = time.perf_counter() - start
  table = SIDTable(item_ids=np.asarray(item_ids), codes=codes, codebook_sizes=spec.sizes)
  churn, order = None, None
  if previous is not None:
    old = previous["table"]
    rows = table.row_of(old.item_ids)          # old items' rows in this catalog
    churn = stability_report(old.codes, table.codes[rows])
    # Number collisions old items first, in their old collision order, then new items, so
    # an old item whose semantic code stayed keeps its whole SID.
    is_new = np.ones(table.num_items, bool)
    is_new[rows] = False
    old_order = rows[np.argsort(old.collision, kind="stable")] if old.collision is not None \
        else rows
    order = np.concatenate([old_order, np.flatnonzero(is_new)])
  if spec.collision_level:
    table = with_collision_level(table, order)
  if previous is not None and churn is not None:
    old = previous["table"]
    rows = table.row_of(old.item_ids)
    churn["full_sid_changed"] = float(np.mean(np.any(
        table.full_codes[rows] != old.full_codes, axis=1))) if len(rows) else 0.0
  target = x if spec.metric == "l2" else x / np.maximum(
      np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
  report = quality_lib.quality_report(
      codes, spec.sizes, embeddings=target,
      reconstruction=rq_kmeans.rq_reconstruct(tokenizer, codes),
      prefix_levels=tuple(range(1, len(spec.sizes) + 1)), seed=spec.seed)
  report.update(method="rq_kmeans", fit_s=round(fit_s, 3), refit=mode if previous else "fit",
                collision_level_size=int(table.collision_size))
  return SIDResult(table=table, tokenizer=tokenizer, report=report, fit_s=fit_s), churn


def _new_item_metrics(ranked: np.ndarray, targets: np.ndarray, new_items: np.ndarray,
                      ks) -> dict[str, Any]:
  """Recall/NDCG@K on the users whose target is new this round, and new-item coverage."""
  is_new = np.isin(targets, new_items)
  out: dict[str, Any] = {"users": int(is_new.sum())}
  if is_new.any():
    out.update(retrieval_metrics(ranked[is_new], targets[is_new], ks))
  k = max(ks)
  shown = np.unique(ranked[:, :k])
  out[f"new_items_in_some_top{k}"] = float(np.isin(new_items, shown).mean()) \
      if len(new_items) else 0.0
  return out


def run(config, workdir=None) -> dict[str, Any]:
  """Runs (or resumes) every round in `workdir` (default: config.run_dir); returns the
  per-round reports."""
  spec = RoundsSpec.from_config(at_workdir(config, workdir).rounds)
  retrieval.validate(config)
  _check_round_budgets(config, spec)
  run_dir = pathlib.Path(config.run_dir)
  run_dir.mkdir(parents=True, exist_ok=True)
  data_dir = stages.data_stage(config, run_dir)
  full = read_dataset(data_dir)
  embeddings, _ = stages.embed_stage(config, run_dir, data_dir, full)
  sid_spec = SIDSpec.from_config(config.sid)
  if sid_spec.method != "rq_kmeans":
    raise ConfigError("sid.method", f"rounds refresh RQ-KMeans codes; got '{sid_spec.method}'")
  mesh = mesh_from_config(config.mesh)
  ks = tuple(int(k) for k in config.eval.ks)
  name = spec.model
  reports, previous, prev_round = [], None, None
  for r, (time_r, steps) in enumerate(zip(snapshot_times(full, spec.fractions), spec.steps)):
    start = time.perf_counter()
    round_dir = run_dir / "rounds" / f"round_{r}"
    dataset = snapshots(full, [time_r])[0]
    rows = full.catalog.rows(dataset.catalog.item_ids)
    # SIDs: reuse this round's artifact when it is complete for the same inputs.
    sid_dir = round_dir / "sid"
    sid_inputs = {"embed": artifacts.artifact_id(run_dir / "embed"),
                  "previous": None if prev_round is None else
                  artifacts.artifact_id(prev_round["dir"] / "sid"),
                  "time": time_r, "refit": spec.refit}
    # Recomputed on resume too (deterministic, seconds): the churn and the next round's warm
    # start need it. The artifact is only rewritten when stale, since the round's training
    # run is bound to its id.
    result, churn = refresh_sids(embeddings[rows], dataset.catalog.item_ids, sid_spec,
                                 spec.refit, previous, seed=int(sid_spec.seed) + r)
    if not sid_lib.is_complete(sid_dir, sid_spec, sid_inputs):
      if jax.process_index() == 0:
        write_sids(sid_dir, result, sid_spec, inputs=sid_inputs)
      if jax.process_count() > 1:
        multihost_utils.sync_global_devices(f"lrm: round {r} SIDs written")
    prep = retrieval.prepare(config, dataset, sid_dir)

    warm_start = None
    if prev_round is not None:
      def warm_start(model, optimizer, prev=prev_round):
        old_model, old_opt = retrieval.load_training_state(config, prev["dir"], prev["prep"],
                                                           name, step="latest")
        summary = graft_into(model, optimizer, old_model, old_opt)
        logging.info("rounds: warm start from %s (%d leaves, grown: %s)", prev["dir"],
                     summary["leaves"], summary["grown"])
    round_config = config.copy_and_resolve_references()
    with round_config.unlocked():
      round_config.train.num_steps = int(steps)
      round_config.run_dir = str(round_dir)
    train_summary = retrieval.train_model(round_config, round_dir, prep, name, mesh=mesh,
                                          warm_start=warm_start)
    record = retrieval.evaluate_model(round_config, round_dir, prep, name)
    new_items = (np.setdiff1d(dataset.catalog.item_ids, prev_round["prep"].dataset.catalog.item_ids)
                 if prev_round is not None else np.zeros(0, np.int64))
    ranked = _read_ranked(retrieval.model_dir(round_dir, name) / "predictions_test.jsonl")
    targets = np.asarray(prep.split.test.targets)
    pop = retrieval.popularity(prep, ks)
    pop_ranked = _popularity_ranked(prep, len(targets), max(ks))
    report = {
        "round": r, "time": time_r, "fraction": spec.fractions[r],
        "items": int(len(dataset.catalog)), "new_items": int(len(new_items)),
        "users": int(len(dataset.sequences)), "events": int(dataset.sequences.lengths.sum()),
        "vocab_size": int(prep.vocab.size),
        "collision_level_size": int(result.table.collision_size),
        "churn": churn, "train": train_summary, "test": record["test"],
        "popularity_test": pop.get("test"),
        "new_item_test": _new_item_metrics(ranked, targets, new_items, ks),
        "new_item_test_popularity": _new_item_metrics(pop_ranked, targets, new_items, ks),
        "wall_s": round(time.perf_counter() - start, 2),
    }
    if jax.process_index() == 0:
      artifacts.atomic_write_json(round_dir / "report.json", report)
    reports.append(report)
    previous = {"tokenizer": result.tokenizer, "table": result.table}
    prev_round = {"dir": round_dir, "prep": prep}
  _print_rounds(reports, ks)
  if jax.process_index() == 0:
    artifacts.atomic_write_json(run_dir / "rounds" / "report.json", {"rounds": reports})
  return {"rounds": reports}


def evaluate(config, workdir=None) -> dict[str, Any]:
  """Each round is evaluated as it ends: prints the reports `run` wrote."""
  run_dir = pathlib.Path(at_workdir(config, workdir).run_dir)
  reports = saved_results(run_dir / "rounds" / "report.json", "lrm rounds")
  _print_rounds(reports["rounds"], tuple(int(k) for k in config.eval.ks))
  return reports


def _check_round_budgets(config, spec: RoundsSpec) -> None:
  """Each round's step count must suit the train section (warmup, evaluation period)."""
  for r, steps in enumerate(spec.steps):
    section = config.train.copy_and_resolve_references()
    with section.unlocked():
      section.num_steps = int(steps)
    try:
      LoopSpec.from_config(section)
      optimizer_from_config(section)
    except ConfigError as e:
      raise ConfigError("rounds.steps", f"round {r} ({steps} steps): {e}") from e


def _read_ranked(path: pathlib.Path) -> np.ndarray:
  _, items = read_predictions(path)
  return np.asarray(items)


def _popularity_ranked(prep, n: int, k: int) -> np.ndarray:
  """The k most frequent training items, the same list for every user."""
  top = most_popular_ranking(prep.split.train, k)
  return np.broadcast_to(top, (n, len(top)))


def _print_rounds(reports, ks) -> None:
  k = 10 if 10 in ks else max(ks)
  rows = []
  for rep in reports:
    churn = rep["churn"] or {}
    new = rep["new_item_test"]
    pop_new = rep["new_item_test_popularity"]
    rows.append([rep["round"], rep["items"], rep["new_items"],
                 "-" if not churn else f"{churn['changed']:.3f}",
                 "-" if not churn else f"{churn['full_sid_changed']:.3f}",
                 rep["train"]["steps"], f"{rep['test'][f'recall@{k}']:.4f}",
                 new["users"], f"{new.get(f'recall@{k}', 0.0):.4f}",
                 f"{pop_new.get(f'recall@{k}', 0.0):.4f}",
                 f"{new[f'new_items_in_some_top{max(ks)}']:.3f}"])
  print_table(["round", "items", "new", "churn (sem.)", "churn (full SID)", "steps",
               f"test R@{k}", "new-item users", f"new-item R@{k}", f"popularity new R@{k}",
               f"new items in a top-{max(ks)}"], rows)
