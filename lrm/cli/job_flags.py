"""Flags that put a command into a multi-process job (see lrm/parallel/distributed.py).

Without them a command reads LRM_COORDINATOR / LRM_NUM_PROCESSES / LRM_PROCESS_ID (set by
launch/local.py), else lets jax detect a TPU pod or SLURM job, else runs as one process.
"""

from __future__ import annotations

from absl import flags

from lrm.parallel import distributed

_COORDINATOR = flags.DEFINE_string("coordinator", None,
                                   "host:port of process 0 in a multi-process job")
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "processes in the job")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "this process's index in the job")


def join_job() -> None:
  """Joins the multi-process job the flags or environment describe (no-op for one process)."""
  distributed.initialize(distributed.process_spec(
      _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value))
