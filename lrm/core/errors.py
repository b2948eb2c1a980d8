"""Errors for bad input: each names the file and line, or the config field, at fault."""

from __future__ import annotations

import os


class DataError(ValueError):
  """Malformed or inconsistent input data.

  The message starts with `file:line:` where a line is known, so editors and humans can jump
  to it.
  """

  def __init__(self, message: str, *, path: str | os.PathLike | None = None,
               line: int | None = None):
    self.path = None if path is None else os.fspath(path)
    self.line = line
    where = ""
    if self.path is not None:
      where = self.path + (f":{line}" if line is not None else "") + ": "
    super().__init__(where + message)


class ConfigError(ValueError):
  """A config field that is unknown, missing or has a bad value; names the dotted field."""

  def __init__(self, field: str, message: str):
    self.field = field
    super().__init__(f"config field '{field}': {message}")
