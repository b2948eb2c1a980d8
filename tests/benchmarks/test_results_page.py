"""Commands of the results page (benchmarks/README.md) run as written from the checkout.

Three spot checks, each the page's command verbatim (the test fails if the page no longer holds
it) plus overrides that shrink it to seconds and send the record to a temporary folder. Later
flags win in absl, so the overrides are appended, never edited in.
"""

from __future__ import annotations

import json
import os
import pathlib
import shlex
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
PAGE = REPO / "benchmarks" / "README.md"

# (command as the page writes it, with its placeholder filled; tiny overrides; record prefix)
SPOT_CHECKS = {
    "rpg_beauty": (
        "python benchmarks/retrieval.py --config=configs/rpg_beauty.py "
        "--config.run_dir=runs/rpg_beauty_sS --config.seed=S --config.train.seed=S",
        {"S": "0"},
        "--config.embed.encoder=hashing --config.sid.num_codebooks=4 "
        "--config.sid.codebook_size=16 --config.train.num_steps=4 --config.train.warmup_steps=1 "
        "--config.train.eval_every=4 --config.train.checkpoint_every=4 "
        "--config.eval.valid_users=64 --config.eval.batch_size=1024 "
        "--config.model.rpg.d_model=32 --config.model.rpg.num_heads=1 "
        "--config.model.rpg.head_dim=32 --config.model.rpg.mlp_dim=64 "
        "--config.model.rpg.num_layers=1 --config.run_dir={tmp}/run",
        "retrieval_amazon_beauty_rpg_"),
    "compression_speed": (
        "python benchmarks/compression_transformer.py --what=speed --mixers=compress "
        "--lengths=512,2048,8192",
        {},
        "--lengths=128 --repeats=1",
        "compression_speed_"),
    "decode_speed": (
        "python benchmarks/decode_speed.py",
        {},
        "--items=400 --codebook=16 --batches=4 --repeats=1",
        "decode_speed_"),
}


@pytest.mark.parametrize("name", list(SPOT_CHECKS))
def test_results_page_command_runs(name, tmp_path, shared_data):
  written, fill, tiny, prefix = SPOT_CHECKS[name]
  assert f"`{written}`" in PAGE.read_text(), f"the results page no longer holds: {written}"
  command = written
  for key, value in fill.items():
    command = command.replace(key, value)
  argv = shlex.split(command) + shlex.split(tiny.format(tmp=tmp_path)) + [f"--out={tmp_path}"]
  assert argv[0] == "python"
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  done = subprocess.run([sys.executable, *argv[1:]], cwd=REPO, env=env, text=True,
                        capture_output=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  records = sorted(tmp_path.glob(f"{prefix}*.json"))
  assert len(records) == 1, sorted(p.name for p in tmp_path.iterdir())
  record = json.loads(records[0].read_text())
  assert record["command"] and record["commit"] and record["device"]
