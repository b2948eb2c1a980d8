"""Where a process sits in a multi-process job: flags, LRM_* variables, cluster detection."""

import pytest

from lrm.core.errors import ConfigError
from lrm.parallel.distributed import ProcessSpec, initialize, process_spec


def test_single_process_by_default():
  assert process_spec(environ={}) is None
  assert process_spec(environ={"SLURM_JOB_ID": "7", "SLURM_NTASKS": "1"}) is None
  initialize(None)   # a no-op


def test_flags_win_over_the_environment():
  env = {"LRM_COORDINATOR": "h:1", "LRM_NUM_PROCESSES": "4", "LRM_PROCESS_ID": "3"}
  assert process_spec("a:2", 2, 1, environ=env) == ProcessSpec("a:2", 2, 1)
  assert process_spec(environ=env) == ProcessSpec("h:1", 4, 3)


def test_cluster_detection_is_left_to_jax():
  assert process_spec(environ={"LRM_AUTO_DISTRIBUTED": "1"}) == ProcessSpec()
  assert process_spec(environ={"SLURM_NTASKS": "16"}) == ProcessSpec()
  assert not ProcessSpec().explicit


@pytest.mark.parametrize("args, env, field", [
    (("a:1", None, 0), {}, "--num_processes"),
    ((None, None, None), {"LRM_COORDINATOR": "h:1", "LRM_NUM_PROCESSES": "2"},
     "LRM_PROCESS_ID"),
    (("a:1", 2, 2), {}, "--process_id"),
    (("a:1", 0, 0), {}, "--num_processes"),
    (("nohostport", 2, 0), {}, "--coordinator"),
    ((None, None, None), {"LRM_COORDINATOR": "h:1", "LRM_NUM_PROCESSES": "two",
                          "LRM_PROCESS_ID": "0"}, "LRM_NUM_PROCESSES"),
])
def test_bad_layouts_name_the_flag_or_variable(args, env, field):
  with pytest.raises(ConfigError, match=field):
    process_spec(*args, environ=env)
