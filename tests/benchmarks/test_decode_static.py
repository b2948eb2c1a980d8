"""benchmarks/decode_static.py: lrm's half on a tiny catalog (STATIC's checkout is absent in CI)."""

from __future__ import annotations

import json

import numpy as np

from tests.benchmarks.conftest import load_benchmark, run_main


def test_prefix_nodes_number_each_depth_in_sorted_order():
  with load_benchmark("decode_static") as bench:
    codes = np.array([[0, 0, 1], [0, 0, 2], [0, 1, 0], [2, 0, 0]])
    nodes = bench.prefix_nodes(codes)
  assert [n.tolist() for n in nodes] == [[0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 1, 2]]


def test_tiny_zipf_catalog_writes_a_record_with_static_skipped(tmp_path):
  argv = ["decode_static.py", "--zipf-items=3000", "--codebook=16", "--levels=2", "--batch=4",
          "--beam=4", "--model-dim=8", "--repeats=2", f"--out={tmp_path}"]
  with load_benchmark("decode_static") as bench:
    run_main(bench, argv)
  [path] = tmp_path.glob("decode_static_*.json")
  record = json.loads(path.read_text())
  assert record["benchmark"] == "decode_static"
  [catalog] = record["metrics"]["catalogs"]
  assert catalog["items"] == 3000 and catalog["static"].startswith("skipped")
  assert catalog["lrm"]["valid_rate"] == 1.0
  assert len(catalog["lrm"]["mask_ms"]) == len(catalog["codebook_sizes"]) == 3
