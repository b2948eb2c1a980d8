"""Config helpers: argument parsing for config files, loading sibling configs, validation."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
from typing import Any, Mapping

from lrm.core.errors import ConfigError


def parse_arg(arg: str | None, **defaults: Any) -> Any:
  """Parses `key=value,flag` config arguments (`--config=configs/base.py:runlocal`).

  A bare word sets a default to True; values are cast to the default's type.
  """
  import ml_collections
  out = dict(defaults)
  for item in filter(None, (arg or "").split(",")):
    key, _, value = item.partition("=")
    if key not in defaults:
      raise ConfigError(f"arg.{key}", f"unknown config argument; known: {sorted(defaults)}")
    if not value:
      out[key] = True
    elif isinstance(defaults[key], bool):
      out[key] = value.lower() in ("1", "true", "yes")
    else:
      out[key] = type(defaults[key])(value)
  return ml_collections.ConfigDict(out)


def load_config(path: str | pathlib.Path, arg: str | None = None):
  """Runs `get_config(arg)` of a config file (used by experiment configs to start from base)."""
  path = pathlib.Path(path)
  spec = importlib.util.spec_from_file_location(f"lrm_config_{path.stem}", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module.get_config(arg) if arg is not None else module.get_config()


def check_known(section: Mapping[str, Any], known: Mapping[str, Any], prefix: str = "") -> None:
  """Raises ConfigError for the first key of `section` that `known` (the defaults) lacks."""
  for key, value in section.items():
    name = f"{prefix}{key}"
    if key not in known:
      raise ConfigError(name, f"unknown field; known: {sorted(known)}")
    if isinstance(value, Mapping) and isinstance(known[key], Mapping):
      check_known(value, known[key], prefix=name + ".")


def section_fields(cls: type, section: Any, prefix: str) -> dict[str, Any]:
  """A config section (ConfigDict or mapping) as a dict of `cls`'s dataclass fields.

  Unknown keys raise ConfigError naming `prefix.key`, so a typo never silently falls back to a
  default.
  """
  d = dict(section.to_dict() if hasattr(section, "to_dict") else section)
  known = {f.name for f in dataclasses.fields(cls)}
  for k in d:
    if k not in known:
      raise ConfigError(f"{prefix}.{k}", f"unknown field; known: {sorted(known)}")
  return d


def dataclass_from_dict(cls: type, d: Any, where: str, *, required: tuple[str, ...] = ()) -> Any:
  """A config dataclass from a mapping or ConfigDict; errors name `where.field`, unknown and
  missing required keys included, and the dataclass's own checks are re-prefixed with `where`.
  """
  if hasattr(d, "to_dict"):
    d = d.to_dict()
  if not isinstance(d, Mapping):
    raise ConfigError(where, f"expected a mapping, got {type(d).__name__}")
  known = {f.name for f in dataclasses.fields(cls)}
  unknown = sorted(str(k) for k in d if k not in known)
  if unknown:
    raise ConfigError(f"{where}.{unknown[0]}", f"unknown field(s) {unknown}; "
                      f"known: {sorted(known)}")
  for name in required:
    if name not in d:
      raise ConfigError(f"{where}.{name}", "is required")
  try:
    return cls(**d)
  except ConfigError as e:
    message = str(e)[len(f"config field '{e.field}': "):]
    raise ConfigError(f"{where}.{e.field}", message) from None
