"""Constrained beam-search decoding speed: users/s at beam 20, top-10.

Catalog: n items (default 12,000) with random 3 x 256 semantic codes plus TIGER's collision
level (seeded). Model: a dummy step function of TIGER's decoder size without attention (code
embedding 128-d added to a carried 128-d state, 4 residual MLP blocks 128 -> 1024 -> 128, a
per-level output head, log-softmax), so the numbers measure the search and the trie reads
around a realistic per-step matmul cost. Reported per batch size and trie form (dense tables
for the shallow levels + CSR, or all CSR) and unconstrained: warm seconds per batch (best of
N), users/s, ms per decoding step, compile seconds, and the invalid rate of unconstrained
decoding (a random model: near 1).

  python benchmarks/decode_speed.py                    # 12k items, batches 1, 32, 256
  python benchmarks/decode_speed.py --batches 32 --repeats 2
"""

from __future__ import annotations

import json
import pathlib
import sys
import time

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]

_ITEMS = flags.DEFINE_integer("items", 12_000, "catalog items (random SIDs)")
_CODEBOOK = flags.DEFINE_integer("codebook", 256, "codes per level")
_LEVELS = flags.DEFINE_integer("levels", 3, "levels before the collision level")
_BEAM = flags.DEFINE_integer("beam", 20, "beam width")
_TOP_K = flags.DEFINE_integer("top-k", 10, "items returned per user")
_BATCHES = flags.DEFINE_list("batches", ["1", "32", "256"], "batch sizes (comma separated)")
_REPEATS = flags.DEFINE_integer("repeats", 5, "timed warm runs (best is kept)")
_SEED = flags.DEFINE_integer("seed", 0, "seed")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")


def make_table(n: int, k: int, levels: int, seed: int):
  from lrm.sid.table import SIDTable, with_collision_level
  rng = np.random.default_rng(seed)
  # Skewed first level (some coarse clusters much bigger than others), uniform below.
  p0 = rng.dirichlet(np.full(k, 0.5))
  first = rng.choice(k, n, p=p0)
  rest = rng.integers(0, k, size=(n, levels - 1))
  codes = np.concatenate([first[:, None], rest], axis=1).astype(np.int32)
  return with_collision_level(SIDTable(item_ids=np.arange(n), codes=codes,
                                       codebook_sizes=(k,) * levels))


def make_model(sizes, d: int, mlp: int, layers: int, seed: int):
  import jax
  import jax.numpy as jnp
  keys = iter(jax.random.split(jax.random.key(seed), 4 + 2 * layers + 2 * len(sizes)))
  init = lambda shape, fan: jax.random.normal(next(keys), shape, jnp.float32) / np.sqrt(fan)
  params = {"emb": [init((k + 1, d), 1.0) for k in (0,) + tuple(sizes[:-1])],
            "w1": [init((d, mlp), d) for _ in range(layers)],
            "w2": [init((mlp, d), mlp) for _ in range(layers)],
            "head": [init((d, k), d) for k in sizes]}

  def step(state, prev, level):
    emb = params["emb"][level]
    h = state + emb[jnp.clip(prev + 1, 0, emb.shape[0] - 1)]   # prev = -1 at level 0
    for w1, w2 in zip(params["w1"], params["w2"]):
      h = h + jax.nn.gelu(h @ w1) @ w2
      h = h / (1e-6 + jnp.sqrt(jnp.mean(h * h, axis=-1, keepdims=True)))
    return jax.nn.log_softmax(h @ params["head"][level], axis=-1), h

  return step


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  t_start = time.perf_counter()

  import jax
  import jax.numpy as jnp
  sys.path.insert(0, str(REPO))
  from lrm.core import artifacts
  from lrm.decode import beam_search, codes_to_items
  from lrm.sid.trie import contains, trie_from_table

  table = make_table(_ITEMS.value, _CODEBOOK.value, _LEVELS.value, _SEED.value)
  trie = trie_from_table(table)
  sizes = table.full_codebook_sizes
  L = len(sizes)
  step = make_model(sizes, d=128, mlp=1024, layers=4, seed=_SEED.value)
  forms = {"dense+csr": trie.arrays(), "csr": trie.csr_arrays(), "unconstrained": trie.arrays()}
  rows = []
  for b in [int(b) for b in _BATCHES.value]:
    state = jax.random.normal(jax.random.key(b), (b, 128), jnp.float32)
    for form, arrays in forms.items():
      run = lambda: beam_search(step, state, arrays, batch_size=b, beam_size=_BEAM.value,
                                num_levels=L, codebook_sizes=sizes, top_k=_TOP_K.value,
                                constrained=form != "unconstrained")
      t0 = time.perf_counter()
      res = jax.block_until_ready(run())
      first = time.perf_counter() - t0
      times = []
      for _ in range(_REPEATS.value):
        t0 = time.perf_counter()
        res = jax.block_until_ready(run())
        times.append(time.perf_counter() - t0)
      best = min(times)
      codes = np.asarray(res.codes).reshape(-1, L)
      valid = np.asarray(res.valid).reshape(-1)
      assert (valid == contains(trie, codes)).all()
      if form != "unconstrained":
        assert valid.all(), "constrained decoding returned an invalid SID"
        items = codes_to_items(table, np.asarray(res.codes))
        assert all(len(set(r)) == _TOP_K.value for r in items.tolist())
      row = {"batch": b, "form": form, "warm_s": best, "users_per_s": b / best,
             "ms_per_step": 1e3 * best / L, "first_run_s_incl_compile": first,
             "invalid_rate": float(1 - valid.mean())}
      rows.append(row)
      print(json.dumps(row), flush=True)

  slug = artifacts.device_description()[1]
  record = artifacts.benchmark_record(
      "decode_speed",
      dataset=f"synthetic_sids(n={_ITEMS.value}, levels={_LEVELS.value}x{_CODEBOOK.value} + "
              f"collision {sizes[-1]}, skewed level 0, seed={_SEED.value})",
      model="dummy step: 128-d code embedding + carried state, 4 x residual MLP "
            "128-1024-128 (TIGER decoder size, no attention), per-level head, log-softmax",
      metrics={"beam": _BEAM.value, "top_k": _TOP_K.value, "levels": L,
               "trie": trie.summary(), "trie_bytes": trie.nbytes(), "runs": rows},
      wall_s=time.perf_counter() - t_start, seed=_SEED.value)
  artifacts.write_benchmark_result(_OUT.value, f"decode_speed_{slug}", record)


if __name__ == "__main__":
  app.run(main)
