#!/usr/bin/env python3
"""Runs one command on every worker of a Cloud TPU VM pod slice (one process per host).

    python launch/tpu_pod.py --tpu=my-v5p-64 --zone=us-east5-a -- \\
        lrm train --config=configs/beauty.py --workdir=gs://bucket/runs/beauty

Uses `gcloud compute tpus tpu-vm ssh --worker=all`; `--dry_run` prints the gcloud command.
On TPU VMs jax.distributed detects the coordinator and the process index itself
(LRM_AUTO_DISTRIBUTED asks lrm to let it). `--setup` installs the checkout on each worker
first (`--copy` sends the local checkout with scp). The run directory must be shared (a GCS
bucket or a mounted filesystem). Maintenance events send SIGTERM: lrm saves a checkpoint and
exits 143; run the same command again to resume. Standard library only.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys

from command_line import parse_with_command


GCLOUD_TPU_VM = ["gcloud", "compute", "tpus", "tpu-vm"]


def commands(args: argparse.Namespace) -> list[list[str]]:
  where = [f"--zone={args.zone}"] + ([f"--project={args.project}"] if args.project else [])
  out = []
  if args.copy:
    out.append(GCLOUD_TPU_VM + ["scp", "--recurse", args.copy, f"{args.tpu}:{args.workdir}",
                                    "--worker=all", *where])
  remote = [f"cd {shlex.quote(args.workdir)}"]
  if args.setup:
    remote.append(args.setup)
  remote.append("export LRM_AUTO_DISTRIBUTED=1")
  remote.append(shlex.join(args.command))
  out.append(GCLOUD_TPU_VM + ["ssh", args.tpu, "--worker=all", *where,
                                  f"--command={' && '.join(remote)}"])
  return out


def parse(argv: list[str]) -> argparse.Namespace:
  p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  p.add_argument("--tpu", required=True, help="TPU VM name")
  p.add_argument("--zone", required=True)
  p.add_argument("--project", default="")
  p.add_argument("--workdir", default="lrm", help="checkout directory on each worker")
  p.add_argument("--copy", default="", help="local checkout to scp to every worker first")
  p.add_argument("--setup", default="",
                 help="shell run on each worker before the command, e.g. "
                      "\"python3 -m venv .venv && . .venv/bin/activate && pip install -e '.[tpu]'\"")
  p.add_argument("--dry_run", action="store_true", help="print the gcloud commands; run nothing")
  args = parse_with_command(p, argv)
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  for cmd in commands(args):
    if args.dry_run:
      print(shlex.join(cmd))
      continue
    status = subprocess.run(cmd).returncode
    if status:
      return status
  return 0


if __name__ == "__main__":
  sys.exit(main())
