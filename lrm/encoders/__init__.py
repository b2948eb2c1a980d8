"""Content encoders: item text -> embedding rows (the `encoders` stage).

- `SentenceEncoder` (sentence.py): a Flax port of a BERT sentence encoder (all-MiniLM-L6-v2 and
  other sentence-transformers BERT models) loading Hugging Face safetensors weights;
- `HashingEncoder` (hashing.py): a dependency-free fallback when no weights exist;
- `fusion.fuse` for several modalities, `byo.load_npy_embeddings` for precomputed ones.

`load_encoder(None)` or `load_encoder("hashing")` gives the fallback; any other string is a
model folder or a name found by `resolve.resolve_encoder` (never downloaded).
"""

from __future__ import annotations

import pathlib
from typing import Any, Protocol, Sequence, runtime_checkable

import numpy as np

from lrm.encoders.hashing import HashingEncoder
from lrm.encoders.resolve import resolve_encoder
from lrm.encoders.sentence import SentenceEncoder

HASHING = "hashing"


@runtime_checkable
class Encoder(Protocol):
  """What every text encoder offers."""

  name: str

  @property
  def dim(self) -> int: ...

  def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
             show_progress: bool = False) -> np.ndarray:
    """Shape: -> float32 [n, dim], L2-normalised rows, in input order."""
    ...

  def describe(self) -> dict[str, Any]:
    """For manifests: kind, name, path, dims, max_seq_length, dtype, ..."""
    ...


def load_encoder(name_or_path: str | None, **kwargs: Any) -> Encoder:
  """An encoder by name or path; None or "hashing" -> HashingEncoder(**kwargs).

  Otherwise the folder is resolved without the network (resolve.py) and loaded as a
  SentenceEncoder(**kwargs) (max_seq_length, batch_size, tokens_per_batch, dtype, mesh, ...).
  """
  if name_or_path is None or str(name_or_path).strip().lower() == HASHING:
    return HashingEncoder(**kwargs)
  path = resolve_encoder(name_or_path)
  given_a_folder = pathlib.Path(name_or_path).expanduser().is_dir()
  return SentenceEncoder(path, name=path.name if given_a_folder else str(name_or_path), **kwargs)


__all__ = ["Encoder", "HashingEncoder", "SentenceEncoder", "load_encoder", "resolve_encoder",
           "HASHING"]
