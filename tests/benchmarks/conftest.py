"""Benchmark scripts as modules, one fixture per script, for the tests of this folder.

Benchmark scripts define absl flags on the global FLAGS at import, and several share flag
names (`seeds`, `dataset`, ...): `load_benchmark` removes the flags a script added once the
test module that asked for it is done.
"""

from __future__ import annotations

import contextlib
import importlib.util
import pathlib

import pytest
from absl import flags

REPO = pathlib.Path(__file__).resolve().parents[2]


@contextlib.contextmanager
def load_benchmark(name: str):
  before = set(flags.FLAGS)
  spec = importlib.util.spec_from_file_location(f"benchmark_{name}",
                                                REPO / "benchmarks" / f"{name}.py")
  module = importlib.util.module_from_spec(spec)
  try:
    spec.loader.exec_module(module)
    yield module
  finally:
    for flag in set(flags.FLAGS) - before:
      delattr(flags.FLAGS, flag)


def run_main(module, argv: list[str]) -> None:
  """Calls a benchmark's `main` as absl's `app.run` would: flags parsed from `argv`, the rest
  passed on; the parse is undone afterwards unless FLAGS was already parsed."""
  was_parsed = flags.FLAGS.is_parsed()
  try:
    module.main(flags.FLAGS(argv))
  finally:
    if not was_parsed:
      flags.FLAGS.unparse_flags()


@pytest.fixture(scope="module")
def plum():
  with load_benchmark("plum_ablation") as module:
    yield module


@pytest.fixture(scope="module")
def ranking():
  with load_benchmark("ranking") as module:
    yield module


@pytest.fixture(scope="module")
def retrieval():
  with load_benchmark("retrieval") as module:
    yield module
