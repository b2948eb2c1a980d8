"""Every default lives in the package (lrm/jobs/defaults.py); configs/ holds deltas over it and
`--config=NAME` finds configs/NAME.py."""

from __future__ import annotations

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

from lrm.cli.main import DEFAULTS_FILE, _resolve_config_names
from lrm.core.config import load_config
from lrm.core.errors import ConfigError
from lrm.jobs import defaults
from lrm.jobs.stages import default_config

REPO = pathlib.Path(__file__).resolve().parents[2]


def test_configs_base_is_the_package_defaults():
  assert load_config(REPO / "configs" / "base.py").to_dict() == defaults.get_config().to_dict()
  assert default_config().to_dict() == defaults.get_config().to_dict()
  local = defaults.get_config("runlocal")
  assert local.world.num_items < defaults.get_config().world.num_items


@pytest.mark.parametrize("job, sections", [("ranking", ("ranking", "replay")),
                                           ("replay", ("ranking", "replay")), ("lm", ("lm",)),
                                           ("pipeline", ("lm", "ranking"))])
def test_job_argument_adds_that_jobs_sections(job, sections):
  config = defaults.get_config(f"job={job}")
  assert config.job == job
  for name in sections:
    assert name in config
  assert "lm" not in defaults.get_config()


def test_unknown_job_argument_names_the_field():
  with pytest.raises(ConfigError, match="arg.job"):
    defaults.get_config("job=nope")


def test_the_library_reads_no_config_file_outside_the_package():
  outside = re.compile(r"parents\[\d\]\s*/\s*[\"']configs[\"']")
  for path in (REPO / "lrm").rglob("*.py"):
    assert not outside.search(path.read_text()), path


def test_config_names_resolve(monkeypatch):
  monkeypatch.chdir(REPO)
  assert _resolve_config_names(["--config=rpg_beauty:cpu", "--x=1"]) == [
      "--config=configs/rpg_beauty.py:cpu", "--x=1"]
  assert _resolve_config_names(["--config", "beauty"]) == ["--config", "configs/beauty.py"]
  assert _resolve_config_names(["--config=base:runlocal"]) == [f"--config={DEFAULTS_FILE}:runlocal"]
  assert _resolve_config_names(["--config=configs/beauty.py"]) == ["--config=configs/beauty.py"]
  with pytest.raises(ConfigError, match="no config named 'nope'"):
    _resolve_config_names(["--config=nope"])


def test_a_non_editable_install_has_its_defaults(tmp_path):
  """`pip install .` copies only the package; its commands still find every default."""
  site, elsewhere, source = tmp_path / "site", tmp_path / "elsewhere", tmp_path / "source"
  elsewhere.mkdir()
  # pip builds in the source tree: install from a copy, so the checkout gets no build/.
  shutil.copytree(REPO / "lrm", source / "lrm", ignore=shutil.ignore_patterns("__pycache__"))
  for name in ("pyproject.toml", "README.md"):
    shutil.copy(REPO / name, source / name)
  subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target",
                  str(site), str(source)], check=True, capture_output=True, timeout=600)
  env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu"}
  probe = ("import lrm, lrm.jobs.stages as s; c = s.default_config(); "
           "print(lrm.__file__, c.job, c.data.source)")
  out = subprocess.run([sys.executable, "-c", probe], cwd=elsewhere, env=env, text=True,
                       capture_output=True, check=True, timeout=300).stdout.split()
  assert out[0].startswith(str(site)) and out[1:] == ["retrieval", "synthetic"]
