"""The LM's numbers: text -> SID accuracy (constrained beam search from a title), SID -> text
title F1 (greedy generation of text tokens), next-item ranking, and periodic validation."""

from __future__ import annotations

import collections
import functools
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.decode.generative import pad_rows, recommend
from lrm.eval.metrics import retrieval_metrics
from lrm.jobs.common import sample_users
from lrm.jobs.lm.config import LMSpec
from lrm.jobs.lm.prepare import LMPrepared
from lrm.models.lm import SIDDecoder, greedy_generate
from lrm.tasks.lm_tasks import next_prompts, sid2text_prompts, text2sid_prompts
from lrm.tokens.joint_vocab import field_text

def decode_sids(model, prompts, trie, *, k: int, beam_size: int, batch_size: int):
  """Constrained beam search after each prompt: (item ids [m, k], their log-probabilities)."""
  if len(prompts) == 0:
    return np.zeros((0, k), np.int64), np.zeros((0, k), np.float32)
  rec = recommend(SIDDecoder(model), prompts.tokens, prompts.segment_ids > 0, trie,
                  beam_size=max(beam_size, k), top_k=k, batch_size=batch_size)
  return rec.items, rec.scores


def text2sid_accuracy(model, prep: LMPrepared, item_ids, *, beam_size: int,
                      batch_size: int) -> dict[str, float]:
  """Accuracy@1 / @10 of constrained text -> SID decoding from each item's title, with a few
  examples (the title, the title of the first decoded item)."""
  catalog = prep.dataset.catalog
  prompts = text2sid_prompts(catalog, prep.table, prep.vocab, item_ids, prep.tasks,
                             field="title")
  if len(prompts) == 0:
    return {"text2sid_acc@1": 0.0, "text2sid_acc@10": 0.0, "items": 0, "examples": []}
  items, _ = decode_sids(model, prompts, prep.trie, k=10, beam_size=beam_size,
                          batch_size=batch_size)
  hit = items == prompts.item_ids[:, None]
  titles = catalog.fields["title"]
  title = lambda item: field_text(titles[catalog.rows([item])[0]]) or "" if item >= 0 else ""
  examples = [{"item": int(item), "title": title(item), "decoded": int(top[0]),
               "decoded_title": title(top[0]), "hit": bool(top[0] == item)}
              for item, top in zip(prompts.item_ids[:5], items[:5])]
  return {"text2sid_acc@1": float(hit[:, :1].any(1).mean()),
          "text2sid_acc@10": float(hit.any(1).mean()), "items": int(len(prompts)),
          "examples": examples}


def next_item_ranking(model, prep: LMPrepared, eval_set, *, k: int, beam_size: int,
                      batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Top-k items per user of an EvalSet (constrained beam search), and the targets."""
  prompts = next_prompts(eval_set, prep.dataset.catalog, prep.table, prep.vocab, prep.tasks)
  items, _ = decode_sids(model, prompts, prep.trie, k=k, beam_size=beam_size,
                          batch_size=batch_size)
  return items, prompts.item_ids


def text_token_mask(vocab, vocab_size: int) -> np.ndarray:
  """What SID -> text may generate: the text tokenizer's ids, the field markers and eos (no
  padding, no SIDs, no task or other special tokens). Shape: -> bool [vocab_size]."""
  allowed = np.zeros(vocab_size, bool)
  allowed[:vocab.tokenizer_size] = True
  allowed[vocab.pad] = False
  allowed[[vocab.eos] + [vocab.field(f) for f in vocab.fields]] = True
  return allowed


@functools.partial(jax.jit, static_argnames=("graphdef", "num_tokens"))
def _greedy_batch(graphdef, params, prompt, valid, prefix, allowed, *, num_tokens: int):
  """One batch of `greedy_generate`; the graphdef is static and the params traced, so one
  compile serves every batch and checkpoint of an architecture (as lrm/decode/generative)."""
  return greedy_generate(nnx.merge(graphdef, params), prompt, valid, num_tokens,
                         prompt_prefix=prefix, allowed=allowed)


def greedy_text(model, prompts, allowed: np.ndarray, *, num_tokens: int,
                batch_size: int) -> np.ndarray:
  """Greedy generation of `num_tokens` allowed tokens (`text_token_mask`) after each prompt,
  in fixed-size batches (the last one padded: static shapes).

  Shape: prompts.tokens / segment_ids / prefix [m, P], allowed bool [v]
    -> int32 [m, num_tokens].
  """
  model.eval()
  graphdef, params = nnx.split(model)
  allowed = jnp.asarray(allowed, bool)
  m = len(prompts.tokens)
  valid = prompts.segment_ids > 0
  batch_size = max(1, min(batch_size, m))
  out = []
  for lo in range(0, m, batch_size):
    rows = slice(lo, lo + batch_size)
    batch = [jnp.asarray(pad_rows(np.asarray(x[rows]), batch_size))
             for x in (prompts.tokens, valid, prompts.prefix)]
    generated = _greedy_batch(graphdef, params, *batch, allowed, num_tokens=int(num_tokens))
    out.append(np.asarray(generated)[:min(batch_size, m - lo)])
  return np.concatenate(out) if out else np.zeros((0, num_tokens), np.int32)


def generated_title(vocab, ids: np.ndarray) -> str:
  """The text after <field:title> (up to the next marker or eos) of generated ids."""
  ids = np.asarray(ids, np.int64)
  stop = np.flatnonzero(ids == vocab.eos)
  ids = ids[:stop[0]] if len(stop) else ids
  marker = np.flatnonzero(ids == vocab.field("title")) if "title" in vocab.fields else []
  if not len(marker):
    return ""
  rest = ids[marker[0] + 1:]
  text = vocab.is_text(rest)
  end = int(np.argmin(text)) if not text.all() else len(rest)
  return vocab.decode_text(rest[:end]) if end else ""


def words(text: str) -> list[str]:
  return re.findall(r"\w+", text.lower())


def token_f1(predicted: str, reference: str) -> float:
  """Word-level F1 (lower-cased, SQuAD style): 2PR / (P + R) over the bag of words."""
  p, r = words(predicted), words(reference)
  common = sum((collections.Counter(p) & collections.Counter(r)).values())
  if not p or not r or not common:
    return 0.0
  precision, recall = common / len(p), common / len(r)
  return 2 * precision * recall / (precision + recall)


def sid2text_f1(model, prep: LMPrepared, item_ids, *, num_tokens: int,
                batch_size: int) -> dict[str, Any]:
  """Mean title token F1 of greedy SID -> text generation, with a few examples."""
  catalog = prep.dataset.catalog
  item_ids = np.asarray(item_ids, np.int64)
  if len(item_ids) == 0:
    return {"sid2text_f1": 0.0, "items": 0, "examples": []}
  prompts = sid2text_prompts(catalog, prep.table, prep.vocab, item_ids, prep.tasks)
  generated = greedy_text(model, prompts, text_token_mask(prep.vocab, model.config.vocab_size),
                          num_tokens=num_tokens, batch_size=batch_size)
  titles = catalog.fields["title"]
  rows = catalog.rows(prompts.item_ids)
  scores, examples = [], []
  for ids, r in zip(generated, rows):
    truth = field_text(titles[r]) or ""
    guess = generated_title(prep.vocab, ids)
    scores.append(token_f1(guess, truth))
    if len(examples) < 5:
      examples.append({"item": int(catalog.item_ids[r]), "title": truth, "generated": guess})
  return {"sid2text_f1": float(np.mean(scores)), "items": int(len(scores)),
          "examples": examples}


def make_evaluate_fn(spec: LMSpec, prep: LMPrepared, *, seed: int):
  """Periodic validation: next-item Recall/NDCG@K on `valid_users` users, text -> SID accuracy
  on the validation half of the held-out titles (keys prefixed `valid/`)."""
  ev = spec.eval
  users = sample_users(prep.split.valid, int(ev["valid_users"]), seed)

  def evaluate(model) -> dict[str, float]:
    out = {}
    ranked, targets = next_item_ranking(model, prep, users, k=max(spec.ks),
                                        beam_size=int(ev["beam_size"]),
                                        batch_size=int(ev["batch_size"]))
    out.update({f"valid/{k}": v for k, v in retrieval_metrics(ranked, targets, spec.ks).items()})
    if len(prep.text_valid):
      acc = text2sid_accuracy(model, prep, prep.text_valid, beam_size=int(ev["beam_size"]),
                              batch_size=int(ev["batch_size"]))
      out.update({f"valid/{k}": v for k, v in acc.items() if k not in ("items", "examples")})
    return out

  return evaluate
