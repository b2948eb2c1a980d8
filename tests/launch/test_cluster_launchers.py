"""launch/slurm.py and launch/tpu_pod.py: what their dry runs would submit."""

import pathlib
import shlex
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[2]


def dry_run(script, *args):
  return subprocess.run([sys.executable, str(REPO / "launch" / script), "--dry_run", *args],
                        capture_output=True, text=True, check=True).stdout


def test_slurm_script_runs_one_task_per_gpu_and_requeues_on_preemption():
  out = dry_run("slurm.py", "--nodes=2", "--gpus_per_node=4", "--time=01:00:00",
                "--partition=gpu", "--", "lrm", "train", "--workdir=/shared/w")
  lines = out.splitlines()
  assert lines[0] == "#!/bin/bash"
  for expected in ("#SBATCH --nodes=2", "#SBATCH --ntasks-per-node=4",
                   "#SBATCH --gpus-per-node=4", "#SBATCH --time=01:00:00",
                   "#SBATCH --partition=gpu", "#SBATCH --signal=TERM@120",
                   "export LRM_AUTO_DISTRIBUTED=1",
                   "srun --kill-on-bad-exit=1 lrm train --workdir=/shared/w"):
    assert expected in lines, expected
  assert 'scontrol requeue "$SLURM_JOB_ID"' in out and "-eq 143" in out
  # The script is valid bash.
  subprocess.run(["bash", "-n"], input=out, text=True, check=True)


def test_tpu_pod_runs_the_command_on_every_worker():
  out = dry_run("tpu_pod.py", "--tpu=pod", "--zone=us-east5-a", "--project=p",
                "--copy=.", "--workdir=lrm", "--", "lrm", "train", "--workdir=gs://b/r")
  scp, ssh = [shlex.split(line) for line in out.strip().splitlines()]
  assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"] and "--worker=all" in scp
  assert ssh[:6] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh", "pod"]
  assert "--worker=all" in ssh and "--zone=us-east5-a" in ssh and "--project=p" in ssh
  remote = next(a for a in ssh if a.startswith("--command="))
  assert remote == ("--command=cd lrm && export LRM_AUTO_DISTRIBUTED=1 && "
                    "lrm train --workdir=gs://b/r")


def test_launchers_need_a_command():
  for script, args in (("slurm.py", []), ("tpu_pod.py", ["--tpu=t", "--zone=z"])):
    done = subprocess.run([sys.executable, str(REPO / "launch" / script), *args],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "no command" in done.stderr
