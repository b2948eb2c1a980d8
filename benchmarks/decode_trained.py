"""Decoding throughput of a trained generative retrieval model: users/s at beam 20, top-10.

Loads the best checkpoint of W/retrieval/<model> (from `lrm train`), takes the first `--users`
test users, and times `lrm.decode.generative.recommend` per batch size: one warm-up pass
(compile), then the best of `--repeats` timed passes.

  python benchmarks/decode_trained.py --workdir runs/beauty_cpu --batches=32,256

A parallel-code model (`--model rpg`) is timed with both of its decoders on `--users` test users:
exact scores of the whole catalog, RPG's graph decoding (10 beams, `eval.graph`'s defaults) and
the trie beam search at each `--beams` width, each with its test Recall/NDCG@10 and its recall
relative to exact (the target: within 2%).

  python benchmarks/decode_trained.py --workdir runs/rpg_beauty --model rpg --users 22363 --beams=20,50
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]

_WORKDIR = flags.DEFINE_string("workdir", None, "run directory of `lrm train` (required)")
_MODEL = flags.DEFINE_string("model", "tiger", "model of the run to time (rpg: both decoders)")
_USERS = flags.DEFINE_integer("users", 2048, "first N test users")
_BEAM = flags.DEFINE_integer("beam", 20, "beam width")
_TOP_K = flags.DEFINE_integer("top-k", 10, "items returned per user")
_BATCHES = flags.DEFINE_list("batches", ["32", "256"], "batch sizes (comma separated)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed passes (best is kept)")
_BEAMS = flags.DEFINE_list("beams", ["20", "50", "100"], "rpg: beam widths of the trie decoder")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")
flags.mark_flag_as_required("workdir")


def _load_trained(workdir: pathlib.Path, model_name: str):
  """(config, data_dir, dataset, prep, model) of the run in `workdir`, best checkpoint."""
  import ml_collections
  from lrm.jobs import retrieval
  from lrm.data import read_dataset
  config = ml_collections.ConfigDict(json.loads((workdir / "config.json").read_text()))
  data_dir = (pathlib.Path(config.data.path) if config.data.source == "layout"
              else workdir / "data")
  dataset = read_dataset(data_dir)
  prep = retrieval.prepare(config, dataset, workdir / "sid")
  return config, data_dir, dataset, prep, retrieval.load_trained(config, workdir, prep,
                                                                  model_name)


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  if _MODEL.value == "rpg":
    _parallel_decoders()
    return

  import jax
  from lrm.jobs import retrieval
  from lrm.core.artifacts import benchmark_record, device_description, write_benchmark_result
  from lrm.core.report import print_table
  from lrm.decode.generative import recommend

  config, data_dir, dataset, prep, model = _load_trained(pathlib.Path(_WORKDIR.value),
                                                         _MODEL.value)
  inputs, _ = retrieval.eval_inputs(prep, _MODEL.value, "test")
  n = min(_USERS.value, len(inputs["encoder_tokens"]))
  tokens, mask = inputs["encoder_tokens"][:n], inputs["encoder_mask"][:n]
  trie_arrays = prep.trie.arrays()
  rows = []
  for batch in [int(b) for b in _BATCHES.value]:
    run = lambda: recommend(model, tokens, mask, prep.trie, beam_size=_BEAM.value,
                            top_k=_TOP_K.value, batch_size=batch, trie_arrays=trie_arrays)
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    times = []
    for _ in range(_REPEATS.value):
      start = time.perf_counter()
      rec = run()
      times.append(time.perf_counter() - start)
    best = min(times)
    rows.append({"batch": batch, "users": n, "users_per_s": round(n / best, 1),
                 "best_s": round(best, 3), "first_pass_s": round(first, 3),
                 "invalid_rate": rec.invalid_rate})
  print_table(list(rows[0]), [list(r.values()) for r in rows])
  slug = device_description()[1]
  record = benchmark_record(
      "decode_trained", dataset=pathlib.Path(str(data_dir)).name, split="test",
      model=_MODEL.value,
      metrics={f"batch{r['batch']}/users_per_s": r["users_per_s"] for r in rows},
      model_config=config.model[_MODEL.value].to_dict(), beam=_BEAM.value, top_k=_TOP_K.value,
      num_items=len(dataset.catalog), results=rows, jax_devices=len(jax.devices()))
  write_benchmark_result(pathlib.Path(_OUT.value),
                         f"decode_trained_{record['dataset']}_{_MODEL.value}_{slug}", record)


def _parallel_decoders() -> None:
  """Both decoders of a parallel-code model on every test user, at batch `--batches[-1]`."""
  import jax
  from lrm.jobs import retrieval
  from lrm.core.artifacts import benchmark_record, device_description, write_benchmark_result
  from lrm.core.report import print_table
  from lrm.eval.metrics import retrieval_metrics

  config, data_dir, dataset, prep, model = _load_trained(pathlib.Path(_WORKDIR.value),
                                                         _MODEL.value)
  inputs, targets = retrieval.eval_inputs(prep, _MODEL.value, "test")
  n = min(_USERS.value, len(targets))   # the first `--users` test users
  inputs, targets = {k: v[:n] for k, v in inputs.items()}, targets[:n]
  batch = int(_BATCHES.value[-1])
  rows = []
  for decoder, beam in [("exact", 0), ("graph", 10)] + [("beam", int(b)) for b in _BEAMS.value]:
    best = None
    for _ in range(_REPEATS.value):
      ranked, stats = retrieval.rank(model, _MODEL.value, prep, inputs, k=_TOP_K.value,
                                     beam_size=max(beam, _TOP_K.value), batch_size=batch,
                                     decoder=decoder)
      if best is None or stats["users_per_s"] > best:
        best = stats["users_per_s"]
    metrics = retrieval_metrics(ranked, targets, (_TOP_K.value,))
    rows.append({"decoder": decoder, "beam": beam or None, "batch": batch,
                 "users": len(targets), "users_per_s": round(best, 1),
                 **{k: round(v, 4) for k, v in metrics.items()}})
  exact = rows[0][f"recall@{_TOP_K.value}"]
  for row in rows:
    row["recall_vs_exact"] = round(row[f"recall@{_TOP_K.value}"] / max(exact, 1e-12), 4)
  print_table(list(rows[0]), [list(r.values()) for r in rows])
  slug = device_description()[1]
  record = benchmark_record(
      "decode_trained", dataset=pathlib.Path(str(data_dir)).name, split="test",
      model=_MODEL.value,
      metrics={f"{r['decoder']}{r['beam'] or ''}/users_per_s": r["users_per_s"] for r in rows},
      model_config=config.model[_MODEL.value].to_dict(),
      sid={"method": config.sid.method, "codebook_sizes": prep.table.full_codebook_sizes},
      top_k=_TOP_K.value, num_items=len(dataset.catalog), results=rows,
      jax_devices=len(jax.devices()))
  write_benchmark_result(pathlib.Path(_OUT.value),
                         f"decode_trained_{record['dataset']}_{_MODEL.value}_{slug}", record)


if __name__ == "__main__":
  app.run(main)
