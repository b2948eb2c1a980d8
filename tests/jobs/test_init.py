"""The job registry (lrm/jobs/__init__.py): every job runs and evaluates a config in a workdir."""

import inspect

import pytest

from lrm import jobs
from lrm.core.errors import ConfigError


@pytest.mark.parametrize("name", sorted(jobs.JOBS))
def test_every_job_runs_and_evaluates_a_config_in_a_workdir(name):
  job = jobs.get(name)
  for entry in (job.run, job.evaluate):
    params = list(inspect.signature(entry).parameters.values())
    assert [p.name for p in params[:2]] == ["config", "workdir"], entry
    assert params[1].default is None                       # None: config.run_dir
    assert all(p.kind is p.KEYWORD_ONLY and p.default is not p.empty for p in params[2:])


def test_an_unknown_job_names_the_field_and_the_jobs():
  with pytest.raises(ConfigError, match=r"'job'.*'nope' is not one of \['finetune', 'lm'"):
    jobs.get("nope")
