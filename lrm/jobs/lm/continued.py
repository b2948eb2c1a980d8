"""Continued pretraining: a trained LM resumes on a grown catalog.

New items get SIDs from the fitted SID tokenizer (no refit), the vocabulary and the model grow
(new rows from prefix siblings, AdamW state carried), training continues on new data plus a
replay of old items' links, and freshness is measured every few steps on the new items.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import numpy as np
from flax import nnx

from lrm.core import artifacts
from lrm.core.errors import DataError
from lrm.eval.metrics import retrieval_metrics
from lrm.jobs.common import has_checkpoints, subset
from lrm.jobs.lm.config import LMSpec
from lrm.jobs.lm.metrics import next_item_ranking, text2sid_accuracy
from lrm.jobs.lm.prepare import LMPrepared, prepare
from lrm.jobs.lm.train import restore
from lrm.jobs.sid import assign_codes
from lrm.models.lm import LM, lm_loss, lm_rngs
from lrm.models.vocab_growth import grow_vocab
from lrm.tasks import lm_tasks as T
from lrm.train.checkpoint import Checkpointer
from lrm.train.trainer import train


def parent_keys(table, vocab) -> np.ndarray:
  """Each vocabulary id's parent-prefix key for `grow_vocab` (-1: not a SID token or unused):
  a level-l code's key is the prefix (codes of levels < l) of the first item using it, as one
  mixed-radix integer (level 0: 0)."""
  full = table.full_codes.astype(np.int64)
  sizes = np.asarray(vocab.codebook_sizes, np.int64)
  keys = np.full(vocab.padded_size, -1, np.int64)
  for level in range(vocab.num_levels):
    codes, first = np.unique(full[:, level], return_index=True)
    prefix = full[first, :level]
    key = np.zeros(len(first), np.int64)
    for c in range(level):
      key = key * sizes[c] + prefix[:, c]
    keys[vocab.level_slice(level).start + codes] = key
  return keys


def replay_rows(prep: LMPrepared, new_items: np.ndarray, *, replay_fraction: float,
                seed: int) -> tuple[dict[str, np.ndarray], Any]:
  """Packed rows for continued pretraining: every task on the grown data, links of new items
  only, plus a replay of old items' links (`replay_fraction` of all examples)."""
  catalog = prep.dataset.catalog
  old_items = np.setdiff1d(catalog.item_ids, new_items)
  fresh = T.build_examples(catalog, prep.table, prep.vocab, prep.split, prep.tasks,
                           holdout_items=np.concatenate([old_items, prep.text_holdout]))
  parts = [T.mix(fresh, prep.tasks.weights, seed=seed)]
  link_weights = {n: w for n, w in prep.tasks.weights.items()
                  if n in ("sid2text", "text2sid") and w > 0}
  count = int(round(len(parts[0]) * replay_fraction / (1.0 - replay_fraction)))
  if count and link_weights:
    old_cfg = dataclasses.replace(prep.tasks, weights=link_weights)
    replay = T.build_examples(catalog, prep.table, prep.vocab, prep.split, old_cfg,
                              holdout_items=np.concatenate([new_items, prep.text_holdout]))
    parts.append(T.mix(replay, link_weights, seed=seed + 1, num_examples=count))
  mixed = T.LMExamples.concat(parts)
  mixed = mixed.take(np.random.default_rng(seed).permutation(len(mixed)))
  return T.pack(mixed, row_length=prep.tasks.row_length, overflow=prep.tasks.overflow,
                open_rows=prep.tasks.open_rows)


def continue_pretraining(spec: LMSpec, *, old_dir: pathlib.Path, old_prep: LMPrepared,
                         new_dataset, new_embeddings: np.ndarray, sid_tokenizer,
                         out_dir: pathlib.Path, seed: int = 0, mesh=None) -> dict[str, Any]:
  """Resumes a trained LM (`old_dir`) on a grown catalog; returns the freshness report.

  New items (in `new_dataset` but not in the old SID table) get codes from the fitted SID
  tokenizer (`new_embeddings`: one row per `new_dataset.catalog` item, as the embed stage
  computes them); the SID table is extended (old rows unchanged), the vocabulary and the
  model grow (new rows start from prefix siblings, AdamW state carried), and training
  continues from the old step on the grown data (`replay_rows`) for `lm.continued.steps`
  steps at a constant rate. Every `eval_every` steps (and before the first): text -> SID
  accuracy on new items, next-item recall of test users whose target is a new item, and
  text -> SID on old items (forgetting). Written to out_dir/freshness.json.
  """
  co = spec.continued
  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  catalog = new_dataset.catalog
  emb = np.asarray(new_embeddings, np.float32)
  if emb.ndim != 2 or len(emb) != len(catalog):
    raise DataError(f"new_embeddings must have one row per new catalog item "
                    f"({len(catalog)}), got shape {emb.shape}")
  old_table, old_vocab = old_prep.table, old_prep.vocab
  is_new = ~np.isin(catalog.item_ids, old_table.item_ids)
  new_items = catalog.item_ids[is_new]
  if not len(new_items):
    raise DataError("the new catalog has no item the old SID table lacks")
  codes = assign_codes(sid_tokenizer, emb[is_new])
  table = old_table.extend(new_items, codes[:, :old_table.num_semantic_levels])
  vocab, old_to_new = old_vocab.extend_sid_levels(table.full_codebook_sizes)
  prep = prepare(spec, new_dataset, table, vocab, sid_id=old_prep.sid_id, seed=seed)
  # Held-out titles are chosen on the grown catalog; keep new items linked (they are the point).
  prep.text_valid = prep.text_valid[~np.isin(prep.text_valid, new_items)]
  prep.text_test = prep.text_test[~np.isin(prep.text_test, new_items)]

  old_model, old_opt, start_step = restore(spec, old_dir, old_vocab, seed=seed, step="latest")
  model, optimizer = grow_vocab(old_model, old_opt, old_to_new=old_to_new,
                                new_vocab_size=vocab.padded_size, sid_start=vocab.sid_offset,
                                codebook_sizes=vocab.codebook_sizes,
                                parents=parent_keys(table, vocab), seed=seed, mesh=mesh)
  train_cfg = {**spec.train, "num_steps": start_step + int(co["steps"]),
               "eval_every": int(co["eval_every"]), "checkpoint_every": int(co["eval_every"]),
               "learning_rate": float(co["learning_rate"]), "warmup_steps": 0,
               "decay": "constant", "patience": 0, "best_metric": "fresh/text2sid_acc@10",
               "batch_size": int(co["batch_size"]) or int(spec.train["batch_size"])}
  ckpt_dir = out_dir / "checkpoints"
  fresh_start = not has_checkpoints(out_dir)
  if fresh_start:
    # The grown state as the continued run's first checkpoint: the trainer resumes from it
    # with the AdamW moments and step count carried.
    with Checkpointer(ckpt_dir, best_metric=None) as ckpt:
      ckpt.save(start_step, nnx.state((model, optimizer), nnx.Not(nnx.RngState)), force=True)
    vocab.save(out_dir / "vocab")
    table.save(out_dir / "sid_table", config={"extended_from": str(old_dir)})
  else:
    model = LM(model.config, rngs=lm_rngs(seed))   # weights come from the checkpoint

  eval_items = np.sort(np.random.default_rng([seed, 9]).choice(
      new_items, min(len(new_items), int(co["eval_items"])), replace=False))
  old_sample = np.sort(np.random.default_rng([seed, 10]).choice(
      np.asarray(old_table.item_ids), min(len(old_table.item_ids), int(co["eval_items"])),
      replace=False))
  test = prep.split.test
  fresh_rows = np.flatnonzero(np.isin(test.targets, new_items))
  fresh_test = subset(test, fresh_rows) if len(fresh_rows) else None
  ev = spec.eval
  beam, batch = int(ev["beam_size"]), int(ev["batch_size"])

  def evaluate(m) -> dict[str, float]:
    new = text2sid_accuracy(m, prep, eval_items, beam_size=beam, batch_size=batch)
    old = text2sid_accuracy(m, prep, old_sample, beam_size=beam, batch_size=batch)
    metrics = {"fresh/text2sid_acc@1": new["text2sid_acc@1"],
               "fresh/text2sid_acc@10": new["text2sid_acc@10"],
               "old/text2sid_acc@10": old["text2sid_acc@10"]}
    if fresh_test is not None:
      ranked, targets = next_item_ranking(m, prep, fresh_test, k=10, beam_size=beam,
                                          batch_size=batch)
      r = retrieval_metrics(ranked, targets, (10,))
      metrics["fresh/next_recall@10"] = r["recall@10"]
    return metrics

  model.eval()
  before = {"step": start_step, **evaluate(model)} if fresh_start else None
  rows, stats = replay_rows(prep, new_items, replay_fraction=float(co["replay_fraction"]),
                            seed=seed)
  result = train(model, lm_loss, rows, config=train_cfg, workdir=out_dir, evaluate_fn=evaluate,
                 mesh=mesh, progress=False)
  history = ([before] if before else []) + result.history
  history = sorted({h["step"]: h for h in history}.values(), key=lambda h: h["step"])

  def first_step(key: str, bar: float) -> int | None:
    for h in history:
      if key in h and h[key] >= bar and h[key] > 0:
        return int(h["step"] - start_step)
    return None

  final = history[-1]
  freshness = {
      "start_step": start_step, "steps": int(co["steps"]), "new_items": int(len(new_items)),
      "old_items": int(old_table.num_items), "fresh_test_users": int(len(fresh_rows)),
      "old_vocab_size": old_vocab.padded_size, "new_vocab_size": vocab.padded_size,
      "codebook_sizes": list(vocab.codebook_sizes), "replay_rows": stats.num_rows,
      "steps_to_text2sid_threshold": first_step("fresh/text2sid_acc@10",
                                                float(co["threshold"])),
      "steps_to_half_final_text2sid": first_step(
          "fresh/text2sid_acc@10", 0.5 * final.get("fresh/text2sid_acc@10", 0.0)),
      "steps_to_half_final_next": first_step(
          "fresh/next_recall@10", 0.5 * final.get("fresh/next_recall@10", 0.0)),
      "history": history,
  }
  if jax.process_index() == 0:
    artifacts.atomic_write_json(out_dir / "freshness.json", freshness)
  return freshness
