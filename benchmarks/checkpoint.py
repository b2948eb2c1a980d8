"""Checkpoint cost: save time, size on disk, restore time, and what asynchronous saving adds to
the training step (lrm/train/checkpoint.py: Orbax, the trainer's own Checkpointer).

Trains the bilingual LM (lrm/models/lm.py, a named size) with the trainer's jitted, donated
step three times over the same batches: without checkpoints, with an asynchronous save every
`--save_every` steps, with a synchronous one. The overhead of asynchronous saving is the extra
time per step against the run without checkpoints (goal: under 5%); the blocking time is what
the training thread waits in `save()` (device-to-host copy; the write runs in the background).

  python benchmarks/checkpoint.py --size=10m --vocab_size=8192 --batch_size=4 --seq_len=256 \
      --steps=24 --save_every=6 --dtype=float32                       # CPU
  python benchmarks/checkpoint.py --size=300m --batch_size=16 --seq_len=2048 --steps=60 \
      --save_every=20 --dtype=bfloat16 --attention_impl=cudnn          # one H100 / H200

Writes benchmarks/results/checkpoint_<size>_<device>_<stamp>.json.
"""

from __future__ import annotations

import json
import pathlib
import shutil
import tempfile
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]

_SIZE = flags.DEFINE_enum("size", "10m", ["10m", "100m", "300m", "1b"], "named LM size")
_VOCAB = flags.DEFINE_integer("vocab_size", 32768, "vocabulary rows (a multiple of 128)")
_BATCH = flags.DEFINE_integer("batch_size", 4, "rows per step")
_SEQ = flags.DEFINE_integer("seq_len", 256, "tokens per row")
_STEPS = flags.DEFINE_integer("steps", 24, "timed steps per run")
_SAVE_EVERY = flags.DEFINE_integer("save_every", 6, "steps between checkpoints")
_DTYPE = flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "compute dtype")
_IMPL = flags.DEFINE_enum("attention_impl", "xla", ["xla", "cudnn"], "attention kernel")
_DIR = flags.DEFINE_string("dir", None, "where checkpoints go (default: a temporary folder)")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")


def causal_batch(rng, b: int, l: int, vocab: int) -> dict:
  """Random tokens, one example per row (the step's content does not matter here)."""
  import numpy as np
  return {"tokens": rng.integers(0, vocab, (b, l)).astype(np.int32),
          "targets": rng.integers(0, vocab, (b, l)).astype(np.int32),
          "loss_mask": np.ones((b, l), np.float32), "segment_ids": np.ones((b, l), np.int32),
          "positions": np.tile(np.arange(l, dtype=np.int32), (b, 1)),
          "prefix": np.zeros((b, l), bool)}


def dir_bytes(path: pathlib.Path) -> int:
  return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def main(argv):
  del argv
  import jax
  import numpy as np
  from flax import nnx
  from lrm.core.artifacts import benchmark_record, device_description, write_benchmark_result
  from lrm.models.lm import LM, count_params, lm_config, lm_loss
  from lrm.train.checkpoint import Checkpointer
  from lrm.train.optimizer import make_optimizer
  from lrm.train.trainer import _checkpointed, make_train_step

  t_start = time.perf_counter()
  cfg = lm_config(_SIZE.value, _VOCAB.value, dtype=_DTYPE.value, attention_impl=_IMPL.value)
  model = LM(cfg, rngs=nnx.Rngs(0))
  tx = make_optimizer(learning_rate=1e-4, warmup_steps=0, decay="constant", total_steps=10**6)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  step = make_train_step(graphdef, lm_loss, 0)
  rng = np.random.default_rng(0)
  batches = [jax.device_put(causal_batch(rng, _BATCH.value, _SEQ.value, cfg.vocab_size))
             for _ in range(2)]
  for i in range(3):   # compile and warm up
    state, aux = step(state, batches[i % 2], np.int32(i))
  jax.block_until_ready(aux)
  root = pathlib.Path(_DIR.value or tempfile.mkdtemp(prefix="lrm_ckpt_bench_"))

  def run(mode: str) -> dict:
    nonlocal state
    folder = root / mode
    shutil.rmtree(folder, ignore_errors=True)
    ckpt = None if mode.startswith("none") else Checkpointer(folder, keep_last=2,
                                                             async_save=mode == "async")
    blocking = []
    start = time.perf_counter()
    for i in range(_STEPS.value):
      state, aux = step(state, batches[i % 2], np.int32(3 + i))
      if ckpt is not None and (i + 1) % _SAVE_EVERY.value == 0:
        # Timed from the step's end: otherwise the wait for the (asynchronously
        # dispatched) step itself would count as saving. The training loop pays it anyway.
        jax.block_until_ready(state)
        t = time.perf_counter()
        ckpt.save(i + 1, _checkpointed(state))
        blocking.append(time.perf_counter() - t)
    jax.block_until_ready((state, aux))
    train_s = time.perf_counter() - start
    out = {"step_s": train_s / _STEPS.value, "saves": len(blocking)}
    if ckpt is not None:
      t = time.perf_counter()
      ckpt.wait()   # the last write finishing (not part of the training loop's time)
      out["final_wait_s"] = time.perf_counter() - t
      out["blocking_save_s"] = float(np.mean(blocking))
      last = ckpt.latest_step()
      out["bytes_per_checkpoint"] = dir_bytes(folder / str(last))
      t = time.perf_counter()
      restored, _ = ckpt.restore(_checkpointed(state), step=last)
      jax.block_until_ready(restored)
      out["restore_s"] = time.perf_counter() - t
      ckpt.close()
    return out

  results = {mode: run(mode) for mode in ("none", "async", "sync", "none_again")}
  base = 0.5 * (results["none"]["step_s"] + results["none_again"]["step_s"])
  for mode in ("async", "sync"):
    results[mode]["step_overhead"] = results[mode]["step_s"] / base - 1.0
  if not _DIR.value:
    shutil.rmtree(root, ignore_errors=True)
  slug = device_description()[1]
  params = count_params(cfg)
  record = benchmark_record(
      "checkpoint", dataset=None, model=f"bilingual_sid_lm_{_SIZE.value}",
      metrics={"async_step_overhead": results["async"]["step_overhead"],
               "sync_step_overhead": results["sync"]["step_overhead"],
               "blocking_save_s": results["async"]["blocking_save_s"],
               "restore_s": results["async"]["restore_s"],
               "bytes_per_checkpoint": results["async"]["bytes_per_checkpoint"]},
      wall_s=time.perf_counter() - t_start, size=_SIZE.value, params=params,
      batch_size=_BATCH.value, seq_len=_SEQ.value, steps=_STEPS.value,
      save_every=_SAVE_EVERY.value, results=results, baseline_step_s=base,
      goal="async step overhead < 5%", jax=jax.__version__)
  print(json.dumps({"params": params, "baseline_step_s": base, **results}, indent=1))
  write_benchmark_result(_OUT.value, f"checkpoint_{_SIZE.value}_{slug}", record)


if __name__ == "__main__":
  app.run(main)
