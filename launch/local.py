#!/usr/bin/env python3
"""Starts N processes of one command on this machine, as one multi-process jax job.

    python launch/local.py --num_processes=2 -- lrm train --config=configs/base.py:runlocal

Each process gets LRM_COORDINATOR (localhost and a free port), LRM_NUM_PROCESSES and
LRM_PROCESS_ID, which `lrm.parallel.distributed.process_spec` reads. On CPU each process
also gets `--devices_per_process` host devices (XLA_FLAGS); with `--gpus_per_process` each gets
its own CUDA_VISIBLE_DEVICES slice. Process 0 prints to this terminal, the others to
`--log_dir/process_<i>.log`. If one process fails the others are stopped; SIGTERM and Ctrl-C
are passed on to every process (so a preempted job checkpoints). Exit status: the first
failure's, else 0. Standard library only: it runs before anything is installed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import signal
import socket
import subprocess
import sys
import time

from command_line import parse_with_command


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


def process_env(base: dict[str, str], index: int, args: argparse.Namespace,
                port: int) -> dict[str, str]:
  env = dict(base)
  env.update(LRM_COORDINATOR=f"localhost:{port}", LRM_NUM_PROCESSES=str(args.num_processes),
             LRM_PROCESS_ID=str(index))
  if args.devices_per_process:
    flags = [f for f in env.get("XLA_FLAGS", "").split()
             if not f.startswith("--xla_force_host_platform_device_count")]
    env["XLA_FLAGS"] = " ".join(
        flags + [f"--xla_force_host_platform_device_count={args.devices_per_process}"])
  if args.gpus_per_process:
    first = index * args.gpus_per_process
    env["CUDA_VISIBLE_DEVICES"] = ",".join(
        str(g) for g in range(first, first + args.gpus_per_process))
  return env


def parse(argv: list[str]) -> argparse.Namespace:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--num_processes", type=int, required=True)
  parser.add_argument("--port", type=int, default=0, help="coordinator port (0: a free one)")
  parser.add_argument("--devices_per_process", type=int, default=0,
                      help="CPU host devices per process (XLA_FLAGS); 0 leaves it alone")
  parser.add_argument("--gpus_per_process", type=int, default=0,
                      help="GPUs per process (CUDA_VISIBLE_DEVICES slices); 0 leaves it alone")
  parser.add_argument("--log_dir", default="launch_logs",
                      help="where processes 1..N-1 write process_<i>.log")
  parser.add_argument("--grace_s", type=float, default=30.0,
                      help="after one process fails, seconds before the others are killed")
  parser.add_argument("--dry_run", action="store_true",
                      help="print each process's environment and command; start nothing")
  args = parse_with_command(parser, argv)
  if args.num_processes < 1:
    parser.error(f"--num_processes must be >= 1, got {args.num_processes}")
  return args


def main(argv: list[str] | None = None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  port = args.port or free_port()
  envs = [process_env(dict(os.environ), i, args, port) for i in range(args.num_processes)]
  if args.dry_run:
    for i, env in enumerate(envs):
      changed = {k: v for k, v in env.items() if os.environ.get(k) != v}
      print(" ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(changed.items())),
            shlex.join(args.command))
    return 0
  os.makedirs(args.log_dir, exist_ok=True)
  procs, logs = [], []
  for i, env in enumerate(envs):
    out = None
    if i:
      out = open(os.path.join(args.log_dir, f"process_{i}.log"), "w")
      logs.append(out)
    procs.append(subprocess.Popen(args.command, env=env, stdout=out,
                                  stderr=subprocess.STDOUT if out else None))

  def forward(signum, frame):
    del frame
    for p in procs:
      if p.poll() is None:
        p.send_signal(signum)
  signal.signal(signal.SIGTERM, forward)
  signal.signal(signal.SIGINT, forward)

  status, stopped_at = 0, None
  try:
    while any(p.poll() is None for p in procs):
      failed = [p for p in procs if p.poll() not in (None, 0)]
      if failed and not status:
        status = failed[0].returncode
        stopped_at = time.monotonic()
        print(f"launch: process {procs.index(failed[0])} exited with {status}; stopping the "
              f"others (logs in {args.log_dir})", file=sys.stderr)
        for p in procs:
          if p.poll() is None:
            p.terminate()
      # Survivors may block in a collective with the dead process: kill them after a grace.
      if stopped_at is not None and time.monotonic() - stopped_at > args.grace_s:
        for p in procs:
          if p.poll() is None:
            p.kill()
      time.sleep(0.2)
  finally:
    for out in logs:
      out.close()
  return status or next((p.returncode for p in procs if p.returncode), 0)


if __name__ == "__main__":
  sys.exit(main())
