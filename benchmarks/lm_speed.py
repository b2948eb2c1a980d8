"""Training speed of the bilingual LM (lrm/models/lm.py): tokens/s and MFU of the project's
jitted, donated train step (lrm/train/trainer.py `make_train_step`, AdamW from
lrm/train/optimizer.py) on random packed batches, warmup steps excluded.

MFU = flops_per_token x tokens/s / peak, with flops_per_token = 6 x matmul parameters + PaLM's
attention term (lrm.models.lm.flops_per_token) and the peak from --peak_flops (dense bf16:
~989e12 on H100 SXM / H200, 800e12 is the usual conservative figure; a CPU has no meaningful
peak, so MFU there only checks the arithmetic). Batches pack 4 examples per row (segments,
restarting positions, a short bidirectional prefix), as lrm's LM tasks do.

  python benchmarks/lm_speed.py --size=10m --batch_size=4 --seq_len=256 --steps=5 --warmup=2 \
      --dtype=float32                                                   # CPU check
  python benchmarks/lm_speed.py --size=300m --batch_size=16 --seq_len=2048 --dtype=bfloat16 \
      --attention_impl=cudnn --peak_flops=989e12                         # one H100 / H200

Writes benchmarks/results/lm_speed_<size>_<device>_<stamp>.json.
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]

_SIZE = flags.DEFINE_enum("size", "10m", ["10m", "100m", "300m", "1b"], "named LM size")
_VOCAB = flags.DEFINE_integer("vocab_size", 32768, "vocabulary rows (a multiple of 128)")
_BATCH = flags.DEFINE_integer("batch_size", 8, "rows per step")
_SEQ = flags.DEFINE_integer("seq_len", 1024, "tokens per row")
_STEPS = flags.DEFINE_integer("steps", 20, "timed steps")
_WARMUP = flags.DEFINE_integer("warmup", 3, "untimed steps first (compilation included)")
_DTYPE = flags.DEFINE_enum("dtype", "bfloat16", ["float32", "bfloat16"], "compute dtype")
_IMPL = flags.DEFINE_enum("attention_impl", "xla", ["xla", "cudnn"], "attention kernel")
_REMAT = flags.DEFINE_boolean("remat", False, "recompute blocks in the backward pass")
_PEAK = flags.DEFINE_float("peak_flops", 800e12, "peak FLOP/s of one device for MFU")
_SEED = flags.DEFINE_integer("seed", 0, "PRNG seed")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")


def packed_batch(rng, b: int, l: int, vocab: int, per_row: int = 4) -> dict:
  """Random rows of `per_row` packed examples (the last one padded short), a 16-token prefix."""
  import numpy as np
  ex = l // per_row
  seg = np.repeat(np.arange(1, per_row + 1), ex)[None].repeat(b, 0).astype(np.int32)
  seg[:, -ex // 4:] = 0                                        # some padding at the end
  pos = np.tile(np.arange(ex), per_row)[None].repeat(b, 0).astype(np.int32)
  return {"tokens": rng.integers(0, vocab, (b, l)).astype(np.int32),
          "targets": rng.integers(0, vocab, (b, l)).astype(np.int32),
          "loss_mask": (seg > 0).astype(np.float32), "segment_ids": seg, "positions": pos,
          "prefix": (pos < 16) & (seg > 0)}


def main(argv):
  del argv
  import jax
  import numpy as np
  from flax import nnx
  from lrm.core.artifacts import device_description, git_commit, write_benchmark_result
  from lrm.models.lm import LM, count_params, flops_per_token, lm_config, lm_loss
  from lrm.train.optimizer import make_optimizer
  from lrm.train.trainer import make_train_step

  t_start = time.perf_counter()
  cfg = lm_config(_SIZE.value, _VOCAB.value, dtype=_DTYPE.value,
                  attention_impl=_IMPL.value, remat=_REMAT.value)
  model = LM(cfg, rngs=nnx.Rngs(_SEED.value))
  tx = make_optimizer(learning_rate=1e-4, warmup_steps=0, decay="constant", total_steps=10**6)
  optimizer = nnx.Optimizer(model, tx, wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  step = make_train_step(graphdef, lm_loss, _SEED.value)
  rng = np.random.default_rng(_SEED.value)
  b, l = _BATCH.value, _SEQ.value
  batches = [jax.device_put(packed_batch(rng, b, l, cfg.vocab_size)) for _ in range(2)]

  compile_start = time.perf_counter()
  for i in range(_WARMUP.value):
    state, aux = step(state, batches[i % 2], np.int32(i))
  jax.block_until_ready(aux)
  warmup_s = time.perf_counter() - compile_start
  start = time.perf_counter()
  for i in range(_STEPS.value):
    state, aux = step(state, batches[i % 2], np.int32(_WARMUP.value + i))
  jax.block_until_ready((state, aux))
  elapsed = time.perf_counter() - start

  tokens_per_s = b * l * _STEPS.value / elapsed
  flops = flops_per_token(cfg, l)
  counts = count_params(cfg)
  metrics = {"tokens_per_s": tokens_per_s, "step_s": elapsed / _STEPS.value,
             "mfu": flops * tokens_per_s / _PEAK.value, "model_flops_per_s": flops * tokens_per_s,
             "flops_per_token": flops, "params": counts, "warmup_s_incl_compile": warmup_s,
             "final_loss": float(aux["loss"]), "peak_flops": _PEAK.value}
  device, slug = device_description()
  record = {
      "benchmark": "lm_speed", "size": _SIZE.value,
      "model_config": {k: (list(v) if isinstance(v, tuple) else v)
                       for k, v in cfg.__dict__.items()},
      "batch_size": b, "seq_len": l, "steps": _STEPS.value, "warmup": _WARMUP.value,
      "metrics": metrics, "device": device, "jax": jax.__version__,
      "wall_s": time.perf_counter() - t_start, "commit": git_commit(),
      "command": "python benchmarks/lm_speed.py " + " ".join(sys.argv[1:]),
  }
  print(json.dumps(metrics, indent=1))
  write_benchmark_result(_OUT.value, f"lm_speed_{_SIZE.value}_{slug}", record)


if __name__ == "__main__":
  app.run(main)
