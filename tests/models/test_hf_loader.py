"""lrm.models.hf_loader: a tiny random HF-format checkpoint loads into the LM and gives the
logits of an independent NumPy forward pass written from HF's Llama / Qwen2 / Qwen3 math."""

import json

import jax
import numpy as np
import pytest
from flax import nnx

from lrm.core.errors import ConfigError, DataError
from lrm.models.hf_loader import load_hf_lm
from lrm.models.lm import LM

TEXT_VOCAB = 61
SIDS = (8, 8, 4)


def hf_config(model_type="llama", tied=False, **kw):
  cfg = {"model_type": model_type, "architectures": ["LlamaForCausalLM"],
         "vocab_size": TEXT_VOCAB, "hidden_size": 32, "intermediate_size": 48,
         "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
         "rms_norm_eps": 1e-5, "rope_theta": 500000.0, "hidden_act": "silu",
         "tie_word_embeddings": tied, "max_position_embeddings": 128}
  cfg.update(kw)
  return cfg


def random_tensors(cfg, seed=0):
  """HF tensor names and shapes ([out, in] linears) with random values."""
  rng = np.random.default_rng(seed)
  d, m, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
  h, g = cfg["num_attention_heads"], cfg["num_key_value_heads"]
  k = cfg.get("head_dim") or d // h
  w = lambda *shape: (0.2 * rng.standard_normal(shape)).astype(np.float32)
  norm = lambda n: (1.0 + 0.1 * rng.standard_normal(n)).astype(np.float32)
  t = {"model.embed_tokens.weight": w(v, d), "model.norm.weight": norm(d)}
  if not cfg["tie_word_embeddings"]:
    t["lm_head.weight"] = w(v, d)
  for i in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{i}."
    t.update({p + "input_layernorm.weight": norm(d), p + "post_attention_layernorm.weight": norm(d),
              p + "self_attn.q_proj.weight": w(h * k, d), p + "self_attn.k_proj.weight": w(g * k, d),
              p + "self_attn.v_proj.weight": w(g * k, d), p + "self_attn.o_proj.weight": w(d, h * k),
              p + "mlp.gate_proj.weight": w(m, d), p + "mlp.up_proj.weight": w(m, d),
              p + "mlp.down_proj.weight": w(d, m)})
    if cfg["model_type"] == "qwen2":
      t.update({p + "self_attn.q_proj.bias": w(h * k), p + "self_attn.k_proj.bias": w(g * k),
                p + "self_attn.v_proj.bias": w(g * k)})
    if cfg["model_type"] == "qwen3":
      t.update({p + "self_attn.q_norm.weight": norm(k), p + "self_attn.k_norm.weight": norm(k)})
  return t


def write_checkpoint(folder, cfg, tensors, shards=1):
  from safetensors.numpy import save_file
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "config.json").write_text(json.dumps(cfg))
  if shards == 1:
    save_file(tensors, str(folder / "model.safetensors"))
    return folder
  names = sorted(tensors)
  weight_map = {}
  for s in range(shards):
    file = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
    part = {n: tensors[n] for n in names[s::shards]}
    save_file(part, str(folder / file))
    weight_map.update({n: file for n in part})
  (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
  return folder


# -- the independent reference: HF modeling_llama / qwen2 / qwen3 in float64 NumPy ----------

def _rms(x, w, eps):
  return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * w


def _rotate_half(x):
  half = x.shape[-1] // 2
  return np.concatenate([-x[..., half:], x[..., :half]], axis=-1)


def reference_logits(cfg, tensors, ids):
  t = {n: x.astype(np.float64) for n, x in tensors.items()}
  b, l = ids.shape
  d, h, g = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
  k = cfg.get("head_dim") or d // h
  eps = cfg["rms_norm_eps"]
  inv_freq = 1.0 / (cfg["rope_theta"] ** (np.arange(0, k, 2) / k))
  freqs = np.outer(np.arange(l), inv_freq)
  emb = np.concatenate([freqs, freqs], axis=-1)                 # [l, k]
  cos, sin = np.cos(emb), np.sin(emb)
  causal = np.triu(np.full((l, l), -np.inf), 1)
  x = t["model.embed_tokens.weight"][ids]                       # [b, l, d]
  for i in range(cfg["num_hidden_layers"]):
    p = f"model.layers.{i}.self_attn."
    hn = _rms(x, t[f"model.layers.{i}.input_layernorm.weight"], eps)

    def proj(name, heads):
      y = hn @ t[p + name + ".weight"].T
      if p + name + ".bias" in t:
        y = y + t[p + name + ".bias"]
      return y.reshape(b, l, heads, k).transpose(0, 2, 1, 3)     # [b, heads, l, k]

    q, kk, v = proj("q_proj", h), proj("k_proj", g), proj("v_proj", g)
    if cfg["model_type"] == "qwen3":
      q, kk = _rms(q, t[p + "q_norm.weight"], eps), _rms(kk, t[p + "k_norm.weight"], eps)
    q = q * cos + _rotate_half(q) * sin
    kk = kk * cos + _rotate_half(kk) * sin
    kk, v = np.repeat(kk, h // g, axis=1), np.repeat(v, h // g, axis=1)   # repeat_kv
    scores = q @ kk.transpose(0, 1, 3, 2) / np.sqrt(k) + causal
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    o = (probs @ v).transpose(0, 2, 1, 3).reshape(b, l, h * k)
    x = x + o @ t[p + "o_proj.weight"].T
    hn = _rms(x, t[f"model.layers.{i}.post_attention_layernorm.weight"], eps)
    mp = f"model.layers.{i}.mlp."
    gate = hn @ t[mp + "gate_proj.weight"].T
    x = x + ((gate / (1 + np.exp(-gate))) * (hn @ t[mp + "up_proj.weight"].T)) \
        @ t[mp + "down_proj.weight"].T
  x = _rms(x, t["model.norm.weight"], eps)
  head = t["model.embed_tokens.weight"] if cfg["tie_word_embeddings"] else t["lm_head.weight"]
  return x @ head.T


_forward = nnx.jit(lambda model, ids: model(ids))


@pytest.mark.parametrize("model_type,tied,shards", [("llama", False, 1), ("llama", True, 3),
                                                    ("qwen2", True, 1), ("qwen3", False, 2)])
def test_logits_match_numpy_reference(tmp_path, model_type, tied, shards):
  cfg = hf_config(model_type, tied)
  tensors = random_tensors(cfg, seed=len(model_type) + tied)
  folder = write_checkpoint(tmp_path / "ckpt", cfg, tensors, shards)
  model = load_hf_lm(folder, codebook_sizes=SIDS, sid_start=64)
  assert isinstance(model, LM)
  assert model.config.vocab_size == 128 and model.config.tie_embeddings == tied
  assert model.config.qkv_bias == (model_type == "qwen2")
  assert model.config.qk_norm == (model_type == "qwen3")
  ids = np.random.default_rng(1).integers(0, TEXT_VOCAB, size=(2, 11))
  got = np.asarray(_forward(model, jax.numpy.asarray(ids, jax.numpy.int32)))
  assert got.shape == (2, 11, 128)
  want = reference_logits(cfg, tensors, ids)
  np.testing.assert_allclose(got[..., :TEXT_VOCAB], want, atol=1e-5, rtol=1e-5)


def test_new_rows_start_near_the_text_mean(tmp_path):
  cfg = hf_config("llama", tied=False)
  tensors = random_tensors(cfg)
  model = load_hf_lm(write_checkpoint(tmp_path / "ckpt", cfg, tensors), codebook_sizes=SIDS,
                     noise_scale=0.05, seed=3)
  table = np.asarray(model.embed.embedding[...])
  text = tensors["model.embed_tokens.weight"]
  assert model.config.sid_start == TEXT_VOCAB and model.config.vocab_size == 128
  np.testing.assert_array_equal(table[:TEXT_VOCAB], text)           # old rows exact
  new = table[TEXT_VOCAB:]
  spread = text.std(0)
  assert np.all(np.abs(new - text.mean(0)) <= 5 * 0.05 * spread + 1e-7)
  assert np.unique(new, axis=0).shape[0] == len(new)                # noise breaks ties
  head = np.asarray(model.lm_head[...]).T
  np.testing.assert_array_equal(head[:TEXT_VOCAB], tensors["lm_head.weight"])
  assert np.all(np.abs(head[TEXT_VOCAB:] - tensors["lm_head.weight"].mean(0))
                <= 5 * 0.05 * tensors["lm_head.weight"].std(0) + 1e-7)
  # The same seed gives the same rows; another seed other rows.
  again = load_hf_lm(tmp_path / "ckpt", codebook_sizes=SIDS, noise_scale=0.05, seed=3)
  other = load_hf_lm(tmp_path / "ckpt", codebook_sizes=SIDS, noise_scale=0.05, seed=4)
  np.testing.assert_array_equal(np.asarray(again.embed.embedding[...]), table)
  assert not np.array_equal(np.asarray(other.embed.embedding[...]), table)


def test_bad_checkpoints_are_named(tmp_path):
  cfg = hf_config()
  tensors = random_tensors(cfg)
  with pytest.raises(DataError, match="config.json"):
    load_hf_lm(tmp_path / "empty")
  broken = dict(tensors)
  del broken["model.layers.1.mlp.up_proj.weight"]
  with pytest.raises(DataError, match="model.layers.1.mlp.up_proj.weight"):
    load_hf_lm(write_checkpoint(tmp_path / "a", cfg, broken))
  with pytest.raises(ConfigError, match="hf.rope_scaling"):
    load_hf_lm(write_checkpoint(tmp_path / "b", hf_config(rope_scaling={"type": "llama3"}),
                                tensors))
  with pytest.raises(ConfigError, match="hf.model_type"):
    load_hf_lm(write_checkpoint(tmp_path / "c", hf_config("gpt2"), tensors))
  with pytest.raises(ConfigError, match="model.sid_start"):
    load_hf_lm(write_checkpoint(tmp_path / "d", cfg, tensors), codebook_sizes=SIDS, sid_start=10)
  with pytest.raises(DataError, match="shape"):
    load_hf_lm(write_checkpoint(tmp_path / "e", hf_config(intermediate_size=40), tensors))
