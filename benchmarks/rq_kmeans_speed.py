"""RQ-KMeans fit speed: lrm (JAX) against faiss-cpu's k-means doing the same work.

Data: n x d float32 vectors around 1024 gaussian blobs (seeded). Both sides fit L levels of
k-means with k codes each, a fixed number of Lloyd iterations per level (no early stop), on all
points (faiss: max_points_per_centroid huge, so no subsampling), each level on the residuals of
the previous ones; both include the final assignment of every point per level. Reported: wall
seconds per side (lrm: first run including XLA compilation, and warm runs, best of N), their
ratio, and the relative reconstruction error per level of each (a check that both did the
same work).

faiss-cpu is not a project dependency: `pip install faiss-cpu` into the venv to run this.

  python benchmarks/rq_kmeans_speed.py                      # 1,000,000 x 128, L=3, k=256, 20 iters
  python benchmarks/rq_kmeans_speed.py --n 100000 --repeats 1   # quick
  python benchmarks/rq_kmeans_speed.py --cpu-devices 2      # rows sharded over 2 XLA CPU devices
"""

from __future__ import annotations

import json
import os
import pathlib
import time

import numpy as np
from absl import app, flags

REPO = pathlib.Path(__file__).resolve().parents[1]

_N = flags.DEFINE_integer("n", 1_000_000, "rows")
_D = flags.DEFINE_integer("d", 128, "dimension")
_BLOBS = flags.DEFINE_integer("blobs", 1024, "gaussian blobs the rows are drawn around")
_LEVELS = flags.DEFINE_integer("levels", 3, "RQ levels")
_K = flags.DEFINE_integer("k", 256, "codes per level")
_ITERS = flags.DEFINE_integer("iters", 20, "Lloyd iterations per level")
_SEED = flags.DEFINE_integer("seed", 0, "seed")
_REPEATS = flags.DEFINE_integer("repeats", 1, "warm lrm runs (best is reported)")
_CPU_DEVICES = flags.DEFINE_integer("cpu-devices", 1, "XLA host devices (rows sharded over them)")
_SKIP_FAISS = flags.DEFINE_bool("skip-faiss", False, "time lrm only")
_OUT = flags.DEFINE_string("out", str(REPO / "benchmarks" / "results"), "results folder")


def set_cpu_devices(value: int) -> int:
  """--cpu-devices N (before jax starts): N XLA host devices, rows sharded over them."""
  if value > 1:
    xla_flags = os.environ.get("XLA_FLAGS", "")
    os.environ["XLA_FLAGS"] = f"{xla_flags} --xla_force_host_platform_device_count={value}"
  return value


def make_data(n: int, d: int, blobs: int, seed: int) -> np.ndarray:
  """n rows around `blobs` gaussian centres (spread 3, unit noise). Shape: [n, d] float32."""
  rng = np.random.default_rng(seed)
  centers = rng.normal(size=(blobs, d)).astype(np.float32) * 3.0
  x = rng.standard_normal((n, d), dtype=np.float32)
  x += centers[rng.integers(0, blobs, n)]
  return x


def rel_errors(x: np.ndarray, codebooks, codes) -> list[float]:
  total = float(np.einsum("nd,nd->", x, x, dtype=np.float64))
  r = x.copy()
  out = []
  for c, cb in enumerate(codebooks):
    r -= cb[codes[:, c]]
    out.append(float(np.einsum("nd,nd->", r, r, dtype=np.float64)) / total)
  return out


def run_lrm(x, mesh):
  import jax
  from lrm.sid.rq_kmeans import rq_kmeans_fit
  t0 = time.perf_counter()
  model = rq_kmeans_fit(x, (_K.value,) * _LEVELS.value, key=jax.random.key(_SEED.value),
                        iters=_ITERS.value, tol=None, mesh=mesh)
  return time.perf_counter() - t0, model


def run_faiss(x):
  import faiss
  t0 = time.perf_counter()
  residual = x.copy()
  codebooks, codes = [], []
  for level in range(_LEVELS.value):
    km = faiss.Kmeans(x.shape[1], _K.value, niter=_ITERS.value, max_points_per_centroid=10**9,
                      seed=_SEED.value + level, verbose=False)
    km.train(residual)
    _, a = km.index.search(residual, 1)
    a = a[:, 0]
    residual -= km.centroids[a]
    codebooks.append(km.centroids.copy())
    codes.append(a)
  return time.perf_counter() - t0, codebooks, np.stack(codes, axis=1), faiss


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  devices_wanted = set_cpu_devices(_CPU_DEVICES.value)

  from lrm.core.artifacts import benchmark_record, device_description, write_benchmark_result
  from lrm.parallel.mesh import make_mesh

  device, slug = device_description()
  mesh = make_mesh() if devices_wanted > 1 else None

  x = make_data(_N.value, _D.value, _BLOBS.value, _SEED.value)
  print(f"data {x.shape}, {device}", flush=True)

  wall0 = time.perf_counter()
  cold_s, model = run_lrm(x, mesh)
  print(f"lrm first run (incl. compile): {cold_s:.2f} s", flush=True)
  warm = []
  for _ in range(_REPEATS.value):
    s, model = run_lrm(x, mesh)
    warm.append(s)
    print(f"lrm warm run: {s:.2f} s", flush=True)
  ours_err = rel_errors(x, model.codebooks, model.codes)
  ours_s = min(warm) if warm else cold_s

  reference = None
  if not _SKIP_FAISS.value:
    faiss_s, fcb, fcodes, faiss = run_faiss(x)
    print(f"faiss: {faiss_s:.2f} s", flush=True)
    reference = {
        "implementation": f"faiss-cpu {faiss.__version__} faiss.Kmeans per level on residuals "
                          f"(niter={_ITERS.value}, max_points_per_centroid=1e9, "
                          f"omp threads={faiss.omp_get_max_threads()}) + index.search",
        "fit_s": faiss_s,
        "relative_error_per_level": rel_errors(x, fcb, fcodes),
    }
  wall = time.perf_counter() - wall0

  metrics = {
      "fit_s": ours_s,
      "fit_s_first_run_incl_compile": cold_s,
      "fit_s_warm_runs": warm,
      "relative_error_per_level": ours_err,
  }
  if reference:
    metrics["ratio_vs_faiss"] = ours_s / reference["fit_s"]
  record = benchmark_record(
      "rq_kmeans_speed",
      dataset=f"synthetic_blobs(n={_N.value}, d={_D.value}, blobs={_BLOBS.value}, "
              f"seed={_SEED.value})",
      model=f"rq_kmeans(levels={_LEVELS.value}, k={_K.value}, iters={_ITERS.value}, "
            f"no early stop, metric=l2, full batch, kmeans++ init, "
            f"{'mesh of ' + str(mesh.size) + ' devices' if mesh else '1 device'})",
      metrics=metrics, wall_s=wall, seed=_SEED.value, reference=reference)
  print(json.dumps({k: record[k] for k in ("metrics", "reference")}, indent=1))
  if reference:
    print(f"lrm {ours_s:.2f} s  faiss {reference['fit_s']:.2f} s  ratio {ours_s / reference['fit_s']:.2f}")
  write_benchmark_result(_OUT.value, f"rq_kmeans_speed_{slug}", record)


if __name__ == "__main__":
  app.run(main)
