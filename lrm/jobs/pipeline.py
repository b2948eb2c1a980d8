"""The main job (`lrm run`): the mission on one dataset, from one config, each stage reused
when its artifact is complete.

  data -> embed -> sid (lrm/jobs/stages.py)
  -> retrieval: train `model.name` (resumed), rank every validation and test user
     (lrm/jobs/retrieval.py)
  -> lm, when the config has an `lm` section: the bilingual SID LM on the same SIDs
     (lrm/jobs/lm/), with text -> SID and SID -> text printed for a few items
  -> ranking, when it has a `ranking` section: the cold-start rankers, warm against cold AUC
     (lrm/jobs/ranking.py); with `ranking.long_history` > 0 also the late-fusion ranker whose
     long-history token reads through full attention instead of the compression transformer
  -> one summary table.

`lrm run` without --config runs all of it on the synthetic world (`get_config("job=pipeline")`
in lrm/jobs/defaults.py); a config without those sections (configs/beauty.py) runs retrieval
alone. Writes run_dir/config.json (what `lrm evaluate` reads) and run_dir/results.json.
"""

from __future__ import annotations

import pathlib
import time
from typing import Any

import jax
import numpy as np

from lrm.core.config import pipeline_config
from lrm.core.report import print_table
from lrm.data.layout import read_dataset
from lrm.jobs import ranking, retrieval
from lrm.jobs.common import at_workdir
from lrm.jobs.embed import read_embeddings
from lrm.jobs.lm.config import validate as validate_lm
from lrm.jobs.lm.train import lm_stage
from lrm.jobs.stages import layout_dir, write_results


def run(config, workdir=None) -> dict[str, Any]:
  """Every stage, training and evaluation included, in `workdir` (default: config.run_dir)."""
  config = at_workdir(config, workdir)
  # Every section is checked before the first stage writes anything.
  if "lm" in config:
    validate_lm(config.lm)
  if "ranking" in config:
    ranking.ranking_section(config)
  start = time.perf_counter()
  results = retrieval.run_pipeline(pipeline_config(config))
  if jax.process_count() > 1:   # the other systems are single-process jobs: run them alone
    return results
  run_dir = pathlib.Path(config.run_dir)
  dataset = read_dataset(layout_dir(config, run_dir))
  if "lm" in config:
    results["lm"] = lm_stage(config, run_dir, dataset)
    print_linking_examples(results["lm"].get("evaluated", {}))
  if "ranking" in config:
    results["ranking"] = ranking_comparison(config, run_dir, dataset)
  results["wall_s"] = round(time.perf_counter() - start, 1)
  print_summary(results)
  return write_results(run_dir, {k: v for k, v in results.items() if k != "config"})


def evaluate(config, workdir=None, *, models: tuple[str, ...] | None = None) -> dict[str, Any]:
  """Ranks the users again with the trained models (lrm.jobs.retrieval.evaluate)."""
  return retrieval.evaluate(config, workdir, models=models)


def ranking_comparison(config, run_dir: pathlib.Path, dataset) -> dict[str, Any]:
  """The configured rankers on the pipeline's own embeddings, warm and cold; with a long
  history, the late ranker again with full attention over it (same parameters)."""
  section = ranking.ranking_section(config)
  seed = int(config.seed)
  content = read_embeddings(run_dir / "embed", num_items=len(dataset.catalog))
  split, codes = ranking.prepare(section, dataset, seed, content=content)
  out = {"variants": ranking.run_variants(section, split, codes, seed=seed,
                                          workdir=run_dir / "ranking")}
  if int(section.long_history) and "late" in section.variants:
    full = section.copy_and_resolve_references()
    full.variants = ("late",)
    full.long_encoder.mixer = "full"
    out["late_full_attention"] = ranking.run_variants(
        full, split, codes, seed=seed, workdir=run_dir / "ranking_full_attention")["late"]
  return out


def print_linking_examples(record: dict[str, Any], limit: int = 3) -> None:
  """Held-out items: each title with the item the LM decodes from it, and the title it writes
  from the item's SID."""
  t2s = record.get("text2sid_heldout", {}).get("examples", [])[:limit]
  s2t = record.get("sid2text_heldout", {}).get("examples", [])[:limit]
  if t2s:
    print_table(["text -> SID: title", "decoded item's title", "hit@1"],
                [[e["title"], e["decoded_title"], e["hit"]] for e in t2s])
  if s2t:
    print_table(["SID -> text: title", "generated from the SID"],
                [[e["title"], e["generated"]] for e in s2t])


def _metric(record: dict[str, Any] | None, *path: str) -> Any:
  for key in path:
    if not isinstance(record, dict) or key not in record:
      return None
    record = record[key]
  return record


def summary_rows(results: dict[str, Any]) -> list[list[Any]]:
  """[system, measure, value, reference] for everything the run did."""
  rows = []
  sid = results.get("sid", {})
  rows.append(["semantic IDs", "level-1 utilisation", _metric(sid, "level1_utilisation"),
               f"{len(sid.get('codebook_sizes', ()))} levels, unique: "
               f"{_metric(sid, 'unique_with_collision_level')}"])
  evaluated = _metric(results, "retrieval", "evaluated") or {}
  model = _metric(results, "retrieval", "model")
  if model in evaluated:
    rows.append([f"retrieval ({model})", "test recall@10",
                 _metric(evaluated, model, "test", "recall@10"),
                 f"popularity {_fmt(_metric(evaluated, 'popularity', 'test', 'recall@10'))}"])
  lm_record = _metric(results, "lm", "evaluated")
  if lm_record:
    rows.append(["bilingual LM", "next item test recall@10", _metric(lm_record, "test",
                 "recall@10"), f"popularity {_fmt(_metric(lm_record, 'test', 'popularity', 'recall@10'))}"])
    rows.append(["bilingual LM", "text -> SID acc@10, held-out titles",
                 _metric(lm_record, "text2sid_heldout", "text2sid_acc@10"), ""])
    rows.append(["bilingual LM", "SID -> text title F1, held-out",
                 _metric(lm_record, "sid2text_heldout", "sid2text_f1"), ""])
  rank = results.get("ranking") or {}
  for name, r in (rank.get("variants") or {}).items():
    rows.append([f"cold-start ranker ({name})", "click AUC warm / cold",
                 f"{_fmt(_metric(r, 'warm', 'click/auc'))} / "
                 f"{_fmt(_metric(r, 'cold', 'click/auc'))}", f"{r.get('wall_s', 0):.0f} s"])
  full = rank.get("late_full_attention")
  late = (rank.get("variants") or {}).get("late")
  if full and late:
    rows.append(["long history: compression", "warm click AUC",
                 _metric(late, "warm", "click/auc"), f"{late['wall_s']:.0f} s"])
    rows.append(["long history: full attention", "warm click AUC",
                 _metric(full, "warm", "click/auc"), f"{full['wall_s']:.0f} s"])
  rows.append(["the whole run", "wall time (s)", results.get("wall_s"), ""])
  return rows


def _fmt(x: Any) -> str:
  return f"{x:.4f}" if isinstance(x, (float, np.floating)) else str(x)


def print_summary(results: dict[str, Any]) -> None:
  print_table(["summary", "measure", "value", "beside"], summary_rows(results))
