"""The bilingual SID LM on a dataset config: trains and evaluates the main run (the config's
task mix), the next-item-only ablation, and with `--cold_start` the cold-start pair (the mix /
next only, a share of items held out of every interaction); records one JSON.

  python benchmarks/lm_beauty.py --config=configs/lm_beauty.py:cpu             # 2-core CPU
  python benchmarks/lm_beauty.py --config=configs/lm_beauty_history.py:cpu     # history docs
  python benchmarks/lm_beauty.py --config=configs/lm_beauty.py --cold_start=0.05   # GPU

Variants train in run_dir/lm/<variant> and share the vocabulary and the SIDs; a finished
variant is reused. Writes benchmarks/results/lm_<dataset>_<device>_<timestamp>.json with
text->SID acc@1/@10, SID->text title F1, next-item R/N@5/10 (valid, test, cold test), the
popularity baseline and any retrieval model's numbers from the same run directory.
"""

from __future__ import annotations

import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file("config", str(REPO / "configs" / "lm_beauty.py"),
                                          "experiment config", lock_config=False)
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")
_ABLATION = flags.DEFINE_bool("ablation", True, "also train the next-item-only variant")
_COLD = flags.DEFINE_float("cold_start", 0.0, "cold-start item share (0: no cold-start rows)")
_TRAIN = flags.DEFINE_bool("train", True, "train (or resume) each variant; --notrain only "
                           "evaluates the trained ones (e.g. again on more users)")
_ONLY = flags.DEFINE_list("only", [], "run only these variants (main, next_only, cold_all, "
                          "cold_next_only); default: all that the other flags enable")


def variants(config, cold: float):
  """(name, config) of every run: main, next_only, and the cold-start pair.

  The next-only runs keep the `next` task alone whatever the config mixes, so they are the
  same runs (and reused) under every config of a run_dir; the main and cold_all runs take the
  config's mix, under its variant name when it has one (configs/lm_beauty_history.py).
  """
  import copy
  out = []
  own = config.lm.variant
  for name, mixed, frac in (("", True, 0.0), ("next_only", False, 0.0),
                            ("cold_all", True, cold), ("cold_next_only", False, cold)):
    if (name == "next_only" and not _ABLATION.value) or (name.startswith("cold") and not cold):
      continue
    if _ONLY.value and (name or "main") not in _ONLY.value:
      continue
    c = copy.deepcopy(config)
    c.lm.variant = {"": own, "cold_all": f"{own}_cold" if own else name}.get(name, name)
    c.lm.cold_start.fraction = frac
    if not mixed:
      weights = c.lm.tasks.weights
      next_weight = weights.next if weights.next > 0 else 1.0
      for task in list(weights.keys()):
        weights[task] = next_weight if task == "next" else 0.0
      # One task draws its whole pool either way; "share" keeps the run the same (reusable)
      # under configs that mix by passes (configs/lm_beauty_bilingual.py).
      c.lm.tasks.mix_by = "share"
      c.lm.train.best_metric = f"valid/ndcg@{max(c.lm.eval.ks)}"
    out.append((name or "main", c))
  return out


def row(name, result) -> dict:
  ev = result.get("evaluated", {})
  pick = lambda d: {k: v for k, v in (d or {}).items() if k not in ("examples",)}
  return {"variant": name, "weights": result.get("weights"), "train": result.get("train"),
          **{k: pick(ev.get(k)) for k in ("text2sid_heldout", "text2sid_trained",
                                           "sid2text_heldout", "sid2text_trained",
                                           "valid", "test", "cold_test") if k in ev}}


def main(argv):
  del argv
  import jax
  from lrm.core.artifacts import (benchmark_record, device_description, git_commit,
                                  write_benchmark_result)
  from lrm.eval.report import TIGER_REFERENCE
  from lrm.jobs.lm import run
  config = _CONFIG.value
  unknown = set(_ONLY.value) - {"main", "next_only", "cold_all", "cold_next_only"}
  if unknown:
    raise app.UsageError(f"--only: unknown variants {sorted(unknown)}")
  start = time.perf_counter()
  git_commit()     # the commit of the code that runs (read once)
  rows, results, evaluated = [], {}, {}
  for name, c in variants(config, float(_COLD.value)):
    t0 = time.perf_counter()
    results = run(c, train=_TRAIN.value)
    key = f"lm/{c.lm.variant}" if c.lm.variant else "lm"
    rows.append({**row(name, results[key]), "wall_s": round(time.perf_counter() - t0, 1)})
    if name == "main":
      evaluated = results[key].get("evaluated", {})
  dataset = pathlib.Path(config.data.path).name if config.data.source == "layout" \
      else config.data.source
  slug = device_description()[1]
  main_row = rows[0]
  train = {k: v for k, v in (main_row.get("train") or {}).items() if k != "history"}
  record = benchmark_record(
      "lm", dataset=dataset, split="test", model="bilingual_sid_lm",
      variant=main_row["variant"] if main_row["variant"] != "main" else
              (config.lm.variant or "main"),
      metrics={**{k: v for k, v in (main_row.get("test") or {}).items()
                  if k not in ("popularity",)},
               **{f"cold_{k}": v for k, v in (main_row.get("cold_test") or {}).items()
                  if k.startswith(("recall", "ndcg", "users"))},
               "text2sid_acc@1": (main_row.get("text2sid_heldout") or {}).get("text2sid_acc@1"),
               "text2sid_acc@10": (main_row.get("text2sid_heldout") or {}).get(
                   "text2sid_acc@10"),
               "sid2text_f1": (main_row.get("sid2text_heldout") or {}).get("sid2text_f1")},
      train=train or None,     # None: a variant evaluated without a record of its training
      wall_s=time.perf_counter() - start, seed=int(config.seed),
      lm_config=config.lm.to_dict(), sid=results.get("sid"),
      metrics_variant=main_row["variant"], rows=rows,
      retrieval_models=evaluated.get("retrieval_models"), jax_devices=len(jax.devices()),
      reference=TIGER_REFERENCE.get(dataset, {}))
  write_benchmark_result(_OUT.value, f"lm_{dataset}_{slug}", record)


if __name__ == "__main__":
  app.run(main)
