"""What the LM stage reads: the joint vocabulary (built once per SID artifact), the splits with
held-out titles and cold items, the packed training rows, and the model."""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any

import jax
import numpy as np

from lrm.core import artifacts
from lrm.core.errors import ConfigError
from lrm.data.splits import cold_start_split, leave_one_out
from lrm.jobs.lm.config import MODEL_SIZE_FIELDS, LMSpec, bare_message
from lrm.models.hf_loader import load_hf_lm, read_hf_config
from lrm.models.lm import LM, LM_SIZES, LMConfig, lm_rngs
from lrm.parallel.rules import sharding_context
from lrm.sid.trie import trie_from_table
from lrm.tasks import lm_tasks as T
from lrm.tokens.joint_vocab import JointVocab, field_text, make_joint_vocab

@dataclasses.dataclass
class LMPrepared:
  """What the LM stage reads, derived from the dataset, the SID table and the vocabulary."""
  dataset: Any
  split: Any                   # LeaveOneOut over the training sequences (cold items removed)
  table: Any                   # SIDTable
  vocab: Any                   # JointVocab
  trie: Any                    # SIDTrie over the table's full codes
  tasks: Any                   # LMTaskConfig
  text_valid: np.ndarray       # held-out item ids (no link examples): validation ...
  text_test: np.ndarray        # ... and test of text -> SID / SID -> text
  cold: Any = None             # ColdStartSplit or None
  sid_id: str = ""

  @property
  def text_holdout(self) -> np.ndarray:
    return np.concatenate([self.text_valid, self.text_test])


def build_vocab(spec: LMSpec, catalog, table):
  """The JointVocab of the config (an HF checkpoint's tokenizer when `init_from` is set)."""
  v = spec.vocab
  text_tokenizer, text_rows = v["text_tokenizer"], None
  if spec.init_from:
    if text_tokenizer == "bpe":
      text_tokenizer = spec.init_from
    text_rows = int(read_hf_config(spec.init_from).get("vocab_size", 0)) or None
  try:
    return make_joint_vocab(catalog, table.full_codebook_sizes, text_tokenizer=text_tokenizer,
                            bpe_vocab_size=int(v["bpe_vocab_size"]),
                            bpe_min_frequency=int(v["bpe_min_frequency"]),
                            num_sentinels=int(v["num_sentinels"]),
                            fields=tuple(spec.tasks.text_fields),
                            pad_id=None if int(v["pad_id"]) < 0 else int(v["pad_id"]),
                            text_rows=text_rows)
  except ConfigError as e:
    raise ConfigError("lm.vocab." + e.field, bare_message(e)) from None


def vocab_stage(spec: LMSpec, run_dir: pathlib.Path, catalog, table, sid_id: str):
  """Builds and saves run_dir/lm/vocab, or loads it when complete for this config and SIDs."""
  out = pathlib.Path(run_dir) / "lm" / "vocab"
  stage_config = {"vocab": spec.vocab, "init_from": spec.init_from,
                  "fields": list(spec.tasks.text_fields)}
  inputs = {"sid": sid_id}
  if artifacts.is_complete(out, stage_config, inputs):
    return JointVocab.load(out)
  vocab = build_vocab(spec, catalog, table)
  if jax.process_index() == 0:
    (out / artifacts.MANIFEST).unlink(missing_ok=True)
    vocab.save(out)
    artifacts.write_manifest(out, stage="lm/vocab", config=stage_config, inputs=inputs,
                             counts={"size": vocab.size, "padded_size": vocab.padded_size,
                                     "text_size": vocab.text_size, "pad": vocab.pad})
  return vocab


def prepare(spec: LMSpec, dataset, table, vocab, *, sid_id: str = "",
            seed: int = 0) -> LMPrepared:
  """Splits, held-out titles and cold items (all from `seed`), the trie."""
  catalog = dataset.catalog
  if not np.isin(catalog.item_ids, table.item_ids).all():
    raise ConfigError("sid", "the SID table does not cover the catalog; refit it")
  sequences, cold = dataset.sequences, None
  cs = spec.cold_start
  if float(cs["fraction"]) > 0:
    cold = cold_start_split(sequences, catalog, fraction=float(cs["fraction"]),
                            seed=int(cs["seed"]), by=cs["by"])
    sequences = cold.train
  split = leave_one_out(sequences)
  titles = catalog.fields.get("title")
  n = int(spec.eval["text_holdout"])
  with_title = np.array([], np.int64) if titles is None else catalog.item_ids[
      np.array([field_text(t) is not None for t in titles], bool)]
  if cold is not None:   # cold items are for the cold-start numbers, keep them linked
    with_title = with_title[~np.isin(with_title, cold.cold_items)]
  n = min(n, len(with_title))
  chosen = np.random.default_rng([seed, 17]).choice(with_title, n, replace=False) \
      if n else np.zeros(0, np.int64)
  return LMPrepared(dataset=dataset, split=split, table=table, vocab=vocab,
                    trie=trie_from_table(table), tasks=spec.tasks,
                    text_valid=np.sort(chosen[:n // 2]), text_test=np.sort(chosen[n // 2:]),
                    cold=cold, sid_id=sid_id)


def training_rows(prep: LMPrepared) -> tuple[dict[str, np.ndarray], Any]:
  """Packed rows of the weighted task mix (held-out titles kept out of the linking tasks)."""
  return T.training_rows(prep.dataset.catalog, prep.table, prep.vocab, prep.split, prep.tasks,
              holdout_items=prep.text_holdout)


def model_config(spec: LMSpec, vocab):
  """The LMConfig of the `lm` section over `vocab` (not for `init_from`)."""
  m = dict(spec.model)
  fields = dict(LM_SIZES[spec.size]) if spec.size else {}
  fields.update({k: int(m[k]) for k in MODEL_SIZE_FIELDS if int(m[k]) > 0})
  fields.update(rope_theta=float(m["rope_theta"]), tie_embeddings=bool(m["tie_embeddings"]),
                init_std=float(m["init_std"]), dtype=m["dtype"],
                attention_impl=m["attention_impl"] or None, remat=bool(m["remat"]),
                dropout=float(m["dropout"]))
  try:
    return LMConfig(vocab_size=vocab.padded_size, sid_start=vocab.sid_offset,
                    codebook_sizes=vocab.codebook_sizes, **fields)
  except ConfigError as e:
    raise ConfigError("lm." + e.field, bare_message(e)) from None


def build_model(spec: LMSpec, vocab, *, seed: int, mesh=None):
  """A fresh LM, or the HF checkpoint `init_from` with SID rows appended."""
  if spec.init_from:
    m = spec.model
    return load_hf_lm(spec.init_from, codebook_sizes=vocab.codebook_sizes,
                      sid_start=vocab.sid_offset, vocab_size=vocab.padded_size,
                      noise_scale=float(spec.init_noise_scale), seed=seed, mesh=mesh,
                      dtype=m["dtype"], attention_impl=m["attention_impl"] or None,
                      remat=bool(m["remat"]))
  cfg = model_config(spec, vocab)
  with sharding_context(mesh):
    return LM(cfg, rngs=lm_rngs(seed))
