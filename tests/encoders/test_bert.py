"""The Flax BERT port: config checks, safetensors loading and its errors, sharding, numerics."""

from __future__ import annotations

import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from safetensors.numpy import save_file

from lrm.core.errors import ConfigError, DataError
from lrm.encoders import bert, tiny
from lrm.parallel import LOGICAL_AXIS_RULES, make_mesh


def _numpy_bert(t: dict[str, np.ndarray], cfg: dict, ids: np.ndarray, mask: np.ndarray):
  """An independent float64 reference of HF BertModel's last hidden state."""
  def ln(x, p):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + cfg["layer_norm_eps"]) * t[p + ".weight"] + t[p + ".bias"]

  def linear(x, p):
    return x @ t[p + ".weight"].T + t[p + ".bias"]

  gelu = np.vectorize(lambda v: 0.5 * v * (1 + math.erf(v / math.sqrt(2))))
  b, l = ids.shape
  h = cfg["num_attention_heads"]
  k = cfg["hidden_size"] // h
  x = (t["embeddings.word_embeddings.weight"][ids] + t["embeddings.position_embeddings.weight"][:l]
       + t["embeddings.token_type_embeddings.weight"][0])
  x = ln(x, "embeddings.LayerNorm")
  for i in range(cfg["num_hidden_layers"]):
    p = f"encoder.layer.{i}."
    split = lambda y: y.reshape(b, l, h, k).transpose(0, 2, 1, 3)
    q, kk, v = (split(linear(x, p + f"attention.self.{n}")) for n in ("query", "key", "value"))
    scores = q @ kk.transpose(0, 1, 3, 2) / np.sqrt(k) + np.where(mask, 0.0, -1e9)[:, None, None]
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    ctx = (probs @ v).transpose(0, 2, 1, 3).reshape(b, l, h * k)
    x = ln(x + linear(ctx, p + "attention.output.dense"), p + "attention.output.LayerNorm")
    mlp = linear(gelu(linear(x, p + "intermediate.dense")), p + "output.dense")
    x = ln(x + mlp, p + "output.LayerNorm")
  return x


@pytest.fixture
def tiny_dir(tmp_path):
  return tiny.write_tiny_bert(tmp_path / "tiny", seed=3)


def test_matches_an_independent_numpy_reference(tiny_dir):
  cfg = json.loads((tiny_dir / "config.json").read_text())
  tensors = {k: v.astype(np.float64) for k, v in tiny.random_bert_tensors(cfg, seed=3).items()}
  rng = np.random.default_rng(0)
  ids = rng.integers(5, cfg["vocab_size"], size=(3, 7))
  lengths = np.array([7, 4, 1])
  mask = np.arange(7)[None] < lengths[:, None]
  model = bert.load_bert(tiny_dir)
  got = np.asarray(model(jnp.asarray(ids), jnp.asarray(mask.astype(np.int32))))
  want = _numpy_bert(tensors, cfg, ids, mask)
  for row, n in enumerate(lengths):  # padded positions are not defined by HF either
    np.testing.assert_allclose(got[row, :n], want[row, :n], atol=2e-4)


def test_padding_does_not_change_real_tokens(tiny_dir):
  model = bert.load_bert(tiny_dir)
  ids = jnp.array([[2, 7, 8, 9, 3]])
  short = model(ids, jnp.ones_like(ids))
  padded_ids = jnp.concatenate([ids, jnp.zeros((1, 3), ids.dtype)], axis=1)
  padded = model(padded_ids, (padded_ids != 0).astype(jnp.int32).at[0, 0].set(1))
  np.testing.assert_allclose(np.asarray(padded[:, :5]), np.asarray(short), atol=1e-5)


def test_bf16_compute_keeps_fp32_params(tiny_dir):
  fp32 = bert.load_bert(tiny_dir)
  bf16 = bert.load_bert(tiny_dir, dtype=jnp.bfloat16)
  params = jax.tree.leaves(nnx.state(bf16, nnx.Param))
  assert params and all(p.dtype == jnp.float32 for p in params)
  ids = jnp.array([[2, 7, 8, 9, 3]])
  out16 = bf16(ids, jnp.ones_like(ids))
  assert out16.dtype == jnp.bfloat16
  a, b = np.asarray(out16, np.float32).ravel(), np.asarray(fp32(ids, jnp.ones_like(ids))).ravel()
  assert a @ b / np.linalg.norm(a) / np.linalg.norm(b) > 0.99


def test_bert_prefix_and_old_layernorm_names_load(tmp_path, tiny_dir):
  cfg = json.loads((tiny_dir / "config.json").read_text())
  tensors = tiny.random_bert_tensors(cfg, seed=3, prefix="bert.")
  renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias",
                                                                      "LayerNorm.beta"): v
             for k, v in tensors.items()}
  renamed["cls.predictions.bias"] = np.zeros(cfg["vocab_size"], np.float32)  # MLM head: ignored
  save_file(renamed, str(tiny_dir / "model.safetensors"))
  ids = jnp.array([[2, 7, 8, 3]])
  out = bert.load_bert(tiny_dir)(ids, jnp.ones_like(ids))
  reference = tiny.write_tiny_bert(tmp_path / "ref", seed=3)
  np.testing.assert_allclose(np.asarray(out),
                             np.asarray(bert.load_bert(reference)(ids, jnp.ones_like(ids))),
                             atol=1e-6)


def test_half_precision_checkpoints_load(tmp_path, tiny_dir):
  from safetensors.flax import save_file as save_jax
  cfg = json.loads((tiny_dir / "config.json").read_text())
  tensors = tiny.random_bert_tensors(cfg, seed=3)
  save_jax({k: jnp.asarray(v, jnp.bfloat16) for k, v in tensors.items()},
           str(tiny_dir / "model.safetensors"))
  rounded = tiny.write_tiny_bert(tmp_path / "rounded", tensors={
      k: np.asarray(jnp.asarray(v, jnp.bfloat16), np.float32) for k, v in tensors.items()})
  ids = jnp.array([[2, 7, 8, 3]])
  np.testing.assert_allclose(np.asarray(bert.load_bert(tiny_dir)(ids, jnp.ones_like(ids))),
                             np.asarray(bert.load_bert(rounded)(ids, jnp.ones_like(ids))),
                             atol=1e-6)


def _write_tensors(directory, mutate):
  cfg = json.loads((directory / "config.json").read_text())
  tensors = tiny.random_bert_tensors(cfg)
  mutate(tensors)
  save_file(tensors, str(directory / "model.safetensors"))


def test_missing_tensor_is_named(tiny_dir):
  _write_tensors(tiny_dir, lambda t: t.pop("encoder.layer.1.attention.self.key.weight"))
  with pytest.raises(DataError, match=r"missing tensor 'encoder\.layer\.1\.attention\.self\.key"
                                      r"\.weight' \(expected shape \[16, 16\]\)") as e:
    bert.load_bert(tiny_dir)
  assert "model.safetensors" in str(e.value)


def test_misshaped_tensor_is_named(tiny_dir):
  def shrink(t):
    t["encoder.layer.0.intermediate.dense.weight"] = np.zeros((31, 16), np.float32)
  _write_tensors(tiny_dir, shrink)
  with pytest.raises(DataError, match=r"'encoder\.layer\.0\.intermediate\.dense\.weight' has "
                                      r"shape \[31, 16\], expected \[32, 16\]"):
    bert.load_bert(tiny_dir)


def test_unexpected_tensor_is_named(tiny_dir):
  def add(t):
    t["encoder.layer.2.output.dense.weight"] = np.zeros((16, 32), np.float32)
  _write_tensors(tiny_dir, add)
  with pytest.raises(DataError, match=r"unexpected tensor 'encoder\.layer\.2\.output\.dense"):
    bert.load_bert(tiny_dir)


def test_not_a_safetensors_file(tiny_dir):
  (tiny_dir / "model.safetensors").write_bytes(b"not safetensors at all")
  with pytest.raises(DataError, match="model.safetensors.*not a readable safetensors file"):
    bert.load_bert(tiny_dir)


@pytest.mark.parametrize("field, value, message", [
    ("num_attention_heads", 3, "does not divide hidden_size"),
    ("hidden_act", "swish", "unsupported activation"),
    ("hidden_size", 0, "positive integer"),
    ("model_type", "roberta", "only 'bert'"),
    ("position_embedding_type", "relative_key", "only 'absolute'"),
])
def test_config_errors_name_the_field(tmp_path, field, value, message):
  cfg = tiny.tiny_bert_config(100)
  cfg[field] = value
  path = tmp_path / "config.json"
  path.write_text(json.dumps(cfg))
  with pytest.raises(ConfigError, match=message) as e:
    bert.BertConfig.from_json(path)
  assert e.value.field == field
  assert str(path) in str(e.value)


def test_invalid_json_names_file_and_line(tmp_path):
  path = tmp_path / "config.json"
  path.write_text('{\n  "hidden_size": 16,\n  oops\n}')
  with pytest.raises(DataError, match=r"config\.json:3: invalid JSON"):
    bert.BertConfig.from_json(path)


def test_builds_without_a_mesh_and_shards_under_one(tiny_dir):
  cfg = bert.BertConfig.from_json(tiny_dir / "config.json")
  plain = bert.BertModel(cfg, rngs=nnx.Rngs(0))  # no mesh: plain arrays
  assert plain.embeddings.word.embedding.get_metadata()["out_sharding"] == ("vocab", "embed")
  mesh = make_mesh((2, 2, 2))
  with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
    sharded = bert.BertModel(cfg, rngs=nnx.Rngs(0))
  query = sharded.layers[0].attention.query.kernel[...]
  assert query.sharding.is_equivalent_to(
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("fsdp", "tensor")), 3)
  mlp_out = sharded.layers[1].mlp_out.kernel[...]
  assert mlp_out.sharding.is_equivalent_to(
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tensor", "fsdp")), 2)
  # Same init key, same values, sharded or not.
  np.testing.assert_allclose(np.asarray(query),
                             np.asarray(plain.layers[0].attention.query.kernel[...]))
