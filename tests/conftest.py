"""Shared fixtures. Tests run on CPU with 8 virtual devices so sharding is exercised."""

from __future__ import annotations

import fcntl
import os
import pathlib
import subprocess

# Before jax is imported anywhere: 8 host devices for mesh tests.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = pathlib.Path(os.environ.get("LRM_SHARED", REPO.parent / "shared"))


@pytest.fixture(scope="session")
def shared_dir() -> pathlib.Path:
  """`../shared` beside the project (datasets, golden files); skips where it is absent."""
  if not (SHARED / "data").is_dir():
    pytest.skip(f"no shared datasets at {SHARED}")
  return SHARED


@pytest.fixture(scope="session")
def shared_data(shared_dir) -> pathlib.Path:
  return shared_dir / "data"


@pytest.fixture(scope="session")
def minilm_path(shared_dir) -> pathlib.Path:
  """all-MiniLM-L6-v2 weights in Hugging Face layout, put in place by ../shared/tools/get-minilm."""
  env = os.environ.get("LRM_MINILM")
  if env:
    return pathlib.Path(env)
  tool = shared_dir / "tools" / "get-minilm"
  # One download at a time: pytest-xdist workers may ask for the weights together.
  lock = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
  lock.mkdir(parents=True, exist_ok=True)
  with open(lock / "lrm-get-minilm.lock", "w") as f:
    fcntl.flock(f, fcntl.LOCK_EX)
    out = subprocess.run([str(tool)], capture_output=True, text=True, check=True)
  return pathlib.Path(out.stdout.strip().splitlines()[-1])
