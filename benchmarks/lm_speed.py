"""Speed of the bilingual LM (lrm/models/lm.py).

`--mode=train` (default): tokens/s and MFU of the project's jitted, donated train step
(lrm/train/trainer.py `make_train_step`, AdamW from lrm/train/optimizer.py) on random packed
batches, warmup steps excluded.

MFU = flops_per_token x tokens/s / peak, with flops_per_token = 6 x matmul parameters + PaLM's
attention term (lrm.models.lm.flops_per_token) and the peak from --peak_flops (dense bf16:
~989e12 on H100 SXM / H200, 800e12 is the usual conservative figure; a CPU has no meaningful
peak, so MFU there only checks the arithmetic). Batches pack 4 examples per row (segments,
restarting positions, a short bidirectional prefix), as lrm's LM tasks do.

  python benchmarks/lm_speed.py --size=10m --batch_size=4 --seq_len=256 --steps=5 --warmup=2 \
      --dtype=float32                                                   # CPU check
  python benchmarks/lm_speed.py --size=300m --batch_size=16 --seq_len=2048 --dtype=bfloat16 \
      --attention_impl=cudnn --peak_flops=989e12                         # one H100 / H200

`--mode=decode`: users/s of next-item decoding, the stage's one decoder (lrm/jobs/lm
`_decode_sids`: `recommend(SIDDecoder(lm), ...)`, constrained beam search over the trie, the
prompt's keys/values cached once per user, one compile per shape) at beam 20, top 10, batch 256.
The LM is a random one of `--size` (throughput does not depend on the weights: every beam does
the same work), SID tokens at the end of the vocabulary; the catalog is `--items` random
3 x 256 codes plus TIGER's collision level (Beauty has 12,101 items); prompts are `--prompt_len`
random text/SID tokens (configs/lm_beauty.py:cpu allows 96, the full config 384). One untimed
batch compiles, then the best of `--repeats` passes over `--users` users is timed.

  python benchmarks/lm_speed.py --mode=decode --size=10m --dtype=float32     # CPU, 1,024 users
  python benchmarks/lm_speed.py --mode=decode --dtype=float32 --vocab_size=4992 \
      --model=d_model=128,num_layers=2,num_heads=2,num_kv_heads=1,head_dim=64,mlp_dim=384
  python benchmarks/lm_speed.py --mode=decode --size=10m --dtype=float32 --users=8 \
      --decode_batch=4 --vocab_size=1024 --items=500 --prompt_len=16 --out=/tmp   # smoke check

Writes benchmarks/results/lm_speed_<size>_<device>_<stamp>.json (decode:
lm_decode_speed_<size>_<device>_<stamp>.json).
"""

from __future__ import annotations

import json
import pathlib
import time

from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]

_MODE = flags.DEFINE_enum("mode", "train", ["train", "decode"], "what to time")
_SIZE = flags.DEFINE_enum("size", "10m", ["10m", "100m", "300m", "1b"], "named LM size")
_FIELDS = flags.DEFINE_list("model", [], "size fields over the named size, e.g. d_model=128,"
                            "num_layers=2,num_heads=2,num_kv_heads=1,head_dim=64,mlp_dim=384 "
                            "(configs/lm_beauty.py:cpu's model)")
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
_BEAM = flags.DEFINE_integer("beam_size", 20, "decode: beams per user")
_TOP_K = flags.DEFINE_integer("top_k", 10, "decode: items returned per user")
_DECODE_BATCH = flags.DEFINE_integer("decode_batch", 256, "decode: users per jitted call")
_USERS = flags.DEFINE_integer("users", 1024, "decode: users per timed pass")
_ITEMS = flags.DEFINE_integer("items", 12101, "decode: catalog items (random SIDs)")
_PROMPT = flags.DEFINE_integer("prompt_len", 96, "decode: prompt tokens per user")
_REPEATS = flags.DEFINE_integer("repeats", 2, "decode: timed passes (the best is kept)")
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


def random_catalog_trie(num_items: int, seed: int, codebook_size: int = 256, levels: int = 3):
  """The trie of `num_items` random SIDs (skewed first level, as RQ codes are) plus TIGER's
  collision level."""
  import numpy as np
  from lrm.sid.table import SIDTable, with_collision_level
  from lrm.sid.trie import trie_from_table
  rng = np.random.default_rng(seed)
  first = rng.choice(codebook_size, num_items, p=rng.dirichlet(np.full(codebook_size, 0.5)))
  rest = rng.integers(0, codebook_size, (num_items, levels - 1))
  codes = np.concatenate([first[:, None], rest], axis=1).astype(np.int32)
  table = with_collision_level(SIDTable(item_ids=np.arange(num_items), codes=codes,
                                        codebook_sizes=(codebook_size,) * levels))
  return trie_from_table(table)


def decode_speed() -> tuple[dict, dict]:
  """(metrics, record fields) of next-item decoding users/s (see the module docstring)."""
  import numpy as np
  from flax import nnx
  from lrm.decode.generative import recommend
  from lrm.models.lm import LM, SIDDecoder, count_params, lm_config

  trie = random_catalog_trie(_ITEMS.value, _SEED.value)
  sizes = tuple(int(k) for k in trie.codebook_sizes)
  cfg = lm_config(_SIZE.value, _VOCAB.value, dtype=_DTYPE.value,
                  sid_start=_VOCAB.value - sum(sizes), codebook_sizes=sizes, **size_fields())
  decoder = SIDDecoder(LM(cfg, rngs=nnx.Rngs(_SEED.value)))
  rng = np.random.default_rng(_SEED.value)
  users, batch = _USERS.value, min(_DECODE_BATCH.value, _USERS.value)
  prompts = rng.integers(3, cfg.vocab_size, (users, _PROMPT.value)).astype(np.int32)
  valid = np.ones(prompts.shape, bool)
  arrays = trie.arrays()
  decode = lambda n: recommend(decoder, prompts[:n], valid[:n], trie, beam_size=_BEAM.value,
                               top_k=_TOP_K.value, batch_size=batch, trie_arrays=arrays)

  start = time.perf_counter()
  decode(batch)                                        # compiles; later calls reuse it
  compile_s = time.perf_counter() - start
  passes = []
  for _ in range(_REPEATS.value):
    start = time.perf_counter()
    recs = decode(users)
    passes.append(time.perf_counter() - start)
  best = min(passes)
  metrics = {"users_per_s": users / best, "s_per_batch": best * batch / users,
             "pass_s": passes, "first_batch_s_incl_compile": compile_s,
             "invalid_rate": recs.invalid_rate, "params": count_params(cfg)}
  return metrics, {"model_config": _jsonable(cfg), "beam_size": _BEAM.value,
                   "top_k": _TOP_K.value, "batch_size": batch, "users": users,
                   "items": _ITEMS.value, "prompt_len": _PROMPT.value}


def train_speed() -> tuple[dict, dict]:
  """(metrics, record fields) of train-step tokens/s and MFU (see the module docstring)."""
  import jax
  import numpy as np
  from flax import nnx
  from lrm.models.lm import LM, count_params, flops_per_token, lm_config, lm_loss
  from lrm.train.optimizer import make_optimizer
  from lrm.train.trainer import make_train_step

  cfg = lm_config(_SIZE.value, _VOCAB.value, dtype=_DTYPE.value,
                  attention_impl=_IMPL.value, remat=_REMAT.value, **size_fields())
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
  metrics = {"tokens_per_s": tokens_per_s, "step_s": elapsed / _STEPS.value,
             "mfu": flops * tokens_per_s / _PEAK.value, "model_flops_per_s": flops * tokens_per_s,
             "flops_per_token": flops, "params": count_params(cfg),
             "warmup_s_incl_compile": warmup_s, "final_loss": float(aux["loss"]),
             "peak_flops": _PEAK.value}
  return metrics, {"model_config": _jsonable(cfg), "batch_size": b, "seq_len": l,
                   "steps": _STEPS.value, "warmup": _WARMUP.value}


def size_fields() -> dict[str, int]:
  """`--model`'s field=value pairs (integers: the size fields of LMConfig)."""
  pairs = [f.split("=", 1) for f in _FIELDS.value]
  if any(len(p) != 2 for p in pairs):
    raise ValueError(f"--model takes field=value pairs, got {_FIELDS.value}")
  return {k.strip(): int(v) for k, v in pairs}


def _jsonable(cfg) -> dict:
  return {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.__dict__.items()}


def main(argv):
  del argv
  import jax
  from lrm.core.artifacts import benchmark_record, device_description, write_benchmark_result
  t_start = time.perf_counter()
  name = {"train": "lm_speed", "decode": "lm_decode_speed"}[_MODE.value]
  metrics, fields = decode_speed() if _MODE.value == "decode" else train_speed()
  slug = device_description()[1]
  record = benchmark_record(name, dataset=None, model=f"bilingual_sid_lm_{_SIZE.value}",
                            metrics=metrics, wall_s=time.perf_counter() - t_start,
                            seed=_SEED.value, size=_SIZE.value, **fields, jax=jax.__version__)
  print(json.dumps(metrics, indent=1))
  write_benchmark_result(_OUT.value, f"{name}_{_SIZE.value}_{slug}", record)


if __name__ == "__main__":
  app.run(main)
