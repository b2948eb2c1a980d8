"""Config helpers: argument parsing for config files, loading sibling configs, validation."""

from __future__ import annotations

import dataclasses
import importlib.util
import pathlib
from typing import Any, Mapping

import ml_collections

from lrm.core.errors import ConfigError


def parse_arg(arg: str | None, **defaults: Any) -> Any:
  """Parses `key=value,flag` config arguments (`--config=configs/base.py:runlocal`).

  A bare word sets a default to True; values are cast to the default's type.
  """
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


# Sections of a stage beyond the pipeline's (not in configs/base.py): `lrm lm`, `lrm rank` and
# `lrm replay` read them; the pipeline stages they run first never see them.
STAGE_SECTIONS = ("lm", "ranking", "replay")


def pipeline_config(config) -> ml_collections.ConfigDict:
  """The config without the stage sections (what lrm.jobs.stages validates and runs)."""
  return ml_collections.ConfigDict({k: v for k, v in config.to_dict().items()
                                    if k not in STAGE_SECTIONS})


def merged_section(config, name: str, defaults: ml_collections.ConfigDict
                   ) -> ml_collections.ConfigDict:
  """`config.<name>` merged over `defaults` (absent = the defaults); unknown fields raise
  ConfigError naming `<name>.<field>`."""
  given = config.get(name) if hasattr(config, "get") else None
  if given is not None:
    given = given.to_dict() if hasattr(given, "to_dict") else dict(given)
    check_known(given, defaults.to_dict(), prefix=f"{name}.")
    defaults.update(given)
  return defaults


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
