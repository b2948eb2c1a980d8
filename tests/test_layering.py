"""The layering rule (issue 25): each stage imports only itself and earlier stages, the library
never imports the CLI, and imports sit at module level, where tools and readers see them.

The order follows the data flow: core -> parallel -> data -> encoders -> sid -> tokens ->
tasks -> models -> train -> decode -> eval -> jobs -> cli. `core` (errors, config, artifacts)
and `parallel` (meshes, sharding rules) are foundations every stage may use; every job is in
lrm/jobs/.

Every file under lrm/ is parsed with `ast`: nothing is imported, so these tests are fast and a
violation is reported as file:line, not as an import cycle somewhere else.
"""

from __future__ import annotations

import ast
import os
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGE = REPO / "lrm"

# (layer, module prefixes), earliest first. A module is in the layer of its longest prefix.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("root", ("lrm",)),
    ("core", ("lrm.core",)),
    ("parallel", ("lrm.parallel",)),
    ("data", ("lrm.data",)),
    ("encoders", ("lrm.encoders",)),
    ("sid", ("lrm.sid",)),
    ("tokens", ("lrm.tokens",)),
    ("tasks", ("lrm.tasks",)),
    ("models", ("lrm.models",)),
    ("train", ("lrm.train",)),
    ("decode", ("lrm.decode",)),
    ("eval", ("lrm.eval",)),
    ("jobs", ("lrm.jobs",)),
    ("cli", ("lrm.cli",)),
)

# The only modules that may be imported inside a function: optional dependencies, outside
# pyproject's [project] dependencies, imported where they are needed so that lrm works without
# them. A declared dependency is imported at module level however slow its import (jax, grain,
# tensorboardX, tensorflow_datasets, ...): lrm imports jax anyway. lrm's own modules are never
# imported lazily.
OPTIONAL = {
    "matplotlib": "the `colab` extra: plots, for notebooks",
}


def _optional(module: str) -> bool:
  return any(module == name or module.startswith(name + ".") for name in OPTIONAL)


def _module_name(path: pathlib.Path) -> str:
  parts = list(path.relative_to(REPO).with_suffix("").parts)
  if parts[-1] == "__init__":
    parts.pop()
  return ".".join(parts)


def _layer(module: str) -> int | None:
  best, best_len = None, -1
  for index, (_, prefixes) in enumerate(LAYERS):
    for prefix in prefixes:
      if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
        best, best_len = index, len(prefix)
  if best == 0 and module != "lrm":
    return None  # a new top-level package or module: LAYERS must place it
  return best


def _is_module(name: str) -> bool:
  path = REPO.joinpath(*name.split("."))
  return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file() or path.is_dir()


def _sources() -> list[pathlib.Path]:
  return sorted(p for p in PACKAGE.rglob("*.py") if "__pycache__" not in p.parts)


def _imports(path: pathlib.Path):
  """(line, imported module, inside a function) for every import statement of the file.

  `from a import b` yields a.b where b is a module, else a; relative imports are resolved.
  """
  module = _module_name(path)
  package = module if path.name == "__init__.py" else module.rpartition(".")[0]

  def visit(node, in_function):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, ast.Import):
        for alias in child.names:
          yield child.lineno, alias.name, in_function
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ""
        if child.level:
          parent = package.split(".")[:len(package.split(".")) - child.level + 1]
          base = ".".join(parent + ([child.module] if child.module else []))
        for alias in child.names:
          full = f"{base}.{alias.name}"
          yield child.lineno, full if _is_module(full) else base, in_function
      yield from visit(child, in_function or isinstance(
          child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

  yield from visit(ast.parse(path.read_text(), filename=str(path)), False)


def test_every_module_has_a_layer():
  unplaced = [str(p.relative_to(REPO)) for p in _sources() if _layer(_module_name(p)) is None]
  assert not unplaced, f"modules outside every layer (add them to LAYERS): {unplaced}"


def test_no_module_imports_a_later_layer_or_the_cli():
  cli = next(i for i, (name, _) in enumerate(LAYERS) if name == "cli")
  problems = []
  for path in _sources():
    module = _module_name(path)
    own = _layer(module)
    if own is None:
      continue  # test_every_module_has_a_layer reports it
    for line, target, _ in _imports(path):
      if target != "lrm" and not target.startswith("lrm."):
        continue
      theirs = _layer(target)
      where = f"{path.relative_to(REPO)}:{line}"
      if theirs is None:
        problems.append(f"{where}: imports {target}, which is in no layer")
      elif theirs == cli and own != cli:
        problems.append(f"{where}: imports {target}: the library never imports the CLI")
      elif theirs > own:
        problems.append(f"{where}: imports {target} ({LAYERS[theirs][0]}), a later layer "
                        f"than {module} ({LAYERS[own][0]})")
  assert not problems, "layering violations:\n" + "\n".join(problems)


def test_imports_sit_at_module_level():
  problems = []
  for path in _sources():
    for line, target, in_function in _imports(path):
      if in_function and not _optional(target):
        problems.append(f"{path.relative_to(REPO)}:{line}: imports {target} inside a function")
  assert not problems, ("imports inside functions (move them to the top of the module; only "
                        f"the optional dependencies {sorted(OPTIONAL)} may be lazy):\n"
                        + "\n".join(problems))


def test_lazily_imported_packages_are_optional():
  """The allow-list holds optional packages only: no declared dependency may be lazy."""
  project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
  required = {re.match(r"[A-Za-z0-9._-]+", spec).group().lower().replace("-", "_")
              for spec in project["dependencies"]}
  lazy = {name for name in OPTIONAL if not name.startswith("lrm.")}
  assert not required & lazy, f"declared dependencies: {sorted(required & lazy)}"


def test_importing_the_library_starts_no_jax_backend():
  """The command line imports every job at module level, before it joins a multi-process job
  (`jax.distributed.initialize`) and before XLA_FLAGS is final: importing any module of the
  library (and of the command line, whose flags are defined only when a command runs) must
  not start a backend."""
  script = f"""
import importlib, pkgutil, sys
import lrm
from jax._src import xla_bridge
started = getattr(xla_bridge, "backends_are_initialized", None)
if started is None:
  sys.exit(77)  # a jax without this private helper: nothing to check with
optional = {sorted(n for n in OPTIONAL if not n.startswith("lrm."))!r}
for info in pkgutil.walk_packages(lrm.__path__, "lrm."):
  try:
    importlib.import_module(info.name)
  except ImportError as e:
    if (e.name or "").split(".")[0] not in optional:
      raise
  if started():
    sys.exit(f"importing {{info.name}} started a jax backend")
"""
  env = {**os.environ, "PYTHONPATH": os.pathsep.join(
      [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
  out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env,
                       cwd=REPO, timeout=300)
  if out.returncode == 77:
    pytest.skip("this jax has no xla_bridge.backends_are_initialized")
  assert out.returncode == 0, out.stderr[-3000:]
