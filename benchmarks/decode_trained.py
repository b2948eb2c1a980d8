"""Decoding throughput of a trained generative retrieval model: users/s at beam 20, top-10.

Loads the best checkpoint of W/retrieval/<model> (from `lrm train`), takes the first `--users`
test users, and times `lrm.decode.generative.recommend` per batch size: one warm-up pass
(compile), then the best of `--repeats` timed passes.

  python benchmarks/decode_trained.py --workdir runs/beauty_cpu --batches 32 256

A parallel-code model (`--model rpg`) is timed with both of its decoders on `--users` test users:
exact scores of the whole catalog, RPG's graph decoding (10 beams, `eval.graph`'s defaults) and
the trie beam search at each `--beams` width, each with its test Recall/NDCG@10 and its recall
relative to exact (the target: within 2%).

  python benchmarks/decode_trained.py --workdir runs/rpg_beauty --model rpg --users 22363 --beams 20 50
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


def _load_trained(args):
  """(config, data_dir, dataset, prep, model) of the run in --workdir, best checkpoint."""
  import ml_collections
  from lrm.jobs import retrieval
  from lrm.data import read_dataset
  config = ml_collections.ConfigDict(json.loads((args.workdir / "config.json").read_text()))
  data_dir = (pathlib.Path(config.data.path) if config.data.source == "layout"
              else args.workdir / "data")
  dataset = read_dataset(data_dir)
  prep = retrieval.prepare(config, dataset, args.workdir / "sid")
  return config, data_dir, dataset, prep, retrieval.load_trained(config, args.workdir, prep,
                                                                  args.model)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", type=pathlib.Path, required=True)
  parser.add_argument("--model", default="tiger")
  parser.add_argument("--users", type=int, default=2048)
  parser.add_argument("--beam", type=int, default=20)
  parser.add_argument("--top-k", type=int, default=10)
  parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
  parser.add_argument("--repeats", type=int, default=3)
  parser.add_argument("--beams", type=int, nargs="+", default=[20, 50, 100],
                      help="rpg: beam widths of the trie decoder")
  parser.add_argument("--out", type=pathlib.Path, default=REPO / "benchmarks" / "results")
  args = parser.parse_args()
  if args.model == "rpg":
    _parallel_decoders(args)
    return

  import jax
  from lrm.jobs import retrieval
  from lrm.core.artifacts import device_description, git_commit, write_benchmark_result
  from lrm.core.report import print_table
  from lrm.decode.generative import recommend

  config, data_dir, dataset, prep, model = _load_trained(args)
  inputs, _ = retrieval.eval_inputs(prep, args.model, "test")
  n = min(args.users, len(inputs["encoder_tokens"]))
  tokens, mask = inputs["encoder_tokens"][:n], inputs["encoder_mask"][:n]
  trie_arrays = prep.trie.arrays()
  rows = []
  for batch in args.batches:
    run = lambda: recommend(model, tokens, mask, prep.trie, beam_size=args.beam,
                            top_k=args.top_k, batch_size=batch, trie_arrays=trie_arrays)
    start = time.perf_counter()
    run()
    first = time.perf_counter() - start
    times = []
    for _ in range(args.repeats):
      start = time.perf_counter()
      rec = run()
      times.append(time.perf_counter() - start)
    best = min(times)
    rows.append({"batch": batch, "users": n, "users_per_s": round(n / best, 1),
                 "best_s": round(best, 3), "first_pass_s": round(first, 3),
                 "invalid_rate": rec.invalid_rate})
  print_table(list(rows[0]), [list(r.values()) for r in rows])
  device, slug = device_description()
  record = {"benchmark": "decode_trained", "dataset": pathlib.Path(str(data_dir)).name,
            "model": args.model, "model_config": config.model[args.model].to_dict(),
            "beam": args.beam, "top_k": args.top_k, "num_items": len(dataset.catalog),
            "results": rows, "device": device, "jax_devices": len(jax.devices()),
            "commit": git_commit(), "command": " ".join(["python", *sys.argv])}
  write_benchmark_result(args.out, f"decode_trained_{record['dataset']}_{args.model}_{slug}",
                         record)


def _parallel_decoders(args) -> None:
  """Both decoders of a parallel-code model on every test user, at batch `--batches[-1]`."""
  import jax
  from lrm.jobs import retrieval
  from lrm.core.artifacts import device_description, git_commit, write_benchmark_result
  from lrm.core.report import print_table
  from lrm.eval.metrics import retrieval_metrics

  config, data_dir, dataset, prep, model = _load_trained(args)
  inputs, targets = retrieval.eval_inputs(prep, args.model, "test")
  n = min(args.users, len(targets))   # the first `--users` test users
  inputs, targets = {k: v[:n] for k, v in inputs.items()}, targets[:n]
  batch = args.batches[-1]
  rows = []
  for decoder, beam in [("exact", 0), ("graph", 10)] + [("beam", b) for b in args.beams]:
    best = None
    for _ in range(args.repeats):
      ranked, stats = retrieval.rank(model, args.model, prep, inputs, k=args.top_k,
                                     beam_size=max(beam, args.top_k), batch_size=batch,
                                     decoder=decoder)
      if best is None or stats["users_per_s"] > best:
        best = stats["users_per_s"]
    metrics = retrieval_metrics(ranked, targets, (args.top_k,))
    rows.append({"decoder": decoder, "beam": beam or None, "batch": batch,
                 "users": len(targets), "users_per_s": round(best, 1),
                 **{k: round(v, 4) for k, v in metrics.items()}})
  exact = rows[0][f"recall@{args.top_k}"]
  for row in rows:
    row["recall_vs_exact"] = round(row[f"recall@{args.top_k}"] / max(exact, 1e-12), 4)
  print_table(list(rows[0]), [list(r.values()) for r in rows])
  device, slug = device_description()
  record = {"benchmark": "decode_trained", "dataset": pathlib.Path(str(data_dir)).name,
            "split": "test", "model": args.model,
            "model_config": config.model[args.model].to_dict(),
            "sid": {"method": config.sid.method, "codebook_sizes": prep.table.full_codebook_sizes},
            "top_k": args.top_k, "num_items": len(dataset.catalog), "results": rows,
            "metrics": {f"{r['decoder']}{r['beam'] or ''}/users_per_s": r["users_per_s"]
                        for r in rows},
            "device": device, "jax_devices": len(jax.devices()), "commit": git_commit(),
            "command": " ".join(["python", *sys.argv])}
  write_benchmark_result(args.out, f"decode_trained_{record['dataset']}_{args.model}_{slug}",
                         record)


if __name__ == "__main__":
  main()
