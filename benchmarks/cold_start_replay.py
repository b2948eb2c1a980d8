"""How fast new items gain impressions: the replay of lrm/jobs/replay.py on a cold-start split.

  python benchmarks/cold_start_replay.py                  # ~10 min on 2 CPU cores
  python benchmarks/cold_start_replay.py --rounds=5 --train_steps=300   # a quick look
  python benchmarks/cold_start_replay.py --explore_slots=0   # only the model's slates
  python benchmarks/cold_start_replay.py --dataset=beauty    # held-out clicks on real data

The synthetic world (default WorldConfig, the world of benchmarks/ranking.py) holds 10% of its
interacted items out as new items; each two-tower (ID only, cluster IDs, cluster IDs + content,
+ ID) is trained on the warm positives and replayed round by round with clicks from the world's
planted affinity, once per `--explore_slots` setting: 0 (slates are the model's top K) and 1
(the last slot goes to a random unseen item, so even the ID-only tower's new items get shown and
clicked). Checks per setting: cluster IDs make new items gain impressions faster than the
ID-only tower (a larger area under the "new items shown" curve and 10% of them shown no later),
and no tower's warm Recall collapses (it keeps >= 80% of its start). Writes one JSON under
benchmarks/results/ with device, commit and command.
"""

from __future__ import annotations

import json
import pathlib
import time

import ml_collections
from absl import app, flags, logging

from lrm.core import artifacts
from lrm.jobs.defaults import replay_defaults
from lrm.jobs.replay import print_results, replay_variants

REPO = pathlib.Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"   # the checkout's sibling `shared/` (README)
_ROUNDS = flags.DEFINE_integer("rounds", 30, "replay rounds")
_USERS = flags.DEFINE_integer("users", 200, "users served per round (0 = all)")
_STEPS = flags.DEFINE_integer("train_steps", 1500, "initial training steps per tower")
_UPDATE = flags.DEFINE_integer("update_steps", 50, "training steps after each round")
_SLATE = flags.DEFINE_integer("slate_size", 10, "impressions per served user")
_EXPLORE = flags.DEFINE_list("explore_slots", ["0", "1"],
                             "one replay per value: slate slots given to random unseen items")
_VARIANTS = flags.DEFINE_list("variants", list(replay_defaults().variants), "towers")
_SEED = flags.DEFINE_integer("seed", 0, "seed")
_DATASET = flags.DEFINE_enum("dataset", "synthetic", ["synthetic", "beauty"],
                             "synthetic world (truth clicks) or Amazon Beauty (held-out clicks)")
_BEAUTY = flags.DEFINE_string("beauty_path", str(DATA / "amazon_beauty"),
                              "Beauty in the standard layout")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")


def _sooner(a, b) -> bool:
  """Round a is no later than round b (None = never)."""
  return a is not None and (b is None or a <= b)


def _checks(v) -> dict[str, bool]:
  """v: tower -> summary."""
  checks = {}
  if "id_only" in v:
    for name in ("cluster_ids", "cluster_ids+content"):
      if name in v:
        checks[f"{name}_gain_impressions_faster_than_id_only"] = (
            v[name]["coverage_auc"] > v["id_only"]["coverage_auc"]
            and _sooner(v[name]["round_10pct"], v["id_only"]["round_10pct"]))
  checks["no_warm_collapse"] = all(s["warm_recall_end"] >= 0.8 * s["warm_recall_start"]
                                   for s in v.values())
  return checks


def main(argv):
  del argv
  logging.set_verbosity(logging.INFO)
  start = time.perf_counter()
  artifacts.git_commit()     # the commit of the code that runs (read once)
  base = replay_defaults()
  base.update(rounds=_ROUNDS.value, users_per_round=_USERS.value, train_steps=_STEPS.value,
              update_steps=_UPDATE.value, slate_size=_SLATE.value,
              variants=tuple(_VARIANTS.value))
  if _DATASET.value == "synthetic":
    from lrm.data.synthetic import WorldConfig, make_world
    world = make_world(WorldConfig(seed=_SEED.value))
    dataset, truth = world.dataset, world.truth
  else:
    from lrm.data.layout import read_dataset
    dataset, truth = read_dataset(_BEAUTY.value), None
    base.max_train_events = 100000
  metrics, checks, sections = {}, {}, {}
  for slots in (int(x) for x in _EXPLORE.value):
    key = f"explore_{slots}"
    section = ml_collections.ConfigDict(base.to_dict())
    section.explore_slots = slots
    sections[key] = section.to_dict()
    print(f"== explore_slots={slots}", flush=True)
    metrics[key] = replay_variants(section, dataset, truth=truth, seed=_SEED.value)
    print_results(metrics[key])
    checks[key] = _checks({n: r["summary"] for n, r in metrics[key]["variants"].items()})
  slug = artifacts.device_description()[1]
  # The towers' initial training (the updates after each round are part of the replay).
  train_s = sum(r["train_s"] for m in metrics.values() for r in m["variants"].values())
  record = artifacts.benchmark_record(
      "cold_start_replay", dataset=dataset.name,
      split=f"cold_start_items_{round(100 * base.cold_fraction)}pct", model="two_tower",
      metrics=metrics, train={"train_wall_s": round(train_s, 1)},
      wall_s=time.perf_counter() - start, seed=_SEED.value, sections=sections, checks=checks)
  summary = {k: {n: r["summary"] for n, r in m["variants"].items()} for k, m in metrics.items()}
  print(json.dumps({"checks": checks, "summary": summary}, indent=1, default=float))
  artifacts.write_benchmark_result(_OUT.value, f"cold_start_replay_{dataset.name}_{slug}",
                                   record)


if __name__ == "__main__":
  app.run(main)
