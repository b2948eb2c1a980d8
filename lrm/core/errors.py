"""Errors for bad input (each names the file and line, or the config field, at fault), and the
one clean stop a run can make (preemption)."""

from __future__ import annotations

import os
import pathlib


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


class Preempted(RuntimeError):
  """SIGTERM arrived: a checkpoint of `step` was saved; the same command resumes from it.

  Commands exit with PREEMPTED_EXIT_STATUS (128 + SIGTERM, what a shell reports for a
  process ended by SIGTERM) so schedulers and scripts can tell it from success and failure.
  """

  def __init__(self, step: int, directory: str | os.PathLike):
    self.step = int(step)
    self.directory = pathlib.Path(directory)
    super().__init__(f"preempted (SIGTERM) at step {step}: checkpoint saved in {directory}; "
                     f"run the same command again to resume")


PREEMPTED_EXIT_STATUS = 143
