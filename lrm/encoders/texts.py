"""Input checks shared by every text encoder."""

from __future__ import annotations

from typing import Sequence

from lrm.core.errors import DataError


def check_texts(texts: Sequence[str]) -> list[str]:
  """The texts as a list; a lone str or a non-str element is a clear error, not n characters."""
  if isinstance(texts, str):
    raise DataError("encode() takes a sequence of texts, got a single str")
  out = list(texts)
  for i, t in enumerate(out):
    if not isinstance(t, str):
      raise DataError(f"text {i} is {type(t).__name__}, expected str")
  return out
