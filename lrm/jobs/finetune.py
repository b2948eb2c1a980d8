"""Contrastive fine-tuning of the sentence encoder as a stage (FLUID; lrm/encoders/contrastive.py).

Pairs from the dataset's leave-one-out *training part* (item-to-item co-consumption within a
window; with `pairs.cold_fraction`, the warm training part of a cold-start split instead) plus
text queries (Amazon: category path + brand; the synthetic world: its topic names), stage one
(projection alone), stage two (everything, lower learning rate). `run_finetune` writes

  W/checkpoints/   Orbax steps 1 (after `align`) and 2 (after `joint`): a rerun resumes there
  W/encoder/       the fine-tuned encoder (lrm.encoders.contrastive.load_finetuned reads it)
  W/embed/         embeddings.npy + item_ids.npy + manifest.json, the `embed` stage's format,
                   ready for `lrm sid --embeddings=W/embed/embeddings.npy`; its manifest names
                   the pairs (`embedding_info.pairs`), so a later stage can check for leakage

`lrm finetune` (`run`) and `lrm rank` with `ranking.content = "finetuned"` (lrm/jobs/ranking.py)
run it.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from typing import Any

import numpy as np
from flax import nnx

from lrm.core import artifacts
from lrm.core.config import check_known
from lrm.core.errors import ConfigError
from lrm.core.report import print_table
from lrm.data import read_dataset
from lrm.data.splits import leave_one_out, warm_leave_one_out
from lrm.data.synthetic import WorldConfig, make_world
from lrm.encoders import contrastive as C, pairs as pairs_lib
from lrm.encoders.resolve import resolve_encoder
from lrm.jobs import embed as embed_stage
from lrm.jobs.defaults import FINETUNE_PAIRS
from lrm.train.checkpoint import Checkpointer

KNOWN_SECTIONS = ("job", "data", "encoder", "fields", "pairs", "finetune")
# pairs.cold_fraction > 0: co-consumption from the warm training part of the cold-start split of
# that fraction and pairs.cold_seed (build_pairs).



def build_pairs(dataset, world=None, *, window: int, item_to_item: bool, queries: bool,
                cold_fraction: float = 0.0, cold_seed: int = 0):
  """The pair set of a dataset: co-consumption (training part) and/or text queries.

  `cold_fraction` > 0 reads co-consumption from the warm training part of the cold-start split
  (`warm_leave_one_out`) instead of plain leave-one-out: an encoder whose SIDs feed the
  cold-start ranker (benchmarks/ranking.py --content) must not learn from the cold items'
  interactions or the warm evaluation targets of that split (same fraction and seed).
  """
  parts = []
  if queries:
    if world is not None:
      parts.append(pairs_lib.topic_queries(world))
    else:
      parts.append(pairs_lib.category_brand_queries(dataset.catalog))
  if item_to_item:
    if not 0.0 <= cold_fraction < 1.0:
      raise ConfigError("pairs.cold_fraction", f"must be in [0, 1) (0 = off), got {cold_fraction}")
    split = (warm_leave_one_out(dataset.sequences, dataset.catalog, cold_fraction=cold_fraction,
                                seed=cold_seed) if cold_fraction
             else leave_one_out(dataset.sequences))
    parts.append(pairs_lib.co_consumption_pairs(split, dataset.catalog, window=window))
  if not parts:
    raise ConfigError("pairs", "needs item_to_item or queries (or both)")
  out = parts[0]
  for p in parts[1:]:
    out = pairs_lib.concat(out, p)
  return out


def run_finetune(config: Any, workdir: str | pathlib.Path, *,
                 show_progress: bool = True) -> dict[str, Any]:
  """Pairs -> two stages (checkpointed, resumable) -> W/encoder and W/embed. Returns a summary."""
  for key in config:
    if key not in KNOWN_SECTIONS:
      raise ConfigError(key, f"unknown section; known: {KNOWN_SECTIONS}")
  cfg = C.ContrastiveConfig.from_dict(config.finetune.to_dict())
  check_known(config.pairs.to_dict(), FINETUNE_PAIRS, prefix="pairs.")
  pairs_cfg = {**FINETUNE_PAIRS, **config.pairs.to_dict()}
  workdir = pathlib.Path(workdir)
  world = None
  if config.data == "synthetic":
    world = make_world(WorldConfig())
    dataset = world.dataset
  else:
    dataset = read_dataset(config.data)
  fields = tuple(config.fields)
  item_texts = dataset.catalog.text(fields)
  pairs = build_pairs(dataset, world, window=int(pairs_cfg["window"]),
                      item_to_item=bool(pairs_cfg["item_to_item"]),
                      queries=bool(pairs_cfg["queries"]),
                      cold_fraction=float(pairs_cfg["cold_fraction"]),
                      cold_seed=int(pairs_cfg["cold_seed"]))
  base = resolve_encoder(config.encoder, field="encoder")
  model, tokenizer = C.build(base, cfg)
  tokens = C.tokenize_pairs(tokenizer, pairs, item_texts, cfg.max_seq_length)
  history: dict[str, Any] = {"pairs": len(pairs), "queries": len(pairs.query_texts)}
  start = time.perf_counter()
  with Checkpointer(workdir / "checkpoints", keep_last=2, async_save=False) as ckpt:
    done = ckpt.latest_step() or 0
    if done:
      graphdef, abstract = nnx.split(nnx.eval_shape(lambda: C.build(base, cfg)[0]))
      state, _ = ckpt.restore(abstract)
      model = nnx.merge(graphdef, state)
    for i, stage in enumerate(C.STAGES, start=1):
      if i <= done:
        continue
      losses = C.train_stage(model, pairs, tokens, cfg, stage, show_progress=show_progress)
      history[f"{stage}_loss_first"] = float(losses[:10].mean()) if len(losses) else None
      history[f"{stage}_loss_last"] = float(losses[-10:].mean()) if len(losses) else None
      ckpt.save(i, nnx.state(model), extra={"stage": stage, "config": cfg.to_dict()})
  history["train_s"] = round(time.perf_counter() - start, 2)
  C.save_finetuned(model, base, workdir / "encoder", cfg=cfg, history=history)
  emb = C.embed_tokens(model, tokens.item_ids, tokens.item_mask)
  spec = embed_stage.EmbedSpec(encoder=str(workdir / "encoder"), fields=fields)
  info = {"modalities": {"text": {"encoder": C.load_finetuned(workdir / "encoder").describe(),
                                  "fields": list(fields), "dim": int(emb.shape[1])}},
          "quality": embed_stage.category_quality(dataset.catalog, emb),
          "pairs": pairs_cfg}
  embed_stage.write_embeddings(workdir / "embed", emb.astype(np.float32),
                               catalog=dataset.catalog, spec=dataclasses.replace(spec),
                               info=info, data_dir=None if world else str(config.data))
  history["quality"] = info["quality"]
  return history


def run(config, workdir=None) -> dict[str, Any]:
  """`run_finetune` into `workdir` (required: the config has no run_dir), then its table."""
  summary = run_finetune(config, _required(workdir))
  _print(summary, workdir)
  return summary


def evaluate(config, workdir=None) -> dict[str, Any]:
  """Prints what `run` recorded in `workdir` (pairs, losses, the embeddings' category quality)
  without training."""
  workdir = _required(workdir)
  summary = {**artifacts.read_manifest(workdir / "encoder")["history"],
             "quality": artifacts.read_manifest(workdir / "embed")["quality"]}
  _print(summary, workdir)
  return summary


def _required(workdir) -> pathlib.Path:
  if not workdir:
    raise ConfigError("workdir", "is required: the folder the fine-tuned encoder goes to")
  return pathlib.Path(workdir)


def _print(summary: dict[str, Any], workdir) -> None:
  print_table(["finetune", ""], [[k, v] for k, v in summary.items() if not isinstance(v, dict)]
              + [["embeddings", f"{workdir}/embed/embeddings.npy"]])
