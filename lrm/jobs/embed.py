"""The `embed` stage: catalog -> one float32 embedding row per item, in catalog order.

Modalities are `text` (the item's text fields through an encoder), `npy` (bring-your-own
embeddings from a file), `cooccurrence` (behaviour: an SVD of the co-consumption PMI of the
leave-one-out training part, lrm/encoders/cooccurrence.py) and any precomputed modality stored
with the catalog (e.g. the synthetic world's `visual` and `audio`). Several modalities are fused
(per-modality normalisation, then concatenation or a fixed projection).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import time
from typing import Any

import numpy as np

from lrm.core import artifacts
from lrm.core.config import section_fields
from lrm.core.errors import ConfigError, DataError
from lrm.data.splits import leave_one_out
from lrm.data.types import DEFAULT_TEXT_FIELDS, Catalog, Sequences
from lrm.encoders import byo, fusion, load_encoder
from lrm.encoders.cooccurrence import cooccurrence_embeddings
from lrm.encoders.quality import neighbour_label_agreement

EMBEDDINGS_FILE = "embeddings.npy"


@dataclasses.dataclass(frozen=True)
class EmbedSpec:
  """What to embed and how (the `embed` section of a config)."""
  encoder: str | None = None          # path or name of a sentence encoder; None -> hashing
  fields: tuple[str, ...] = DEFAULT_TEXT_FIELDS  # catalog text fields joined into one text
  modalities: tuple[str, ...] = ("text",)  # text | npy | cooccurrence | a catalog modality
  npy: str | None = None              # bring-your-own embeddings file (modality `npy`)
  cooccurrence_dim: int = 64          # cooccurrence: SVD dims of the co-consumption PPMI
  cooccurrence_window: int = 3        # cooccurrence: positions apart that count as co-consumed
  batch_size: int = 128               # sentences per encoder call
  fuse: str = "concat"                # concat | projection (when several modalities)
  fuse_dim: int = 0                   # output dim of the projection (0: sum of inputs)
  seed: int = 0                       # seed of the fixed projections

  def __post_init__(self):
    if not self.modalities:
      raise ConfigError("embed.modalities", "needs at least one modality")
    if "npy" in self.modalities and not self.npy:
      raise ConfigError("embed.npy", "modality 'npy' needs a file path")
    if self.batch_size <= 0:
      raise ConfigError("embed.batch_size", f"must be positive, got {self.batch_size}")
    if self.fuse not in ("concat", "projection"):
      raise ConfigError("embed.fuse", f"must be 'concat' or 'projection', got '{self.fuse}'")
    if self.fuse_dim < 0:
      raise ConfigError("embed.fuse_dim", f"must be >= 0, got {self.fuse_dim}")

  @classmethod
  def from_config(cls, cfg: Any) -> "EmbedSpec":
    """From a ConfigDict / dict section; unknown keys raise ConfigError naming them."""
    d = section_fields(cls, cfg, "embed")
    for k in ("fields", "modalities"):
      if k in d and isinstance(d[k], str):
        d[k] = tuple(s for s in d[k].split(",") if s)
      elif k in d:
        d[k] = tuple(d[k])
    d["encoder"] = d.get("encoder") or None
    d["npy"] = d.get("npy") or None
    return cls(**d)


def embed_catalog(catalog: Catalog, spec: EmbedSpec, *, encoder=None,
                  sequences: Sequences | None = None,
                  show_progress: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
  """Embeddings of every catalog item (float32 [n, d]) and a description for the manifest.

  Where the catalog has categories, the description also holds each input's and the output's
  nearest-neighbour leaf-category agreement (`quality`), a sanity check of meaning. The
  `cooccurrence` modality needs the interaction `sequences` (it reads their leave-one-out
  training part only).
  """
  parts: dict[str, np.ndarray] = {}
  info: dict[str, Any] = {"modalities": {}}
  for modality in spec.modalities:
    if modality == "text":
      if encoder is None:
        encoder = load_encoder(spec.encoder)
      texts = catalog.text(spec.fields)
      start = time.perf_counter()
      emb = encoder.encode(texts, batch_size=spec.batch_size, show_progress=show_progress)
      wall = time.perf_counter() - start
      info["modalities"]["text"] = {
          "encoder": encoder.describe(), "fields": list(spec.fields), "dim": int(emb.shape[1]),
          "wall_s": round(wall, 3), "items_per_s": round(len(texts) / max(wall, 1e-9), 1)}
    elif modality == "npy":
      emb = byo.load_npy_embeddings(spec.npy, len(catalog))
      info["modalities"]["npy"] = {"path": os.path.abspath(spec.npy), "dim": int(emb.shape[1])}
    elif modality == "cooccurrence":
      if sequences is None:
        raise ConfigError("embed.modalities", "modality 'cooccurrence' needs the dataset's "
                          "interaction sequences")
      start = time.perf_counter()
      emb = cooccurrence_embeddings(leave_one_out(sequences), catalog, dim=spec.cooccurrence_dim,
                                    window=spec.cooccurrence_window, seed=spec.seed)
      info["modalities"]["cooccurrence"] = {
          "dim": int(emb.shape[1]), "window": spec.cooccurrence_window,
          "items_with_signal": int((np.abs(emb).sum(axis=1) > 0).sum()),
          "wall_s": round(time.perf_counter() - start, 3)}
    elif modality in catalog.embeddings:
      emb = catalog.embeddings[modality]
      info["modalities"][modality] = {"source": "catalog", "dim": int(emb.shape[1])}
    else:
      raise ConfigError("embed.modalities", f"unknown modality '{modality}': use text, npy, "
                        f"cooccurrence or one of the catalog's {sorted(catalog.embeddings)}")
    parts[modality] = np.asarray(emb, np.float32)
    info["modalities"][modality]["quality"] = category_quality(catalog, parts[modality])
  if len(parts) == 1:
    (out,) = parts.values()
  else:
    out = fusion.fuse(parts, method=spec.fuse, dim=spec.fuse_dim or None, seed=spec.seed)
    info["fusion"] = {"method": spec.fuse, "dim": int(out.shape[1]), "inputs": list(parts)}
  if out.shape[0] != len(catalog) or not np.isfinite(out).all():
    raise DataError(f"embedding produced shape {out.shape} or non-finite values for "
                    f"{len(catalog)} items")
  info["quality"] = (category_quality(catalog, out) if len(parts) > 1
                     else info["modalities"][spec.modalities[0]]["quality"])
  return out.astype(np.float32), info


def category_quality(catalog: Catalog, embeddings: np.ndarray) -> dict[str, float] | None:
  """Nearest-neighbour leaf-category agreement, where the catalog has categories."""
  if "categories" not in catalog.fields:
    return None
  labels = catalog.leaf_category("categories")
  if (labels >= 0).sum() < 2:
    return None
  return neighbour_label_agreement(embeddings, labels)


def write_embeddings(out_dir: str | os.PathLike, embeddings: np.ndarray, *,
                     catalog: Catalog, spec: EmbedSpec, info: dict[str, Any],
                     data_dir: str | None = None, inputs: Any = None) -> dict[str, Any]:
  """Writes OUT/embeddings.npy (and item_ids.npy), then OUT/manifest.json last."""
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  # A stale manifest must not vouch for new, half-written files.
  (out_dir / artifacts.MANIFEST).unlink(missing_ok=True)
  artifacts.save_npy(out_dir / EMBEDDINGS_FILE, embeddings.astype(np.float32))
  artifacts.save_npy(out_dir / "item_ids.npy", catalog.item_ids)
  return artifacts.write_manifest(
      out_dir, stage="embed", config=dataclasses.asdict(spec),
      counts={"items": int(embeddings.shape[0]), "dim": int(embeddings.shape[1])},
      data=None if data_dir is None else os.path.abspath(data_dir),
      encoder=info.get("modalities", {}).get("text", {}).get("encoder", {"kind": "none"}),
      fallback_encoder_used=(info.get("modalities", {}).get("text", {})
                             .get("encoder", {}).get("kind") == "hashing"),
      embedding_info=info, quality=info.get("quality"), inputs=inputs)


def is_complete(out_dir: str | os.PathLike, spec: EmbedSpec, inputs: Any = None) -> bool:
  """`artifacts.is_complete` for an embed artifact of `spec`, counting one written before some
  fields existed when `spec` holds their defaults (it embeds the same)."""
  return artifacts.is_complete(out_dir, dataclasses.asdict(spec), inputs,
                               defaults=dataclasses.asdict(EmbedSpec()))


def read_embeddings(out_dir: str | os.PathLike, *, num_items: int | None = None) -> np.ndarray:
  """Loads a completed embed artifact (manifest present), checking its row count."""
  out_dir = pathlib.Path(out_dir)
  manifest = artifacts.read_manifest(out_dir)
  expected = manifest["counts"]["items"] if num_items is None else num_items
  return byo.load_npy_embeddings(out_dir / EMBEDDINGS_FILE, expected)


def describe_quality(quality: dict | None) -> str:
  if not quality:
    return "n/a (no categories)"
  return (f"{quality['nn_label_agreement']:.3f} nearest neighbours share the leaf category "
          f"(chance {quality['chance']:.3f}, {quality['items_scored']} items)")

