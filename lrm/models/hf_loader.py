"""Loads a pretrained Hugging Face Llama / Qwen2 / Qwen3 text LM into lrm's LM and grows its
vocabulary with SID tokens (continued pretraining starts from a text model, as PLUM does).

Reads a local checkpoint folder only (nothing is downloaded): `config.json` and either
`model.safetensors` or shards listed in `model.safetensors.index.json`, through the
`safetensors` package into NumPy. HF stores linear weights as [out, in]; lrm's kernels are
[in, out] with heads split out ([d, h, k] for q/k/v, [h, k, d] for o). HF's rotary embedding
uses the rotate-half convention on the stored head layout, which is exactly lrm.models.lm's
`apply_rope`, so no permutation is needed.

The new vocabulary is the checkpoint's rows (text + its specials), then any rows up to
`sid_start`, then the SID tokens, padded to a multiple of 128. Every new row (embedding and,
untied, the output head) starts at the mean of the text rows plus small Gaussian noise scaled
by the text rows' per-dimension spread: new tokens begin as an "average word", so the
pretrained model's outputs barely move at first (Hewitt 2021, "Initializing new word
embeddings"), and the noise breaks the symmetry between them.
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Mapping, Sequence

import jax
import numpy as np
from safetensors.numpy import load_file

from lrm.core.errors import ConfigError, DataError
from lrm.models.layers import padded_rows
from lrm.models.lm import LM, LMConfig, lm_from_params

SUPPORTED_MODEL_TYPES = ("llama", "qwen2", "qwen3", "mistral")


def read_hf_config(path: str | os.PathLike) -> dict[str, Any]:
  """config.json of a checkpoint folder."""
  file = pathlib.Path(path) / "config.json"
  if not file.is_file():
    raise DataError("no config.json in the checkpoint folder", path=path)
  try:
    return json.loads(file.read_text())
  except json.JSONDecodeError as e:
    raise DataError(f"config.json is not JSON: {e}", path=file) from e


def lm_config_from_hf(hf: Mapping[str, Any], *, vocab_size: int, sid_start: int,
                      codebook_sizes: Sequence[int] = (), **overrides: Any) -> LMConfig:
  """The LMConfig of an HF Llama / Qwen2 / Qwen3 config.json, with a grown vocabulary.

  Architectures the LM cannot reproduce exactly (other activations, rope scaling, MLP or
  output biases, sliding windows) are rejected rather than loaded approximately.
  """
  model_type = hf.get("model_type")
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise ConfigError("hf.model_type", f"'{model_type}' is not one of {SUPPORTED_MODEL_TYPES}")
  if hf.get("hidden_act", "silu") != "silu":
    raise ConfigError("hf.hidden_act", f"'{hf.get('hidden_act')}' is not silu")
  if hf.get("rope_scaling"):
    raise ConfigError("hf.rope_scaling", f"{hf['rope_scaling']} is not supported (plain rotary "
                      "positions only)")
  if hf.get("mlp_bias"):
    raise ConfigError("hf.mlp_bias", "MLP biases are not supported")
  if hf.get("use_sliding_window"):
    raise ConfigError("hf.use_sliding_window", "sliding-window attention is not supported")
  if model_type == "mistral" and hf.get("sliding_window") is not None:
    raise ConfigError("hf.sliding_window", "sliding-window attention is not supported")
  heads = int(hf["num_attention_heads"])
  d = int(hf["hidden_size"])
  head_dim = hf.get("head_dim") or d // heads
  # Qwen2 always has q/k/v biases; Llama has them when attention_bias is set (and then an
  # o_proj bias too, which the LM does not have).
  qkv_bias = model_type == "qwen2" or bool(hf.get("attention_bias", False))
  if qkv_bias and model_type != "qwen2":
    raise ConfigError("hf.attention_bias", "o_proj biases are not supported")
  fields = dict(
      vocab_size=int(vocab_size), d_model=d, num_layers=int(hf["num_hidden_layers"]),
      num_heads=heads, num_kv_heads=int(hf.get("num_key_value_heads") or heads),
      head_dim=int(head_dim), mlp_dim=int(hf["intermediate_size"]),
      rope_theta=float(hf.get("rope_theta", 10000.0)),
      norm_eps=float(hf.get("rms_norm_eps", 1e-6)),
      tie_embeddings=bool(hf.get("tie_word_embeddings", False)), qkv_bias=qkv_bias,
      qk_norm=model_type == "qwen3", sid_start=int(sid_start),
      codebook_sizes=tuple(codebook_sizes))
  return LMConfig(**{**fields, **overrides})


def read_safetensors(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Every tensor of the checkpoint (one file or the shards of the index), as NumPy arrays."""
  path = pathlib.Path(path)
  single, index = path / "model.safetensors", path / "model.safetensors.index.json"
  if single.is_file():
    return dict(load_file(single))
  if not index.is_file():
    raise DataError("neither model.safetensors nor model.safetensors.index.json found",
                    path=path)
  weight_map = json.loads(index.read_text()).get("weight_map")
  if not isinstance(weight_map, dict):
    raise DataError("the index has no weight_map", path=index)
  tensors: dict[str, np.ndarray] = {}
  for shard in sorted(set(weight_map.values())):
    if not (path / shard).is_file():
      raise DataError(f"shard {shard} listed in the index is missing", path=index)
    tensors.update(load_file(path / shard))
  missing = sorted(set(weight_map) - set(tensors))
  if missing:
    raise DataError(f"tensors listed in the index are missing from the shards: {missing[:3]}",
                    path=index)
  return tensors


def grown_rows(table: np.ndarray, num_rows: int, *, noise_scale: float,
               rng: np.random.Generator) -> np.ndarray:
  """`table` [n, d] extended to [num_rows, d]: old rows kept, new rows at the mean of the old
  ones plus noise_scale x their per-dimension standard deviation x N(0, 1)."""
  table = np.asarray(table, np.float32)
  n, d = table.shape
  if num_rows < n:
    raise ConfigError("vocab_size", f"{num_rows} rows cannot hold the checkpoint's {n}")
  mean = table.mean(axis=0, dtype=np.float64)
  std = table.std(axis=0, dtype=np.float64)
  noise = rng.standard_normal((num_rows - n, d)) * std * noise_scale
  return np.concatenate([table, (mean + noise).astype(np.float32)], axis=0)


def _take(tensors: dict[str, np.ndarray], name: str, shape: tuple[int, ...]) -> np.ndarray:
  if name not in tensors:
    raise DataError(f"tensor {name} is missing from the checkpoint")
  x = np.asarray(tensors.pop(name), np.float32)
  if x.shape != shape:
    raise DataError(f"tensor {name} has shape {x.shape}, the config implies {shape}")
  return x


def hf_params(tensors: dict[str, np.ndarray], cfg: LMConfig, *, noise_scale: float,
              seed: int) -> dict[str, Any]:
  """The LM's parameters (a pure dict as `nnx.to_pure_dict` gives) from HF tensors.

  Tensors the mapping does not use (e.g. rotary inv_freq buffers) are ignored; a tensor the
  config implies but the checkpoint lacks, or one of the wrong shape, is a DataError.
  """
  tensors = dict(tensors)
  d, h, g, k, m = cfg.d_model, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim, cfg.mlp_dim
  rng = np.random.default_rng(seed)
  embed = tensors.get("model.embed_tokens.weight")
  if embed is None:
    raise DataError("tensor model.embed_tokens.weight is missing from the checkpoint")
  text_rows = embed.shape[0]
  embed = _take(tensors, "model.embed_tokens.weight", (text_rows, d))
  params: dict[str, Any] = {
      "embed": {"embedding": grown_rows(embed, cfg.vocab_size, noise_scale=noise_scale,
                                        rng=rng)},
      "final_norm": {"scale": _take(tensors, "model.norm.weight", (d,))},
      "layers": {},
  }
  if not cfg.tie_embeddings:
    head = _take(tensors, "lm_head.weight", (text_rows, d))
    params["lm_head"] = grown_rows(head, cfg.vocab_size, noise_scale=noise_scale, rng=rng).T
  for i in range(cfg.num_layers):
    pre = f"model.layers.{i}."
    get = lambda name, shape: _take(tensors, pre + name, shape)
    attention = {
        "query": {"kernel": get("self_attn.q_proj.weight", (h * k, d)).T.reshape(d, h, k)},
        "key": {"kernel": get("self_attn.k_proj.weight", (g * k, d)).T.reshape(d, g, k)},
        "value": {"kernel": get("self_attn.v_proj.weight", (g * k, d)).T.reshape(d, g, k)},
        "out": {"kernel": get("self_attn.o_proj.weight", (d, h * k)).T.reshape(h, k, d)},
    }
    if cfg.qkv_bias:
      attention["query"]["bias"] = get("self_attn.q_proj.bias", (h * k,)).reshape(h, k)
      attention["key"]["bias"] = get("self_attn.k_proj.bias", (g * k,)).reshape(g, k)
      attention["value"]["bias"] = get("self_attn.v_proj.bias", (g * k,)).reshape(g, k)
    if cfg.qk_norm:
      attention["query_norm"] = {"scale": get("self_attn.q_norm.weight", (k,))}
      attention["key_norm"] = {"scale": get("self_attn.k_norm.weight", (k,))}
    params["layers"][i] = {
        "attention_norm": {"scale": get("input_layernorm.weight", (d,))},
        "attention": attention,
        "mlp_norm": {"scale": get("post_attention_layernorm.weight", (d,))},
        "mlp": {"gate": {"kernel": get("mlp.gate_proj.weight", (m, d)).T},
                "up": {"kernel": get("mlp.up_proj.weight", (m, d)).T},
                "down": {"kernel": get("mlp.down_proj.weight", (d, m)).T}},
    }
  left = sorted(n for n in tensors if not n.endswith("rotary_emb.inv_freq"))
  if left:
    raise DataError(f"{len(left)} checkpoint tensors are not used by the LM (e.g. {left[:3]}): "
                    "the architecture does not match")
  return params


def load_hf_lm(path: str | os.PathLike, *, codebook_sizes: Sequence[int] = (),
               sid_start: int | None = None, vocab_size: int | None = None,
               noise_scale: float = 0.1, seed: int = 0, mesh: jax.sharding.Mesh | None = None,
               **overrides: Any) -> LM:
  """An LM holding the checkpoint's weights, its vocabulary grown by the SID tokens.

  `sid_start` defaults to the checkpoint's row count (SIDs right after the text vocabulary;
  a larger value leaves room for special tokens, which get new rows too); `vocab_size`
  defaults to the end of the SID range rounded up to a multiple of 128. `overrides` set other
  LMConfig fields (dtype, attention_impl, remat). With `mesh`, parameters are placed by their
  logical axis names (lrm/parallel/rules.py); otherwise they are plain float32 arrays.
  """
  path = pathlib.Path(path)
  hf = read_hf_config(path)
  tensors = read_safetensors(path)
  if "model.embed_tokens.weight" not in tensors:
    raise DataError("tensor model.embed_tokens.weight is missing from the checkpoint",
                    path=path)
  text_rows = int(tensors["model.embed_tokens.weight"].shape[0])
  sid_start = text_rows if sid_start is None else int(sid_start)
  if sid_start < text_rows:
    raise ConfigError("model.sid_start", f"{sid_start} would overwrite the checkpoint's "
                      f"{text_rows} text rows")
  end = sid_start + sum(int(k) for k in codebook_sizes)
  vocab_size = padded_rows(end) if vocab_size is None else int(vocab_size)
  if not noise_scale >= 0:
    raise ConfigError("noise_scale", f"must be >= 0, got {noise_scale}")
  cfg = lm_config_from_hf(hf, vocab_size=vocab_size, sid_start=sid_start,
                          codebook_sizes=codebook_sizes, **overrides)
  params = hf_params(tensors, cfg, noise_scale=noise_scale, seed=seed)
  return lm_from_params(cfg, params, mesh)
