"""launch/local.py: the dry run, and a real 2-process CPU job (gloo) that agrees with 1 process."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from lrm.train.metric_writers import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[2]
LAUNCHER = REPO / "launch" / "local.py"
JOB = REPO / "tests" / "train" / "training_job.py"


def child_env():
  env = dict(os.environ)
  env["JAX_PLATFORMS"] = "cpu"
  env.pop("XLA_FLAGS", None)   # the launcher sets each process's device count
  env["PYTHONPATH"] = str(REPO)
  return env


def metrics_by_step(workdir: pathlib.Path) -> dict[int, dict]:
  """The last training record of each step (a resumed run rewrites the steps after its
  checkpoint)."""
  return {r["step"]: r for r in read_metrics(workdir) if "train/loss" in r}


def test_dry_run_prints_each_process():
  out = subprocess.run([sys.executable, str(LAUNCHER), "--num_processes=3", "--port=1234",
                        "--devices_per_process=2", "--dry_run", "--", "lrm", "train",
                        "--workdir=w"], capture_output=True, text=True, check=True).stdout
  lines = out.strip().splitlines()
  assert len(lines) == 3
  for i, line in enumerate(lines):
    assert f"LRM_PROCESS_ID={i}" in line and "LRM_NUM_PROCESSES=3" in line
    assert "LRM_COORDINATOR=localhost:1234" in line
    assert "--xla_force_host_platform_device_count=2" in line
    assert line.endswith("lrm train --workdir=w")


def test_no_command_is_an_error():
  done = subprocess.run([sys.executable, str(LAUNCHER), "--num_processes=2"],
                        capture_output=True, text=True)
  assert done.returncode == 2 and "no command" in done.stderr


def test_a_failing_process_fails_the_job(tmp_path):
  done = subprocess.run([sys.executable, str(LAUNCHER), "--num_processes=2",
                         f"--log_dir={tmp_path}", "--", sys.executable, "-c",
                         "import os, sys, time; sys.exit(3) if os.environ['LRM_PROCESS_ID'] "
                         "== '1' else time.sleep(60)"], capture_output=True, text=True,
                        timeout=50)
  assert done.returncode == 3
  assert "process 1 exited with 3" in done.stderr


@pytest.mark.multiprocess
def test_two_processes_train_like_one(tmp_path):
  steps = ["--steps=12", "--eval_every=6"]
  one, two = tmp_path / "one", tmp_path / "two"
  subprocess.run([sys.executable, str(JOB), f"--workdir={one}", *steps], env={
      **child_env(), "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
      check=True, capture_output=True, timeout=300)
  done = subprocess.run([sys.executable, str(LAUNCHER), "--num_processes=2",
                         "--devices_per_process=2", f"--log_dir={tmp_path / 'logs'}", "--",
                         sys.executable, str(JOB), f"--workdir={two}", *steps],
                        env=child_env(), capture_output=True, text=True, timeout=300)
  assert done.returncode == 0, done.stderr[-3000:]
  views = [json.loads((two / f"process_{i}.json").read_text()) for i in range(2)]
  alone = json.loads((one / "process_0.json").read_text())
  # Both processes joined one 4-device job and saw the same validation and weights.
  assert [v["processes"] for v in views] == [2, 2] and views[0]["devices"] == 4
  # (Each process times its own training: `train_s` is the one field allowed to differ.)
  metrics = lambda v: [{k: x for k, x in h.items() if k != "train_s"} for h in v["history"]]
  assert metrics(views[0]) == metrics(views[1])
  assert views[0]["weights_checksum"] == views[1]["weights_checksum"]
  # ... and the job trained as one process on 4 devices does: same batches, same losses.
  a, b = metrics_by_step(one), metrics_by_step(two)
  assert sorted(a) == sorted(b) == list(range(1, 13))
  for s in a:
    assert a[s]["train/batch_fingerprint"] == b[s]["train/batch_fingerprint"]
  np.testing.assert_allclose([b[s]["train/loss"] for s in b], [a[s]["train/loss"] for s in a],
                             rtol=1e-5)
  np.testing.assert_allclose(views[0]["weights_checksum"], alone["weights_checksum"], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.multiprocess
def test_lrm_train_runs_as_two_processes(tmp_path):
  """The real command: process 0 builds the artifacts, both train, process 0 writes."""
  done = subprocess.run(
      [sys.executable, str(LAUNCHER), "--num_processes=2", "--devices_per_process=1",
       f"--log_dir={tmp_path / 'logs'}", "--", sys.executable, "-m", "lrm.cli.main", "train",
       "--config", str(REPO / "configs" / "base.py") + ":runlocal", "--workdir",
       str(tmp_path / "w"), "--config.train.num_steps=40", "--config.train.eval_every=20",
       "--config.train.warmup_steps=5", "--config.embed.encoder=hashing"],
      env=child_env(), capture_output=True, text=True, timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
  out = tmp_path / "w" / "retrieval" / "tiger"
  assert json.loads((out / "manifest.json").read_text())["summary"]["steps"] == 40
  steps = [r["step"] for r in read_metrics(out) if "valid/ndcg@10" in r]
  assert steps == [20, 40]
