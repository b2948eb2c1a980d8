"""Multi-host start-up: `jax.distributed.initialize` from flags or the environment.

One process per host (or per GPU under SLURM) runs the same program. What each needs is the
coordinator's address, the number of processes and its own index; they come from, in order:

1. explicit arguments (the `--coordinator`, `--num_processes`, `--process_id` flags);
2. the `LRM_COORDINATOR`, `LRM_NUM_PROCESSES`, `LRM_PROCESS_ID` variables (what
   `launch/local.py` sets for each process it starts);
3. jax's own cluster detection (TPU pods, SLURM, Open MPI), by calling `initialize()` with no
   arguments, when `LRM_AUTO_DISTRIBUTED=1` (what launch/slurm.py and launch/tpu_pod.py set)
   or a SLURM / Open MPI job of several tasks is detected.

Nothing happens for a single process: a laptop or one GPU never needs a coordinator.

On CPU, cross-process collectives need gloo (`jax_cpu_collectives_implementation`), which
must be chosen before the backend starts; `initialize` does that when the platform is CPU.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Mapping

import jax

from lrm.core.errors import ConfigError

ENV_COORDINATOR = "LRM_COORDINATOR"
ENV_NUM_PROCESSES = "LRM_NUM_PROCESSES"
ENV_PROCESS_ID = "LRM_PROCESS_ID"
ENV_AUTO = "LRM_AUTO_DISTRIBUTED"
# Task counts of schedulers jax detects by itself (a single-task allocation is one process).
_TASK_COUNTS = ("SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE")


@dataclasses.dataclass(frozen=True)
class ProcessSpec:
  """Where this process sits in a multi-process job (all None: let jax detect the cluster)."""
  coordinator: str | None = None
  num_processes: int | None = None
  process_id: int | None = None

  @property
  def explicit(self) -> bool:
    return self.coordinator is not None


def process_spec(coordinator: str | None = None, num_processes: int | None = None,
                 process_id: int | None = None,
                 environ: Mapping[str, str] | None = None) -> ProcessSpec | None:
  """The job's process layout from arguments, else LRM_* variables; None for one process.

  Returns a spec with only None fields where jax should detect the cluster itself.

  Raises:
    ConfigError: a partial or inconsistent layout (names the flag or variable).
  """
  env = os.environ if environ is None else environ
  where = "flags"
  if coordinator is None and num_processes is None and process_id is None:
    coordinator = env.get(ENV_COORDINATOR) or None
    num_processes = env.get(ENV_NUM_PROCESSES) or None
    process_id = env.get(ENV_PROCESS_ID) or None
    where = "environment"
  if coordinator is None and num_processes is None and process_id is None:
    several = any(env.get(k, "1").isdigit() and int(env.get(k, "1")) > 1 for k in _TASK_COUNTS)
    if env.get(ENV_AUTO) == "1" or several:
      return ProcessSpec()
    return None
  names = ({"coordinator": "--coordinator", "num_processes": "--num_processes",
            "process_id": "--process_id"} if where == "flags" else
           {"coordinator": ENV_COORDINATOR, "num_processes": ENV_NUM_PROCESSES,
            "process_id": ENV_PROCESS_ID})
  given = {"coordinator": coordinator, "num_processes": num_processes, "process_id": process_id}
  missing = [names[k] for k, v in given.items() if v is None]
  if missing:
    raise ConfigError(missing[0], f"a multi-process job needs all of {sorted(names.values())}; "
                      f"{', '.join(missing)} not set")
  try:
    count, index = int(num_processes), int(process_id)
  except ValueError as e:
    raise ConfigError(names["num_processes"], f"process count and id must be integers ({e})")
  if count < 1:
    raise ConfigError(names["num_processes"], f"must be >= 1, got {count}")
  if not 0 <= index < count:
    raise ConfigError(names["process_id"], f"must be in [0, {count}), got {index}")
  if ":" not in str(coordinator):
    raise ConfigError(names["coordinator"], f"must be host:port, got {coordinator!r}")
  return ProcessSpec(str(coordinator), count, index)


def initialize(spec: ProcessSpec | None) -> None:
  """Joins the multi-process job described by `spec` (no-op for None or one process).

  Must run before anything touches a jax backend (devices, arrays).
  """
  if spec is None or (spec.explicit and spec.num_processes == 1):
    return
  platforms = os.environ.get("JAX_PLATFORMS", "") or str(jax.config.jax_platforms or "")
  if platforms.split(",")[0] == "cpu":
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  if spec.explicit:
    jax.distributed.initialize(coordinator_address=spec.coordinator,
                               num_processes=spec.num_processes, process_id=spec.process_id)
  else:
    jax.distributed.initialize()


def is_primary() -> bool:
  """True on the process that logs and writes shared artifacts (process 0)."""
  return jax.process_index() == 0
