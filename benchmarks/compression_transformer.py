"""The compression transformer against full self-attention: memory, speed and quality.

speed: forward + backward of the history encoder (lrm/models/compression.py HistoryEncoder,
  gradients of all parameters) on random histories at T in --lengths, for `compress` and `full`.
  Peak memory from XLA's compiled memory analysis (`jax.jit(f).lower(...).compile()
  .memory_analysis()`: temp = activations and scratch, argument = inputs + parameters), which
  needs no run, so a configuration too big to run is still measured, then skipped (recorded
  as such) when its temp exceeds --max_temp_gib. Time: median of --repeats warm runs. A
  log-log fit of time and temp memory against T gives each mixer's exponent (1 = linear,
  2 = quadratic), over the lengths both ran.
quality: next-item HR@10 (= recall@10 with one target) / NDCG@10 of the full model
  (LongHistoryRecommender, trained with lrm/train/trainer.py) on the synthetic world's long
  histories (returning interests, held-out long users, the returning subset reported apart)
  and on MovieLens-100k (leave-one-out, all items ranked): compression at T, full attention
  at T, and full attention truncated to the longest history T' whose training-step temp memory
  fits in the compression model's at T (found from the compiled memory analyses).

  python benchmarks/compression_transformer.py --what=speed              # CPU, small width
  python benchmarks/compression_transformer.py --what=quality            # ~15 min on 2 cores
  python benchmarks/compression_transformer.py --what=quality --datasets=synthetic --seeds=0,1 \
      --synthetic_length=128 --synthetic_users=2400 --synthetic_long_users=2000 \
      --synthetic_long_min=96 --returning_fraction=1.0 --return_burst=8 \
      --return_early_fraction=0.25 --per_user=1 --steps=1500 \
      --variants=old_pooled:recent_windows=0     # the sized long-range task, ~12 min on 2 cores

--variants adds compression models (name:field=value+...) trained and evaluated beside the
others; --seeds repeats everything per seed (data, SIDs, initialisation) and reports means.
  python benchmarks/compression_transformer.py --what=speed --batch=4 --d_model=512 --num_heads=8 \\
      --head_dim=64 --mlp_dim=2048 --num_layers=4 --dtype=bfloat16 --full_impl=cudnn \\
      --lengths=512,2048,8192,32768 --max_temp_gib=100                   # GPU

Writes benchmarks/results/compression_<what>_<device>_<stamp>.json.
"""

from __future__ import annotations

import functools
import pathlib
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
# Run as a script, this folder comes first on sys.path, and this file would shadow the
# `compression` module that some libraries probe for (urllib3: `compression.zstd`).
sys.path[:] = [p for p in sys.path if pathlib.Path(p or ".").resolve() != REPO / "benchmarks"]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_WHAT = flags.DEFINE_enum("what", "speed", ["speed", "quality"], "which benchmark")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")
_SEED = flags.DEFINE_integer("seed", 0, "seed of data, SIDs and initialisation")
_SEEDS = flags.DEFINE_list("seeds", [], "quality: several seeds (overrides --seed); results "
                           "are reported per seed and as means")
# Model (both parts).
_D = flags.DEFINE_integer("d_model", 32, "model width")
_HEADS = flags.DEFINE_integer("num_heads", 2, "attention heads")
_HEAD_DIM = flags.DEFINE_integer("head_dim", 16, "per-head width")
_MLP = flags.DEFINE_integer("mlp_dim", 64, "MLP width")
_LAYERS = flags.DEFINE_integer("num_layers", 2, "blocks")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_FOLD = flags.DEFINE_integer("fold", 16, "F: events per window")
_SUMMARIES = flags.DEFINE_integer("summaries", 2, "S: tokens per window")
_GLOBALS = flags.DEFINE_integer("num_globals", 8, "G: global tokens")
_FOLD_MODE = flags.DEFINE_enum("fold_mode", "mean", ["mean", "concat"], "folding")
_READS = flags.DEFINE_enum("summary_reads", None, ["folded", "events"], "what the summary "
                           "tokens read (default: CompressionConfig's)")
_RECENT = flags.DEFINE_integer("recent_windows", None, "R: last windows kept at full "
                               "resolution (default: CompressionConfig's)")
_FULL_IMPL = flags.DEFINE_string("full_impl", "", "full attention's implementation "
                                 "('' = default, xla, cudnn)")
_COMPRESS_IMPL = flags.DEFINE_string("compress_impl", "", "the compression attention's "
                                     "implementation (masked: '' or xla)")
# Speed.
_LENGTHS = flags.DEFINE_list("lengths", ["512", "2048", "8192", "32768"], "history lengths T")
_MIXERS = flags.DEFINE_list("mixers", ["compress", "full"], "speed: which encoders to run")
_BATCH = flags.DEFINE_integer("batch", 2, "histories per step (speed)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "timed warm runs (speed)")
_MAX_TEMP = flags.DEFINE_float("max_temp_gib", 8.0, "skip running configurations whose "
                               "compiled temp memory exceeds this")
# Quality.
_STEPS = flags.DEFINE_integer("steps", 300, "training steps per model (quality)")
_TRAIN_BATCH = flags.DEFINE_integer("train_batch", 32, "training batch (quality)")
_LR = flags.DEFINE_float("learning_rate", 3e-3, "peak learning rate (quality)")
_PER_USER = flags.DEFINE_integer("per_user", 8, "training targets per user (quality)")
_SYN_T = flags.DEFINE_integer("synthetic_length", 512, "T on the synthetic world")
_ML_T = flags.DEFINE_integer("movielens_length", 512, "T on MovieLens-100k")
_MODELS = flags.DEFINE_list("models", ["compress", "full", "truncated"], "quality: which of "
                            "compress at T, full at T, full truncated to the memory budget")
_VARIANTS = flags.DEFINE_list("variants", [], "quality: more compression models at T, each "
                              "name:field=value+field=value over the compress flags, e.g. "
                              "pooled:summaries=2+summary_reads=folded+recent_windows=0")
_DATASETS = flags.DEFINE_list("datasets", ["synthetic", "movielens_100k"], "quality datasets")
_ML_PATH = flags.DEFINE_string("movielens_path", str(REPO.parent / "shared" / "data" /
                                                     "movielens_100k"), "ML-100k folder")
_SYN_USERS = flags.DEFINE_integer("synthetic_users", 600, "synthetic users in all")
_SYN_LONG = flags.DEFINE_integer("synthetic_long_users", 200, "of which long-history users")
_SYN_LONG_MIN = flags.DEFINE_integer("synthetic_long_min", 0, "shortest long history "
                                     "(0: max(400, synthetic_length // 2))")
_SYN_RETURNING = flags.DEFINE_float("returning_fraction", 0.5, "long users with a returning "
                                    "interest")
_SYN_BURST = flags.DEFINE_integer("return_burst", 32, "events of the early burst")
_SYN_EARLY = flags.DEFINE_float("return_early_fraction", 0.1, "the burst lies in this first "
                                "share of the history")
_SYN_TEST = flags.DEFINE_float("test_fraction", 0.5, "share of long users held out")


def encoder_config(mixer: str, **over):
  from lrm.models.compression import CompressionConfig
  impl = (_FULL_IMPL.value if mixer == "full" else _COMPRESS_IMPL.value) or None
  for name, holder in (("summary_reads", _READS), ("recent_windows", _RECENT)):
    if holder.value is not None:
      over.setdefault(name, holder.value)
  over.setdefault("summaries", _SUMMARIES.value)
  return CompressionConfig(
      mixer=mixer, d_model=_D.value, num_heads=_HEADS.value, head_dim=_HEAD_DIM.value,
      mlp_dim=_MLP.value, num_layers=_LAYERS.value, dropout=over.pop("dropout", 0.0),
      dtype=_DTYPE.value, attention_impl=impl, fold=_FOLD.value,
      num_globals=_GLOBALS.value, fold_mode=_FOLD_MODE.value, **over)


def memory(compiled) -> dict[str, int]:
  m = compiled.memory_analysis()
  return {"temp_bytes": int(m.temp_size_in_bytes),
          "argument_bytes": int(m.argument_size_in_bytes),
          "output_bytes": int(m.output_size_in_bytes)}


def log_slope(xs, ys) -> float | None:
  xs, ys = np.asarray(xs, float), np.asarray(ys, float)
  ok = ys > 0
  if ok.sum() < 2:
    return None
  return float(np.polyfit(np.log(xs[ok]), np.log(ys[ok]), 1)[0])


# ------------------------------------------------------------------------------------------
# Speed


def speed_rows() -> tuple[list[dict], dict]:
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from lrm.models.compression import HistoryEncoder
  rows = []
  for t in [int(x) for x in _LENGTHS.value]:
    key = jax.random.key(_SEED.value)
    x = jax.random.normal(key, (_BATCH.value, t, _D.value), jnp.float32).astype(_DTYPE.value)
    valid = jnp.ones((_BATCH.value, t), bool).at[0, : t // 4].set(False)   # some left padding
    for mixer in _MIXERS.value:
      enc = HistoryEncoder(encoder_config(mixer), rngs=nnx.Rngs(_SEED.value))
      graphdef, params, rest = nnx.split(enc, nnx.Param, ...)

      @jax.jit
      def step(params, x, valid):
        def loss(p):
          user = nnx.merge(graphdef, p, rest)(x, valid)
          return jnp.sum(jnp.square(user.astype(jnp.float32)))
        return jax.value_and_grad(loss)(params)

      row = {"T": t, "mixer": mixer}
      t0 = time.perf_counter()
      compiled = step.lower(params, x, valid).compile()
      row["compile_s"] = time.perf_counter() - t0
      row.update(memory(compiled))
      if row["temp_bytes"] > _MAX_TEMP.value * 2 ** 30:
        row["skipped"] = (f"compiled temp memory {row['temp_bytes'] / 2 ** 30:.1f} GiB > "
                          f"--max_temp_gib={_MAX_TEMP.value}")
      else:
        jax.block_until_ready(compiled(params, x, valid))
        times = []
        for _ in range(_REPEATS.value):
          t0 = time.perf_counter()
          jax.block_until_ready(compiled(params, x, valid))
          times.append(time.perf_counter() - t0)
        row["step_ms"] = 1e3 * float(np.median(times))
      rows.append(row)
      print(row, flush=True)
  summary = {}
  for mixer in _MIXERS.value:
    ran = [r for r in rows if r["mixer"] == mixer and "step_ms" in r]
    every = [r for r in rows if r["mixer"] == mixer]
    summary[mixer] = {
        "time_exponent": log_slope([r["T"] for r in ran], [r["step_ms"] for r in ran]),
        "temp_memory_exponent": log_slope([r["T"] for r in every],
                                          [r["temp_bytes"] for r in every]),
        "ms_per_1k_events": {r["T"]: r["step_ms"] / r["T"] * 1e3 for r in ran}}
  ratios = {}
  for t in sorted({r["T"] for r in rows}) if len(_MIXERS.value) == 2 else ():
    c = next(r for r in rows if r["T"] == t and r["mixer"] == "compress")
    f = next(r for r in rows if r["T"] == t and r["mixer"] == "full")
    ratios[t] = {"temp_memory_full_over_compress": f["temp_bytes"] / max(c["temp_bytes"], 1),
                 "time_full_over_compress": (f["step_ms"] / c["step_ms"]
                                             if "step_ms" in f and "step_ms" in c else None)}
  summary["ratios"] = ratios
  return rows, summary


# ------------------------------------------------------------------------------------------
# Quality


def synthetic_data(seed: int):
  from lrm.data.synthetic import WorldConfig, make_world
  from lrm.tasks import long_history as lh
  world = make_world(WorldConfig(
      seed=seed, num_items=1000, num_users=_SYN_USERS.value, long_history_users=_SYN_LONG.value,
      long_history_min=_SYN_LONG_MIN.value or max(400, _SYN_T.value // 2),
      long_history_max=_SYN_T.value, returning_fraction=_SYN_RETURNING.value,
      return_burst=_SYN_BURST.value, return_early_fraction=_SYN_EARLY.value))
  split = lh.returning_split(world.sequences, world.truth.long_users,
                             world.truth.returning_users, test_fraction=_SYN_TEST.value,
                             seed=seed)
  emb = np.concatenate([world.catalog.embeddings[m] for m in sorted(world.catalog.embeddings)],
                       1)
  groups = {"all": np.ones(len(split.test), bool), "returning": split.test_returning,
            "not_returning": ~split.test_returning}
  return world.catalog, split.train, split.test, emb, groups


def movielens_data(seed: int):
  from lrm.data.movielens import read_recbole_atomic
  from lrm.data.splits import leave_one_out
  from lrm.encoders.hashing import HashingEncoder
  dataset = read_recbole_atomic(_ML_PATH.value, name="movielens_100k")
  split = leave_one_out(dataset.sequences)
  emb = HashingEncoder(dim=128, seed=seed).encode(dataset.catalog.text(("title", "genres")))
  return dataset.catalog, split.train, split.test, emb, {"all": np.ones(len(split.test), bool)}


def train_step_memory(cfg, item_codes, t: int, batch: int) -> int:
  """Compiled temp bytes of one training step (loss + gradients) at history length t."""
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from lrm.models.compression import LongHistoryRecommender, long_history_loss
  model = LongHistoryRecommender(cfg, rngs=nnx.Rngs(0))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  shapes = {"history": jax.ShapeDtypeStruct((batch, t), jnp.int32),
            "gap": jax.ShapeDtypeStruct((batch, t), jnp.int32),
            "age": jax.ShapeDtypeStruct((batch, t), jnp.int32),
            "kind": jax.ShapeDtypeStruct((batch, t), jnp.int32),
            "target": jax.ShapeDtypeStruct((batch,), jnp.int32)}

  def grads(params, rest, batch):   # as the trainer's step (dropout advances RNG counters)
    model = nnx.merge(graphdef, params, rest)
    return nnx.grad(lambda m: long_history_loss(m, batch, item_codes)[0])(model)

  return memory(jax.jit(grads).lower(params, rest, shapes).compile())["temp_bytes"]


def train_and_evaluate(name, cfg, catalog, train_seqs, test, item_codes, groups, t, workdir,
                       seed):
  import jax
  import jax.numpy as jnp
  from flax import nnx
  from lrm.eval.metrics import rank_full_scores, retrieval_metrics
  from lrm.models.compression import LongHistoryRecommender, long_history_loss, score_items
  from lrm.tasks import long_history as lh
  from lrm.train.trainer import train
  examples = lh.training_examples(train_seqs, catalog, length=t, per_user=_PER_USER.value)
  examples.pop("user")
  model = LongHistoryRecommender(cfg, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  codes = jnp.asarray(item_codes)
  loss_fn = functools.partial(long_history_loss, item_codes=codes)
  start = time.perf_counter()
  result = train(model, loss_fn, examples, workdir=workdir, progress=False, config={
      "batch_size": _TRAIN_BATCH.value, "num_steps": _STEPS.value, "log_every": 50,
      "checkpoint_every": 10 ** 9, "learning_rate": _LR.value,
      "warmup_steps": max(1, _STEPS.value // 10), "decay": "cosine", "seed": seed})
  train_s = time.perf_counter() - start
  model.eval()
  ev = lh.eval_examples(test, catalog, length=t)
  ev.pop("user")
  graphdef, state = nnx.split(model)
  scorer = jax.jit(lambda s, b: score_items(nnx.merge(graphdef, s), b, codes))
  scores = []
  for i in range(0, len(ev["target"]), 64):
    batch = {k: jnp.asarray(v[i:i + 64]) for k, v in ev.items() if k != "target"}
    scores.append(np.asarray(scorer(state, batch)))
  ranked = rank_full_scores(np.concatenate(scores), catalog.item_ids, 10)
  out = {"model": name, "seed": seed, "T": t, "train_examples": int(len(examples["target"])),
         "train_s": round(train_s, 1), "steps_per_s": result.steps_per_s}
  for group, mask in groups.items():
    if mask.any():
      m = retrieval_metrics(ranked[mask], test.targets[mask], ks=(10,))
      out[group] = {"hr@10": m["recall@10"], "ndcg@10": m["ndcg@10"], "users": int(mask.sum())}
  print(out, flush=True)
  return out


def parse_variant(text: str) -> tuple[str, dict]:
  """'name:field=value+field=value' -> (name, {field: value}), values as ints when they are."""
  name, _, body = text.partition(":")
  over = {}
  for item in filter(None, body.split("+")):
    key, _, value = item.partition("=")
    over[key] = int(value) if value.lstrip("-").isdigit() else value
  return name, over


def mean_results(results: list[dict]) -> dict:
  """Per model: the mean and standard deviation over seeds of each group's HR@10 / NDCG@10."""
  out = {}
  for name in dict.fromkeys(r["model"] for r in results):
    rows = [r for r in results if r["model"] == name]
    out[name] = {"seeds": len(rows)}
    for group in ("all", "returning", "not_returning"):
      if group in rows[0]:
        out[name][group] = {f"{m}_{stat}": float(fn([r[group][m] for r in rows]))
                            for m in ("hr@10", "ndcg@10")
                            for stat, fn in (("mean", np.mean), ("std", np.std))}
        out[name][group]["users"] = sum(r[group]["users"] for r in rows)
  return out


def quality_rows() -> list[dict]:
  import jax.numpy as jnp
  from lrm.models.compression import LongHistoryConfig
  from lrm.tasks import long_history as lh
  seeds = [int(x) for x in _SEEDS.value] or [_SEED.value]
  variants = [parse_variant(v) for v in _VARIANTS.value]
  rows = []
  for dataset in _DATASETS.value:
    loader = {"synthetic": synthetic_data, "movielens_100k": movielens_data}[dataset]
    t = _SYN_T.value if dataset == "synthetic" else _ML_T.value
    info, results = {"dataset": dataset, "seeds": seeds}, []
    for seed in seeds:
      catalog, train_seqs, test, emb, groups = loader(seed)
      codes, sizes = lh.item_sids(emb, (16, 16), seed=seed)
      make = lambda mixer, **over: LongHistoryConfig(
          codebook_sizes=sizes, history_levels=2,
          encoder=encoder_config(mixer, dropout=0.1, **over))
      if "truncated_T" not in info:   # the memory budget depends on shapes only
        budget = train_step_memory(make("compress"), jnp.asarray(codes), t, _TRAIN_BATCH.value)
        candidates = [c for c in (16, 32, 64, 128, 256, 512, 1024, 2048, 4096) if c < t]
        fits = {c: train_step_memory(make("full"), jnp.asarray(codes), c, _TRAIN_BATCH.value)
                for c in candidates}
        truncated = max([c for c, m in fits.items() if m <= budget], default=candidates[0])
        info.update({"sid_codebook_sizes": list(sizes), "compress_train_temp_bytes": budget,
                     "full_train_temp_bytes_by_T": fits, "truncated_T": truncated,
                     "test_users": len(test)})
        for name, over in variants:
          info[f"{name}_train_temp_bytes"] = train_step_memory(
              make("compress", **over), jnp.asarray(codes), t, _TRAIN_BATCH.value)
        print(info, flush=True)
      truncated = info["truncated_T"]
      runs = [("compress", "compress", make("compress"), t)]
      runs += [(None, name, make("compress", **over), t) for name, over in variants]
      runs += [("full", "full", make("full"), t),
               ("truncated", f"full_truncated_T{truncated}", make("full"), truncated)]
      for key, name, cfg, length in runs:
        if key is not None and key not in _MODELS.value:
          continue
        with tempfile.TemporaryDirectory() as workdir:
          results.append(train_and_evaluate(name, cfg, catalog, train_seqs, test, codes,
                                            groups, length, workdir, seed))
    rows.append({**info, "results": results, "mean_over_seeds": mean_results(results)})
    print(rows[-1]["mean_over_seeds"], flush=True)
  return rows


def main(argv):
  del argv
  import jax
  from lrm.core.artifacts import (benchmark_record, device_description, git_commit,
                                  write_benchmark_result)
  start = time.perf_counter()
  git_commit()     # the commit of the code that runs (read once)
  if _WHAT.value == "speed":
    rows, summary = speed_rows()
    mixers = _MIXERS.value
    shared = {"dataset": None, "model": "HistoryEncoder",
              "variant": mixers[0] if len(mixers) == 1 else None,
              "metrics": {"runs": rows, "summary": summary}, "seed": _SEED.value}
  else:
    datasets = quality_rows()
    train_s = sum(r["train_s"] for d in datasets for r in d["results"])
    shared = {"dataset": ",".join(_DATASETS.value), "split": "test",
              "model": "LongHistoryRecommender", "metrics": {"datasets": datasets},
              "train": {"train_wall_s": round(train_s, 1)},
              "seed": [int(x) for x in _SEEDS.value] or [_SEED.value]}
  slug = device_description()[1]
  record = benchmark_record(
      f"compression_{_WHAT.value}", **shared, wall_s=time.perf_counter() - start,
      flags={h.name: h.value for h in globals().values() if isinstance(h, flags.FlagHolder)},
      jax=jax.__version__)
  write_benchmark_result(_OUT.value, f"compression_{_WHAT.value}_{slug}", record)


if __name__ == "__main__":
  app.run(main)
