"""A tiny random BERT sentence encoder on disk, in Hugging Face layout, for tests and demos.

`write_tiny_bert(dir)` writes config.json, model.safetensors (HF tensor names, Linear weights
[out, in]), tokenizer.json (a small lower-casing WordPiece vocabulary: letters, digits,
punctuation and a few words), sentence_bert_config.json and 1_Pooling/config.json: a folder
`SentenceEncoder` loads in well under a second, with the same code path as a real model.
"""

from __future__ import annotations

import json
import os
import pathlib
import string
from typing import Any

import numpy as np
from safetensors.numpy import save_file
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_WORDS = ("nail", "polish", "red", "blue", "cream", "face", "eye", "shadow", "makeup", "skin",
          "care", "the", "and", "of", "for", "with", "hair", "brush", "lip", "gloss")


def tiny_vocab() -> dict[str, int]:
  """Special tokens, words, single characters and their `##` continuations, then padding."""
  chars = string.ascii_lowercase + string.digits + string.punctuation
  tokens = list(dict.fromkeys(list(SPECIAL_TOKENS) + list(_WORDS) + list(chars)
                              + ["##" + c for c in chars]))
  # Pad to a multiple of 8 (as real vocabularies are), so `vocab` shards over small meshes.
  tokens += [f"[unused{i}]" for i in range(-len(tokens) % 8)]
  return {t: i for i, t in enumerate(tokens)}


def write_tokenizer(path: str | os.PathLike, vocab: dict[str, int]) -> None:
  """A BERT-style WordPiece tokenizer.json ([CLS] text [SEP], lower-cased)."""
  tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
  tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
  tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
  tokenizer.post_processor = processors.TemplateProcessing(
      single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
      special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
  tokenizer.save(str(path))


def tiny_bert_config(vocab_size: int, *, hidden_size: int = 16, num_layers: int = 2,
                     num_heads: int = 2, intermediate_size: int = 32,
                     max_position_embeddings: int = 64) -> dict[str, Any]:
  return {
      "architectures": ["BertModel"], "model_type": "bert", "vocab_size": vocab_size,
      "hidden_size": hidden_size, "num_hidden_layers": num_layers,
      "num_attention_heads": num_heads, "intermediate_size": intermediate_size,
      "hidden_act": "gelu", "max_position_embeddings": max_position_embeddings,
      "type_vocab_size": 2, "layer_norm_eps": 1e-12, "pad_token_id": 0,
      "position_embedding_type": "absolute",
  }


def random_bert_tensors(config: dict[str, Any], *, seed: int = 0,
                        prefix: str = "") -> dict[str, np.ndarray]:
  """Random float32 tensors under Hugging Face BertModel names (plus a pooler)."""
  rng = np.random.default_rng(seed)
  d, m = config["hidden_size"], config["intermediate_size"]
  normal = lambda *shape: (rng.standard_normal(shape) * 0.2).astype(np.float32)
  # LayerNorm scales near 1 and non-zero biases, so a wrong mapping shows in the outputs.
  scale = lambda: (1.0 + 0.1 * rng.standard_normal(d)).astype(np.float32)
  t = {
      "embeddings.word_embeddings.weight": normal(config["vocab_size"], d),
      "embeddings.position_embeddings.weight": normal(config["max_position_embeddings"], d),
      "embeddings.token_type_embeddings.weight": normal(config["type_vocab_size"], d),
      "embeddings.LayerNorm.weight": scale(),
      "embeddings.LayerNorm.bias": normal(d),
      "pooler.dense.weight": normal(d, d),
      "pooler.dense.bias": normal(d),
  }
  for i in range(config["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    for name in ("query", "key", "value"):
      t[p + f"attention.self.{name}.weight"] = normal(d, d)
      t[p + f"attention.self.{name}.bias"] = normal(d)
    t[p + "attention.output.dense.weight"] = normal(d, d)
    t[p + "attention.output.dense.bias"] = normal(d)
    t[p + "attention.output.LayerNorm.weight"] = scale()
    t[p + "attention.output.LayerNorm.bias"] = normal(d)
    t[p + "intermediate.dense.weight"] = normal(m, d)
    t[p + "intermediate.dense.bias"] = normal(m)
    t[p + "output.dense.weight"] = normal(d, m)
    t[p + "output.dense.bias"] = normal(d)
    t[p + "output.LayerNorm.weight"] = scale()
    t[p + "output.LayerNorm.bias"] = normal(d)
  return {prefix + k: v for k, v in t.items()}


def write_tiny_bert(directory: str | os.PathLike, *, seed: int = 0, max_seq_length: int = 32,
                    tensors: dict[str, np.ndarray] | None = None,
                    **config_kwargs: Any) -> pathlib.Path:
  """Writes a complete tiny sentence-encoder folder and returns its path.

  `tensors` replaces the random weights (e.g. to write a broken checkpoint).
  """
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  vocab = tiny_vocab()
  config = tiny_bert_config(len(vocab), **config_kwargs)
  (directory / "config.json").write_text(json.dumps(config, indent=2))
  write_tokenizer(directory / "tokenizer.json", vocab)
  save_file(random_bert_tensors(config, seed=seed) if tensors is None else tensors,
            str(directory / "model.safetensors"))
  (directory / "sentence_bert_config.json").write_text(
      json.dumps({"max_seq_length": max_seq_length, "do_lower_case": False}))
  (directory / "1_Pooling").mkdir(exist_ok=True)
  (directory / "1_Pooling" / "config.json").write_text(json.dumps({
      "word_embedding_dimension": config["hidden_size"], "pooling_mode_cls_token": False,
      "pooling_mode_mean_tokens": True, "pooling_mode_max_tokens": False,
      "pooling_mode_mean_sqrt_len_tokens": False}))
  return directory
