"""benchmarks/catalog_scale.py end to end at a tiny size: every stage measured, one record."""

from __future__ import annotations

import json

from tests.benchmarks.conftest import load_benchmark, run_main


def test_tiny_catalogs_write_one_record_with_every_stage(tmp_path):
  argv = ["catalog_scale.py", "--sizes=1000,2000", "--dim=8", "--codebook=16", "--levels=2",
          "--fit-sample=500", "--iters=3", "--chunk=700", "--users=2", "--beam=4", "--top-k=2",
          "--model-dim=8", f"--out={tmp_path}"]
  with load_benchmark("catalog_scale") as bench:
    run_main(bench, argv)
  [path] = tmp_path.glob("catalog_scale_*.json")
  record = json.loads(path.read_text())
  assert record["benchmark"] == "catalog_scale"
  stages = record["metrics"]["stages"]
  assert [(r["stage"], r["n"]) for r in stages] == [
      (s, n) for n in (1000, 2000) for s in ("embed", "fit", "assign", "trie", "decode")]
  assert all(r["wall_s"] > 0 and r["peak_rss_bytes"] > 0 for r in stages)
  assert sorted(record["metrics"]["growth_exponents"]) == sorted(
      ["embed", "fit", "assign", "trie", "decode"])
