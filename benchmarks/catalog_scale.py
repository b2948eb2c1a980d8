"""Catalog scale: time and peak memory of embed -> RQ-KMeans -> assign -> trie -> decode by size.

For each catalog size N (ascending, one process), on synthetic items:

  embed    random unit embeddings [N, d] (a stand-in for the encoder), generated and written
           in chunks to a memory-mapped .npy, so they are never all in memory at once
  fit      RQ-KMeans fitted on a sample of `--fit-sample` rows
  assign   codes of all N items, streamed over the .npy in chunks of `--chunk` rows
  trie     the SID table (+ TIGER's collision level) and the trie (dense shallow levels, CSR)
  decode   constrained beam search for `--users` users (one batch, best of `--repeats`) over
           the whole catalog with a stand-in model (a random per-level head on a carried
           state); every output is valid (checked outside the timed stage)

A first, unrecorded pass at the fit sample's size compiles the jitted stages. Per stage: wall
seconds, `per_s` (items/s; users/s for decode), the process's peak RSS so far
(`ru_maxrss`, a high-water mark over the whole run: sizes run in increasing order), and the
peak of the memory `tracemalloc` traced in the stage alone (NumPy arrays included, JAX device
buffers not). With two sizes or more, the fitted growth exponent of time and traced memory per
stage (the slope of log cost against log N). Writes one record (`benchmark: "catalog_scale"`)
to benchmarks/results.

  python benchmarks/catalog_scale.py --sizes=10000                       # a smoke run
  python benchmarks/catalog_scale.py --sizes=1000000,3000000,10000000    # issue 26's sizes
"""

from __future__ import annotations

import pathlib
import resource
import sys
import tempfile
import time
import tracemalloc

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lrm.core import artifacts  # noqa: E402
from lrm.decode import beam_search  # noqa: E402
from lrm.sid.rq_kmeans import rq_assign, rq_kmeans_fit  # noqa: E402
from lrm.sid.table import SIDTable, with_collision_level  # noqa: E402
from lrm.sid.trie import contains, trie_from_table  # noqa: E402

STAGES = ("embed", "fit", "assign", "trie", "decode")

_SIZES = flags.DEFINE_list("sizes", ["1000000", "3000000", "10000000"],
                           "catalog sizes (comma separated)")
_DIM = flags.DEFINE_integer("dim", 64, "embedding dimension")
_CODEBOOK = flags.DEFINE_integer("codebook", 256, "codes per RQ-KMeans level")
_LEVELS = flags.DEFINE_integer("levels", 3, "RQ-KMeans levels")
_FIT_SAMPLE = flags.DEFINE_integer("fit-sample", 100_000, "rows RQ-KMeans is fitted on")
_ITERS = flags.DEFINE_integer("iters", 25, "Lloyd iterations per level")
_CHUNK = flags.DEFINE_integer("chunk", 65_536, "rows per streamed chunk")
_USERS = flags.DEFINE_integer("users", 256, "users decoded per catalog (one batch)")
_REPEATS = flags.DEFINE_integer("repeats", 3, "warm decoding runs (the best is kept)")
_BEAM = flags.DEFINE_integer("beam", 20, "beam width")
_TOP_K = flags.DEFINE_integer("top-k", 10, "items returned per user")
_MODEL_DIM = flags.DEFINE_integer("model-dim", 128, "width of the stand-in model")
_SEED = flags.DEFINE_integer("seed", 0, "seed")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")


class Stage:
  """Measures one stage: wall time, traced peak (this stage only) and the process's peak RSS.

  `catalog` is the catalog size; `work` what the stage's rate counts (items, or users decoded).
  """

  def __init__(self, name: str, catalog: int, work: int | None = None):
    self.name, self.catalog = name, catalog
    self.work = catalog if work is None else work

  def __enter__(self):
    tracemalloc.reset_peak()
    # reset_peak starts the peak at what is held now: the stage's own peak is above that.
    self.held_bytes = tracemalloc.get_traced_memory()[0]
    self.start = time.perf_counter()
    return self

  def __exit__(self, *exc):
    self.wall_s = time.perf_counter() - self.start
    self.traced_peak_bytes = tracemalloc.get_traced_memory()[1] - self.held_bytes
    # Linux reports ru_maxrss in KiB.
    self.peak_rss_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return False

  def row(self, **extra) -> dict:
    return {"stage": self.name, "n": self.catalog, "wall_s": self.wall_s,
            "per_s": self.work / max(self.wall_s, 1e-9),
            "peak_rss_bytes": self.peak_rss_bytes, "traced_peak_bytes": self.traced_peak_bytes,
            "held_before_bytes": self.held_bytes,
            **extra}


def write_random_embeddings(path: pathlib.Path, n: int, dim: int, chunk: int,
                            seed: int) -> np.ndarray:
  """Unit-norm Gaussian rows written chunk by chunk; returns the read-only memmap [n, dim]."""
  out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, dim))
  for start in range(0, n, chunk):
    rows = np.random.default_rng([seed, start]).standard_normal(
        (min(chunk, n - start), dim), dtype=np.float32)
    out[start:start + len(rows)] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
  out.flush()
  del out
  return np.load(path, mmap_mode="r")


def assign_streamed(model, embeddings: np.ndarray, chunk: int) -> np.ndarray:
  """Codes of every row, reading `chunk` rows of the memmap at a time. Shape: [n, L] int32."""
  codes = np.empty((len(embeddings), model.levels), np.int32)
  for start in range(0, len(embeddings), chunk):
    rows = np.asarray(embeddings[start:start + chunk])
    # The last chunk is padded to the chunk size: one compiled shape for every catalog size.
    padded = np.concatenate([rows, np.zeros((chunk - len(rows), rows.shape[1]), rows.dtype)])
    codes[start:start + len(rows)] = rq_assign(model, padded)[:len(rows)]
  return codes


def make_stand_in_step(sizes: tuple[int, ...], dim: int, seed: int):
  """A random model: state + code embedding -> tanh -> per-level head -> log-softmax."""
  keys = iter(jax.random.split(jax.random.key(seed), 2 * len(sizes)))
  emb = [jax.random.normal(next(keys), (k + 1, dim)) for k in (0,) + sizes[:-1]]
  heads = [jax.random.normal(next(keys), (dim, k)) / np.sqrt(dim) for k in sizes]

  def step(state, prev, level):
    h = jnp.tanh(state + emb[level][jnp.clip(prev + 1, 0, emb[level].shape[0] - 1)])
    return jax.nn.log_softmax(h @ heads[level], axis=-1), h

  return step


def run_size(n: int, workdir: pathlib.Path, quiet: bool = False) -> list[dict]:
  rows = []
  with Stage("embed", n) as s:
    emb = write_random_embeddings(workdir / f"emb_{n}.npy", n, _DIM.value, _CHUNK.value,
                                  _SEED.value)
  rows.append(s.row())
  sample = min(n, _FIT_SAMPLE.value)
  with Stage("fit", n) as s:
    pick = np.sort(np.random.default_rng(_SEED.value).choice(n, sample, replace=False))
    model = rq_kmeans_fit(np.asarray(emb[pick]), (_CODEBOOK.value,) * _LEVELS.value,
                          key=jax.random.key(_SEED.value), iters=_ITERS.value)
  rows.append(s.row(fit_rows=sample))
  with Stage("assign", n) as s:
    codes = assign_streamed(model, emb, _CHUNK.value)
  rows.append(s.row())
  with Stage("trie", n) as s:
    table = with_collision_level(SIDTable(item_ids=np.arange(n), codes=codes,
                                          codebook_sizes=model.codebook_sizes))
    trie = trie_from_table(table)
    arrays = trie.arrays()
  rows.append(s.row(trie_bytes=trie.nbytes(), collision_size=table.collision_size))
  sizes = table.full_codebook_sizes
  step = make_stand_in_step(sizes, _MODEL_DIM.value, _SEED.value)
  state = jax.random.normal(jax.random.key(n), (_USERS.value, _MODEL_DIM.value))
  decode = lambda: jax.block_until_ready(beam_search(
      step, state, arrays, batch_size=_USERS.value, beam_size=_BEAM.value, num_levels=len(sizes),
      codebook_sizes=sizes, top_k=_TOP_K.value))
  t0 = time.perf_counter()
  decode()  # compiles
  compile_s = time.perf_counter() - t0
  best = None
  for _ in range(_REPEATS.value):
    with Stage("decode", n, work=_USERS.value) as s:
      result = decode()
    best = s if best is None or s.wall_s < best.wall_s else best
  codes_out = np.asarray(result.codes).reshape(-1, len(sizes))
  assert contains(trie, codes_out).all(), "constrained decoding returned an invalid SID"
  rows.append(best.row(users=_USERS.value, first_run_s_incl_compile=compile_s))
  (workdir / f"emb_{n}.npy").unlink()
  for row in rows if not quiet else ():
    print(row, flush=True)
  return rows


def growth_exponents(rows: list[dict]) -> dict[str, dict[str, float]]:
  """Per stage, the slope of log(wall_s) and log(traced peak) against log(catalog size)."""
  out = {}
  for stage in STAGES:
    mine = [r for r in rows if r["stage"] == stage]
    sizes = np.log([r["n"] for r in mine])
    if len(set(sizes.tolist())) < 2:
      continue
    slope = lambda key: float(np.polyfit(sizes, np.log([max(r[key], 1e-9) for r in mine]), 1)[0])
    out[stage] = {"time": slope("wall_s"), "traced_memory": slope("traced_peak_bytes")}
  return out


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  sizes = sorted({int(n) for n in _SIZES.value})
  t_start = time.perf_counter()
  tracemalloc.start()
  rows = []
  with tempfile.TemporaryDirectory() as workdir:
    # A first pass at the fit sample's size compiles the fit and assignment (their shapes do
    # not depend on the catalog size), so no size's times include compilation.
    run_size(min(sizes[0], _FIT_SAMPLE.value), pathlib.Path(workdir), quiet=True)
    for n in sizes:
      rows += run_size(n, pathlib.Path(workdir))
  tracemalloc.stop()
  slug = artifacts.device_description()[1]
  record = artifacts.benchmark_record(
      "catalog_scale",
      dataset=f"synthetic catalog: random unit embeddings (d={_DIM.value}, seed={_SEED.value})",
      model=f"stand-in step: tanh(state + code embedding) -> per-level head "
            f"(d={_MODEL_DIM.value}); RQ-KMeans {_LEVELS.value} x {_CODEBOOK.value} + collision",
      metrics={"sizes": sizes, "fit_sample": _FIT_SAMPLE.value, "chunk": _CHUNK.value,
               "users": _USERS.value, "beam": _BEAM.value, "top_k": _TOP_K.value,
               "stages": rows, "growth_exponents": growth_exponents(rows)},
      wall_s=time.perf_counter() - t_start, seed=_SEED.value)
  artifacts.write_benchmark_result(pathlib.Path(_OUT.value), f"catalog_scale_{slug}", record)


if __name__ == "__main__":
  app.run(main)
