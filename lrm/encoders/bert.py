"""A Flax NNX port of a BERT encoder (Hugging Face `BertModel`) that loads safetensors weights.

Post-LN transformer: word + position + token-type embeddings, LayerNorm, then N layers of
self-attention and an MLP, each followed by a residual add and LayerNorm. Inference only (no
dropout). Parameters stay float32; `dtype=jnp.bfloat16` runs the matmuls in bf16.

Parameters carry logical axis names (lrm/parallel/rules.py: vocab, embed, heads, kv, mlp).
Built inside `with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):` they are
sharded when created; built without a mesh they are plain (unsharded) arrays.

Shape letters: b batch, l length, d embed (hidden), h heads, k head dim, m mlp.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
from typing import Any, Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from safetensors import SafetensorError, safe_open

from lrm.core.artifacts import read_json
from lrm.core.errors import ConfigError, DataError

# HF `hidden_act` -> activation. "gelu" is the exact (erf) GELU.
_ACTIVATIONS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


@dataclasses.dataclass(frozen=True)
class BertConfig:
  """The architecture fields of a Hugging Face BERT `config.json`."""
  vocab_size: int = 30522
  hidden_size: int = 768
  num_hidden_layers: int = 12
  num_attention_heads: int = 12
  intermediate_size: int = 3072
  hidden_act: str = "gelu"
  max_position_embeddings: int = 512
  type_vocab_size: int = 2
  layer_norm_eps: float = 1e-12
  pad_token_id: int = 0

  def __post_init__(self):
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                 "intermediate_size", "max_position_embeddings", "type_vocab_size"):
      value = getattr(self, name)
      if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(name, f"must be a positive integer, got {value!r}")
    if self.hidden_size % self.num_attention_heads:
      raise ConfigError("num_attention_heads", f"{self.num_attention_heads} does not divide "
                        f"hidden_size {self.hidden_size}")
    if self.hidden_act not in _ACTIVATIONS:
      raise ConfigError("hidden_act", f"unsupported activation '{self.hidden_act}'; "
                        f"supported: {sorted(_ACTIVATIONS)}")
    if not isinstance(self.layer_norm_eps, (int, float)) or not 0 < self.layer_norm_eps < 1:
      raise ConfigError("layer_norm_eps", f"must be in (0, 1), got {self.layer_norm_eps!r}")

  @property
  def head_dim(self) -> int:
    return self.hidden_size // self.num_attention_heads

  @classmethod
  def from_dict(cls, d: Mapping[str, Any], *, source: str = "config") -> "BertConfig":
    """From a parsed config.json; rejects architectures this port would compute wrongly."""
    model_type = d.get("model_type", "bert")
    if model_type != "bert":
      raise ConfigError("model_type", f"{source}: only 'bert' models are supported, "
                        f"got '{model_type}'")
    pos_type = d.get("position_embedding_type", "absolute")
    if pos_type != "absolute":
      raise ConfigError("position_embedding_type", f"{source}: only 'absolute' is supported, "
                        f"got '{pos_type}'")
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: d[k] for k in known if k in d and d[k] is not None}
    try:
      return cls(**kwargs)
    except ConfigError as e:
      raise ConfigError(e.field, f"{source}: {str(e).split(': ', 1)[1]}") from None

  @classmethod
  def from_json(cls, path: str | os.PathLike) -> "BertConfig":
    path = pathlib.Path(path)
    if not path.is_file():
      raise DataError("no such file (a BERT config.json is needed)", path=path)
    d = read_json(path)
    if not isinstance(d, dict):
      raise DataError("expected a JSON object", path=path)
    return cls.from_dict(d, source=str(path))


def _param(init: Callable, names: tuple[str | None, ...]) -> Callable:
  """An initializer annotated with logical axis names (sharded only when a mesh is set)."""
  return nnx.with_partitioning(init, names)


def _mesh_is_set() -> bool:
  return not jax.sharding.get_abstract_mesh().empty


class BertEmbeddings(nnx.Module):
  """Word + position + token-type embeddings, then LayerNorm."""

  def __init__(self, cfg: BertConfig, *, dtype: Any, rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.02)
    d = cfg.hidden_size
    self.word = nnx.Embed(cfg.vocab_size, d, dtype=dtype, rngs=rngs,
                          embedding_init=_param(init, ("vocab", "embed")))
    self.position = nnx.Embed(cfg.max_position_embeddings, d, dtype=dtype, rngs=rngs,
                              embedding_init=_param(init, (None, "embed")))
    self.token_type = nnx.Embed(cfg.type_vocab_size, d, dtype=dtype, rngs=rngs,
                                embedding_init=_param(init, (None, "embed")))
    self.norm = _layer_norm(cfg, dtype, rngs)

  def __call__(self, input_ids: jax.Array, token_type_ids: jax.Array | None) -> jax.Array:
    """Shape: input_ids, token_type_ids int [b, l] -> [b, l, d]."""
    positions = jnp.arange(input_ids.shape[1])[None]
    if token_type_ids is None:
      token_type_ids = jnp.zeros((1, 1), jnp.int32)  # single sentences: segment 0 everywhere
    x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
    return self.norm(x)


def _layer_norm(cfg: BertConfig, dtype: Any, rngs: nnx.Rngs) -> nnx.LayerNorm:
  # Exact variance (not E[x^2] - E[x]^2): matches torch's LayerNorm to float rounding.
  return nnx.LayerNorm(cfg.hidden_size, epsilon=cfg.layer_norm_eps, dtype=dtype,
                       use_fast_variance=False, rngs=rngs,
                       scale_init=_param(nnx.initializers.ones_init(), ("embed",)),
                       bias_init=_param(nnx.initializers.zeros_init(), ("embed",)))


class BertSelfAttention(nnx.Module):
  """Multi-head self-attention with a key padding mask; q/k/v kernels are [d, h, k]."""

  def __init__(self, cfg: BertConfig, *, dtype: Any, attention_impl: str | None,
               rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.02)
    d, h, k = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim
    proj = lambda: nnx.LinearGeneral(
        d, (h, k), dtype=dtype, rngs=rngs,
        kernel_init=_param(init, ("embed", "heads", "kv")),
        bias_init=_param(nnx.initializers.zeros_init(), ("heads", "kv")))
    self.query, self.key, self.value = proj(), proj(), proj()
    self.out = nnx.LinearGeneral(
        (h, k), d, axis=(-2, -1), dtype=dtype, rngs=rngs,
        kernel_init=_param(init, ("heads", "kv", "embed")),
        bias_init=_param(nnx.initializers.zeros_init(), ("embed",)))
    self.attention_impl = attention_impl

  def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """Shape: x [b, l, d], lengths int32 [b] (valid tokens, right-padded) -> [b, l, d]."""
    q, k, v = self.query(x), self.key(x), self.value(x)
    # Key padding as sequence lengths: the form cuDNN's fused kernel takes (MaskType.PADDING).
    ctx = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=lengths,
                                       implementation=self.attention_impl)
    return self.out(ctx)


class BertLayer(nnx.Module):
  """Post-LN block: x = LN(x + attn(x)); x = LN(x + mlp(x))."""

  def __init__(self, cfg: BertConfig, *, dtype: Any, attention_impl: str | None,
               rngs: nnx.Rngs):
    init = nnx.initializers.normal(0.02)
    d, m = cfg.hidden_size, cfg.intermediate_size
    self.attention = BertSelfAttention(cfg, dtype=dtype, attention_impl=attention_impl,
                                       rngs=rngs)
    self.attention_norm = _layer_norm(cfg, dtype, rngs)
    self.mlp_in = nnx.Linear(d, m, dtype=dtype, rngs=rngs,
                             kernel_init=_param(init, ("embed", "mlp")),
                             bias_init=_param(nnx.initializers.zeros_init(), ("mlp",)))
    self.mlp_out = nnx.Linear(m, d, dtype=dtype, rngs=rngs,
                              kernel_init=_param(init, ("mlp", "embed")),
                              bias_init=_param(nnx.initializers.zeros_init(), ("embed",)))
    self.mlp_norm = _layer_norm(cfg, dtype, rngs)
    self.activation = _ACTIVATIONS[cfg.hidden_act]

  def __call__(self, x: jax.Array, lengths: jax.Array) -> jax.Array:
    """Shape: x [b, l, d], lengths [b] -> [b, l, d]."""
    x = self.attention_norm(x + self.attention(x, lengths))
    return self.mlp_norm(x + self.mlp_out(self.activation(self.mlp_in(x))))


class BertModel(nnx.Module):
  """BERT encoder: token ids -> last hidden states (no pooler)."""

  def __init__(self, cfg: BertConfig, *, dtype: Any = jnp.float32,
               attention_impl: str | None = None, rngs: nnx.Rngs):
    self.config = cfg
    self.dtype = jnp.dtype(dtype)
    # Annotated params are sharded eagerly only under a mesh; without one they stay plain.
    eager = nnx.use_eager_sharding(False) if not _mesh_is_set() else contextlib.nullcontext()
    with eager:
      self.embeddings = BertEmbeddings(cfg, dtype=dtype, rngs=rngs)
      self.layers = nnx.List([
          BertLayer(cfg, dtype=dtype, attention_impl=attention_impl, rngs=rngs)
          for _ in range(cfg.num_hidden_layers)])

  def __call__(self, input_ids: jax.Array, attention_mask: jax.Array,
               token_type_ids: jax.Array | None = None) -> jax.Array:
    """Hidden states of the last layer.

    `attention_mask` must be right-padded (ones, then zeros), as tokenizers produce.

    Shape: input_ids int [b, l], attention_mask [b, l] (1 = token, 0 = padding),
      token_type_ids int [b, l] or None (all zeros) -> [b, l, d] in the compute dtype.
    """
    lengths = jnp.sum(attention_mask.astype(jnp.int32), axis=1)
    x = self.embeddings(input_ids, token_type_ids)
    for layer in self.layers:
      x = layer(x, lengths)
    return x


# ---------------------------------------------------------------------------------------------
# Loading Hugging Face safetensors weights.

# Tensors a BertModel checkpoint may carry that this encoder does not use.
_IGNORED_SUFFIXES = ("embeddings.position_ids",)
_IGNORED_PREFIXES = ("pooler.", "cls.")


def _linear(w: np.ndarray) -> np.ndarray:
  return w.T  # HF Linear weight is [out, in]


def hf_tensor_layout(cfg: BertConfig) -> dict[str, tuple[tuple[Any, ...], tuple[int, ...],
                                                         Callable[[np.ndarray], np.ndarray]]]:
  """HF tensor name -> (NNX state path, HF shape, converter from HF to NNX layout)."""
  d, h, k, m = cfg.hidden_size, cfg.num_attention_heads, cfg.head_dim, cfg.intermediate_size
  same = lambda w: w
  layout: dict[str, Any] = {
      "embeddings.word_embeddings.weight":
          (("embeddings", "word", "embedding"), (cfg.vocab_size, d), same),
      "embeddings.position_embeddings.weight":
          (("embeddings", "position", "embedding"), (cfg.max_position_embeddings, d), same),
      "embeddings.token_type_embeddings.weight":
          (("embeddings", "token_type", "embedding"), (cfg.type_vocab_size, d), same),
      "embeddings.LayerNorm.weight": (("embeddings", "norm", "scale"), (d,), same),
      "embeddings.LayerNorm.bias": (("embeddings", "norm", "bias"), (d,), same),
  }
  for i in range(cfg.num_hidden_layers):
    hf, nx = f"encoder.layer.{i}.", ("layers", i)
    for name in ("query", "key", "value"):
      layout[hf + f"attention.self.{name}.weight"] = (
          nx + ("attention", name, "kernel"), (h * k, d),
          lambda w: _linear(w).reshape(d, h, k))
      layout[hf + f"attention.self.{name}.bias"] = (
          nx + ("attention", name, "bias"), (h * k,), lambda b: b.reshape(h, k))
    layout[hf + "attention.output.dense.weight"] = (
        nx + ("attention", "out", "kernel"), (d, h * k), lambda w: _linear(w).reshape(h, k, d))
    layout[hf + "attention.output.dense.bias"] = (nx + ("attention", "out", "bias"), (d,), same)
    layout[hf + "attention.output.LayerNorm.weight"] = (
        nx + ("attention_norm", "scale"), (d,), same)
    layout[hf + "attention.output.LayerNorm.bias"] = (
        nx + ("attention_norm", "bias"), (d,), same)
    layout[hf + "intermediate.dense.weight"] = (nx + ("mlp_in", "kernel"), (m, d), _linear)
    layout[hf + "intermediate.dense.bias"] = (nx + ("mlp_in", "bias"), (m,), same)
    layout[hf + "output.dense.weight"] = (nx + ("mlp_out", "kernel"), (d, m), _linear)
    layout[hf + "output.dense.bias"] = (nx + ("mlp_out", "bias"), (d,), same)
    layout[hf + "output.LayerNorm.weight"] = (nx + ("mlp_norm", "scale"), (d,), same)
    layout[hf + "output.LayerNorm.bias"] = (nx + ("mlp_norm", "bias"), (d,), same)
  return layout


def _canonical_name(name: str) -> str:
  """Strips a `bert.` prefix and maps old TF-style LayerNorm names (gamma/beta)."""
  if name.startswith("bert."):
    name = name[len("bert."):]
  if name.endswith("LayerNorm.gamma"):
    name = name[:-len("gamma")] + "weight"
  elif name.endswith("LayerNorm.beta"):
    name = name[:-len("beta")] + "bias"
  return name


def read_bert_weights(path: str | os.PathLike,
                      cfg: BertConfig) -> dict[tuple[Any, ...], np.ndarray]:
  """Reads a safetensors checkpoint into {NNX state path: float32 array in NNX layout}.

  Raises DataError naming the file and every missing, unexpected or mis-shaped tensor.
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise DataError("no such file (model weights in safetensors format are needed)", path=path)
  layout = hf_tensor_layout(cfg)
  problems: list[str] = []
  found: dict[str, str] = {}  # canonical name -> name in the file
  try:
    with safe_open(str(path), "np") as f:
      names = list(f.keys())
      for name in names:
        canon = _canonical_name(name)
        if canon in layout:
          if canon in found:
            problems.append(f"tensor '{name}' duplicates '{found[canon]}'")
          found[canon] = name
        elif not (canon.endswith(_IGNORED_SUFFIXES) or canon.startswith(_IGNORED_PREFIXES)):
          problems.append(f"unexpected tensor '{name}'")
      missing = [n for n in layout if n not in found]
      problems.extend(f"missing tensor '{n}' (expected shape {list(layout[n][1])})"
                      for n in missing)
      shapes = {canon: tuple(f.get_slice(name).get_shape()) for canon, name in found.items()}
      for canon, shape in shapes.items():
        expected = layout[canon][1]
        if shape != expected:
          problems.append(f"tensor '{found[canon]}' has shape {list(shape)}, "
                          f"expected {list(expected)} (from config.json)")
      if problems:
        more = [f"... and {len(problems) - 20} more"] if len(problems) > 20 else []
        raise DataError("checkpoint does not match a BERT model with "
                        f"{cfg.num_hidden_layers} layers, hidden size {cfg.hidden_size}:\n  "
                        + "\n  ".join(problems[:20] + more), path=path)
      out = {}
      for canon, name in found.items():
        nnx_path, _, convert = layout[canon]
        array = f.get_tensor(name)
        if not jnp.issubdtype(array.dtype, jnp.floating):  # float16/32/64 and bfloat16
          raise DataError(f"tensor '{name}' has dtype {array.dtype}, expected floating point",
                          path=path)
        out[nnx_path] = np.ascontiguousarray(convert(array.astype(np.float32)))
  except SafetensorError as e:
    raise DataError(f"not a readable safetensors file: {e}", path=path) from None
  return out


def abstract_bert(cfg: BertConfig, *, dtype: Any = jnp.float32,
                  attention_impl: str | None = None) -> BertModel:
  """A BertModel whose parameters are shapes only (nothing allocated, nothing initialised)."""
  return nnx.eval_shape(lambda: BertModel(cfg, dtype=dtype, attention_impl=attention_impl,
                                          rngs=nnx.Rngs(0)))


def load_bert(model_dir: str | os.PathLike, *, dtype: Any = jnp.float32,
              attention_impl: str | None = None) -> BertModel:
  """A BertModel with weights from `model_dir/{config.json, model.safetensors}`."""
  model_dir = pathlib.Path(model_dir)
  cfg = BertConfig.from_json(model_dir / "config.json")
  weights = read_bert_weights(model_dir / "model.safetensors", cfg)
  graphdef, state = nnx.split(abstract_bert(cfg, dtype=dtype, attention_impl=attention_impl))
  flat = dict(nnx.to_flat_state(state))
  if set(flat) != set(weights):  # the layout table and the module must agree
    raise AssertionError(f"layout mismatch: {sorted(set(flat) ^ set(weights))[:5]}")
  pure: dict[Any, Any] = {}
  for p, array in weights.items():
    expected = tuple(flat[p].shape)
    if array.shape != expected:
      raise AssertionError(f"{p}: converted shape {array.shape} != module shape {expected}")
    node = pure
    for key in p[:-1]:
      node = node.setdefault(key, {})
    node[p[-1]] = jnp.asarray(array)
  nnx.replace_by_pure_dict(state, pure)
  return nnx.merge(graphdef, state)
