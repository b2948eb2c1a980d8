"""Preemption: SIGTERM saves and exits cleanly; after SIGKILL the restarted run repeats the
same batches and losses as an uninterrupted one."""

import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lrm.train.metric_writers import read_metrics

REPO = pathlib.Path(__file__).resolve().parents[2]
JOB = REPO / "tests" / "train" / "training_job.py"
STEPS = 24


def metrics_by_step(workdir: pathlib.Path) -> dict[int, dict]:
  """The last training record of each step (steps after a restart's checkpoint are rewritten)."""
  return {r["step"]: r for r in read_metrics(workdir) if "train/loss" in r}


def env():
  return {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": str(REPO),
          "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def run_job(workdir, *extra, check=True):
  return subprocess.run([sys.executable, str(JOB), f"--workdir={workdir}", f"--steps={STEPS}",
                         *extra], env=env(), capture_output=True, text=True, timeout=300,
                        check=check)


def start_slow(workdir):
  return subprocess.Popen([sys.executable, str(JOB), f"--workdir={workdir}",
                           f"--steps={STEPS}", "--step_delay=0.3"], env=env(),
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(proc, workdir: pathlib.Path, step: int, timeout=240.0):
  deadline = time.monotonic() + timeout
  while time.monotonic() < deadline:
    assert proc.poll() is None, proc.communicate()[1][-3000:]
    if (workdir / "metrics.jsonl").exists() and any(
        s >= step for s in metrics_by_step(workdir)):
      return
    time.sleep(0.05)
  raise TimeoutError(f"step {step} not reached")


def steps_saved(workdir):
  return sorted(int(p.name) for p in (workdir / "checkpoints").iterdir() if p.name.isdigit())


def assert_same_run(resumed, reference):
  a, b = metrics_by_step(resumed), metrics_by_step(reference)
  assert sorted(a) == sorted(b) == list(range(1, STEPS + 1))
  assert [a[s]["train/batch_fingerprint"] for s in a] == [
      b[s]["train/batch_fingerprint"] for s in a]
  np.testing.assert_allclose([a[s]["train/loss"] for s in a], [b[s]["train/loss"] for s in a],
                             rtol=1e-6)


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
  """The uninterrupted run."""
  workdir = tmp_path_factory.mktemp("reference")
  run_job(workdir)
  return workdir


def test_kill_9_then_restart_repeats_the_same_run(tmp_path, reference):
  killed = tmp_path / "killed"
  proc = start_slow(killed)
  wait_for_step(proc, killed, 13)
  proc.send_signal(signal.SIGKILL)
  proc.wait()
  seen = max(metrics_by_step(killed))
  assert seen < STEPS
  restart_from = max(s for s in steps_saved(killed) if s <= seen)
  assert restart_from >= 10
  run_job(killed)
  # Steps after the last checkpoint ran twice (before the kill and after the restart); the
  # log's duplicates must agree with each other and with the uninterrupted run.
  lines = [l for l in (killed / "metrics.jsonl").read_text().splitlines() if "train/loss" in l]
  assert len(lines) > STEPS
  assert_same_run(killed, reference)


def test_sigterm_saves_the_step_reached_and_resumes(tmp_path, reference):
  stopped = tmp_path / "stopped"
  proc = start_slow(stopped)
  wait_for_step(proc, stopped, 7)
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 143, err[-3000:]
  assert "preempted (SIGTERM) at step" in err
  reached = max(metrics_by_step(stopped))
  assert steps_saved(stopped)[-1] == reached < STEPS   # saved where it stopped, not earlier
  run_job(stopped)
  assert_same_run(stopped, reference)
