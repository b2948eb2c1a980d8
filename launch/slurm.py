#!/usr/bin/env python3
"""Submits one command as a multi-node GPU job under SLURM (one process per GPU).

    python launch/slurm.py --nodes=2 --gpus_per_node=8 --time=24:00:00 -- \\
        lrm train --config=configs/beauty.py --workdir=/shared/runs/beauty

Writes a batch script and hands it to `sbatch` (`--dry_run` prints it instead). Inside, `srun`
starts nodes x gpus_per_node tasks; jax.distributed finds the coordinator, process count and
id from SLURM's variables (jax's SLURM cluster detection, which also gives each task the GPU
numbered by its SLURM_LOCALID).
SLURM sends SIGTERM `--grace_s` seconds before the time limit (and on preemption): lrm saves a
checkpoint and exits with 143, and the script requeues the job, which resumes from it. The run
directory must be on a filesystem every node shares. Standard library only.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from command_line import parse_with_command

PREEMPTED = 143


def batch_script(args: argparse.Namespace) -> str:
  tasks = args.gpus_per_node if args.gpus_per_node else 1
  lines = [
      "#!/bin/bash",
      f"#SBATCH --job-name={args.job_name}",
      f"#SBATCH --nodes={args.nodes}",
      f"#SBATCH --ntasks-per-node={tasks}",
      f"#SBATCH --cpus-per-task={args.cpus_per_task}",
      f"#SBATCH --time={args.time}",
      f"#SBATCH --output={args.log_dir}/%x-%j.out",
      # SIGTERM to every task before the limit: time to write a checkpoint.
      f"#SBATCH --signal=TERM@{args.grace_s}",
      "#SBATCH --requeue",
      "#SBATCH --open-mode=append",
  ]
  if args.gpus_per_node:
    lines.append(f"#SBATCH --gpus-per-node={args.gpus_per_node}")
  if args.partition:
    lines.append(f"#SBATCH --partition={args.partition}")
  if args.account:
    lines.append(f"#SBATCH --account={args.account}")
  lines += [f"#SBATCH {extra}" for extra in args.sbatch_arg]
  lines += [
      "set -uo pipefail",
      # lrm then lets jax.distributed read SLURM's variables.
      "export LRM_AUTO_DISTRIBUTED=1",
      f"cd {shlex.quote(args.chdir)}",
      args.setup if args.setup else ": # no setup",
      f"srun --kill-on-bad-exit=1 {shlex.join(args.command)}",
      "status=$?",
      f"if [ $status -eq {PREEMPTED} ]; then",
      "  echo \"lrm: preempted; requeueing $SLURM_JOB_ID to resume from the checkpoint\"",
      "  scontrol requeue \"$SLURM_JOB_ID\"",
      "fi",
      "exit $status",
  ]
  return "\n".join(lines) + "\n"


def parse(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--nodes", type=int, default=1)
  p.add_argument("--gpus_per_node", type=int, default=8, help="0 for CPU-only nodes")
  p.add_argument("--cpus_per_task", type=int, default=8)
  p.add_argument("--time", default="24:00:00")
  p.add_argument("--grace_s", type=int, default=120, help="SIGTERM this long before the limit")
  p.add_argument("--job_name", default="lrm")
  p.add_argument("--partition", default="")
  p.add_argument("--account", default="")
  p.add_argument("--log_dir", default="logs")
  p.add_argument("--chdir", default=".", help="directory the job runs in (the checkout)")
  p.add_argument("--setup", default=". .venv/bin/activate",
                 help="shell line run before srun (e.g. activate the environment)")
  p.add_argument("--sbatch_arg", action="append", default=[],
                 help="extra '#SBATCH' option, e.g. --sbatch_arg=--exclusive (repeatable)")
  p.add_argument("--dry_run", action="store_true", help="print the batch script; submit nothing")
  args = parse_with_command(p, argv)
  if args.nodes < 1 or args.gpus_per_node < 0:
    p.error("--nodes must be >= 1 and --gpus_per_node >= 0")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  script = batch_script(args)
  if args.dry_run:
    print(script, end="")
    return 0
  return subprocess.run(["sbatch"], input=script, text=True).returncode


if __name__ == "__main__":
  sys.exit(main())
