"""A sentence encoder as sentence-transformers builds it: tokenizer + BERT + pooling + L2 norm.

Reads a model folder in Hugging Face / sentence-transformers layout (tokenizer.json,
config.json, model.safetensors, optionally sentence_bert_config.json, modules.json and
1_Pooling/config.json) and encodes texts with one jitted forward function:

- texts are tokenized once, sorted by token length, and cut into batches of similar length;
- each batch is padded to one of a few bucket lengths (and a fixed number of rows), so only a
  few shapes are ever compiled; the buckets are picked per call from a grid by a small dynamic
  program that weighs padding against compiles (`choose_buckets`);
- batches are sharded over the data axes of a device mesh (params replicated) and dispatched
  asynchronously, so the host prepares batch i+1 while the devices run batch i.

On a 2-core CPU (Amazon Beauty, 12,101 item texts, all-MiniLM-L6-v2, fp32): ~370 items/s on one
XLA device, ~395 on two host devices (XLA_FLAGS=--xla_force_host_platform_device_count=2);
sentence-transformers with torch: ~349. See benchmarks/embed_throughput.py.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import pathlib
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from lrm.core.artifacts import read_json
from lrm.core.errors import ConfigError, DataError
from lrm.encoders import bert
from lrm.encoders.texts import check_texts
from lrm.parallel import mesh as mesh_lib

DEFAULT_MAX_SEQ_LENGTH = 256
# Pad lengths the buckets are picked from: fine where item texts are dense, coarse beyond.
BUCKET_GRID = (tuple(range(4, 65, 4)) + tuple(range(72, 129, 8)) + tuple(range(144, 257, 16))
               + tuple(range(288, 513, 32)))
# What one more compiled shape costs, in padded tokens' worth of compute (a compile of this model
# takes about as long as 3 batches on a 2-core CPU; far longer, relatively, on accelerators).
SHAPE_COST_BATCHES = {"cpu": 3}
ACCELERATOR_SHAPE_COST_BATCHES = 30
# Rows per batch = min(batch_size, tokens_per_batch // bucket): short texts get wide batches,
# long ones narrow, so a batch costs about the same at every length. On a 2-core CPU, small
# batches (activations in cache) ran fastest (3,000 Amazon Beauty items, ~32 tokens each:
# 1k tokens per batch 300 items/s, 2k 316/s, 4k 261/s, 16k 169/s); accelerators want large ones.
DEFAULT_BATCH_SIZE = 128
DEFAULT_TOKENS_PER_BATCH = {"cpu": 2048}
ACCELERATOR_TOKENS_PER_BATCH = 65536
POOLING_MODES = ("mean", "cls", "max")

# Pooling modes sentence-transformers writes in 1_Pooling/config.json.
_POOLING_KEYS = {
    "pooling_mode_mean_tokens": "mean",
    "pooling_mode_cls_token": "cls",
    "pooling_mode_max_tokens": "max",
    "pooling_mode_mean_sqrt_len_tokens": "mean_sqrt_len",
    "pooling_mode_weightedmean_tokens": "weightedmean",
    "pooling_mode_lasttoken": "lasttoken",
}
# sentence-transformers modules this encoder reproduces; anything else (Dense, ...) would be
# silently skipped, so it is rejected.
_SUPPORTED_MODULES = ("Transformer", "Pooling", "Normalize")


def read_pooling_mode(model_dir: str | os.PathLike) -> str:
  """The pooling of a sentence-transformers folder ("mean" when it says nothing)."""
  model_dir = pathlib.Path(model_dir)
  modules_path = model_dir / "modules.json"
  pooling_dir = model_dir / "1_Pooling"
  if modules_path.is_file():
    modules = read_json(modules_path)
    for module in modules if isinstance(modules, list) else []:
      kind = str(module.get("type", "")).rsplit(".", 1)[-1]
      if kind not in _SUPPORTED_MODULES:
        raise DataError(f"module '{module.get('type')}' (path '{module.get('path')}') is not "
                        f"supported: only {list(_SUPPORTED_MODULES)}", path=modules_path)
      if kind == "Pooling" and module.get("path"):
        pooling_dir = model_dir / module["path"]
  config_path = pooling_dir / "config.json"
  if not config_path.is_file():
    return "mean"
  cfg = read_json(config_path)
  modes = [mode for key, mode in _POOLING_KEYS.items() if cfg.get(key)]
  if "pooling_mode" in cfg and isinstance(cfg["pooling_mode"], str):
    modes = [cfg["pooling_mode"]]
  if len(modes) != 1 or modes[0] not in POOLING_MODES:
    raise ConfigError("pooling", f"{config_path}: pooling {modes or 'none'} is not supported; "
                      f"exactly one of {list(POOLING_MODES)} is")
  return modes[0]


def _pool(hidden: jax.Array, mask: jax.Array, mode: str) -> jax.Array:
  """Pools token states into one L2-normalised vector per row.

  Shape: hidden [b, l, d], mask [b, l] -> float32 [b, d].
  """
  hidden = hidden.astype(jnp.float32)
  mask = mask.astype(jnp.float32)[..., None]
  if mode == "mean":
    pooled = (hidden * mask).sum(1) / jnp.maximum(mask.sum(1), 1e-9)
  elif mode == "cls":
    pooled = hidden[:, 0]
  else:  # max over real tokens
    pooled = jnp.where(mask > 0, hidden, -1e9).max(1)
  # sentence-transformers' Normalize: x / max(||x||, 1e-12).
  return pooled / jnp.maximum(jnp.linalg.norm(pooled, axis=-1, keepdims=True), 1e-12)


def _encode_batch(graphdef: nnx.GraphDef, state: nnx.State, input_ids: jax.Array,
                  attention_mask: jax.Array, *, pooling: str, micro_batches: int) -> jax.Array:
  """Shape: input_ids, attention_mask int32 [b, l] -> float32 [b, d].

  With micro_batches > 1 the rows run as independent sub-graphs, which XLA's CPU runtime
  executes concurrently: both cores stay busy between the small ops of one sub-batch.
  """
  model = nnx.merge(graphdef, state)
  outs = [_pool(model(ids, mask), mask, pooling)
          for ids, mask in zip(jnp.split(input_ids, micro_batches),
                               jnp.split(attention_mask, micro_batches))]
  return outs[0] if micro_batches == 1 else jnp.concatenate(outs)


def choose_buckets(lengths: np.ndarray, candidates: Sequence[int], shape_cost_tokens: float,
                   max_buckets: int = 32) -> tuple[int, ...]:
  """The pad lengths (a subset of `candidates`) that minimise padding + compiles.

  Exact 1-d segmentation by dynamic programming: each text is padded to the smallest chosen
  bucket >= its length; the cost is the padded tokens plus `shape_cost_tokens` per bucket.
  The longest text's bucket is always chosen.

  Shape: lengths int [n].
  """
  candidates = np.asarray(sorted(set(int(c) for c in candidates)), np.int64)
  lengths = np.minimum(np.asarray(lengths, np.int64), candidates[-1])
  cell = candidates[np.searchsorted(candidates, lengths)]
  values, inverse, counts = np.unique(cell, return_inverse=True, return_counts=True)
  token_sums = np.bincount(inverse.ravel(), weights=lengths, minlength=len(values))
  num = len(values)
  count_cum = np.concatenate([[0], np.cumsum(counts)])
  token_cum = np.concatenate([[0.0], np.cumsum(token_sums)])

  def waste(first: np.ndarray, last: int) -> np.ndarray:
    """Padding when cells first..last all pad to values[last]."""
    return (values[last] * (count_cum[last + 1] - count_cum[first])
            - (token_cum[last + 1] - token_cum[first]))

  # best[k, j]: least padding covering cells 0..j with k + 1 buckets, the last one values[j].
  max_buckets = min(max_buckets, num)
  best = np.full((max_buckets, num), np.inf)
  parent = np.full((max_buckets, num), -1)
  best[0] = [waste(np.array([0]), j)[0] for j in range(num)]
  for k in range(1, max_buckets):
    for j in range(k, num):
      prev = np.arange(k - 1, j)  # the previous bucket ends at cell `prev`
      costs = best[k - 1, prev] + waste(prev + 1, j)
      i = int(np.argmin(costs))
      best[k, j], parent[k, j] = costs[i], prev[i]
  totals = best[:, num - 1] + shape_cost_tokens * np.arange(1, max_buckets + 1)
  k, j = int(np.argmin(totals)), num - 1
  chosen = []
  while j >= 0 and k >= 0:
    chosen.append(int(values[j]))
    j, k = int(parent[k, j]), k - 1
  return tuple(sorted(chosen))


def bucket_length(length: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= length (the last bucket caps: texts are truncated to it)."""
  for b in buckets:
    if b >= length:
      return b
  return buckets[-1]


class SentenceEncoder:
  """Texts -> L2-normalised float32 embeddings, sentence-transformers compatible.

  Args:
    model_dir: a folder with tokenizer.json, config.json and model.safetensors.
    max_seq_length: tokens per text (longer texts are truncated); default from
      sentence_bert_config.json, else 256.
    batch_size: most texts per batch.
    tokens_per_batch: padded tokens per batch (rows = min(batch_size, tokens // length));
      default 2048 on CPU, 65536 on accelerators.
    dtype: compute dtype ("float32" or "bfloat16"); parameters stay float32.
    mesh: device mesh for data parallelism; default: over this process's devices.
    buckets: fixed pad lengths; default: chosen per `encode` call from BUCKET_GRID by
      `choose_buckets` (least padding + compiles for the call's length mix).
    shape_cost_batches: what one more compiled shape costs, in batches' worth of compute
      (default 3 on CPU, 30 on accelerators); higher -> fewer buckets.
    micro_batches: independent sub-batches per batch; default 2 on a one-device CPU
      mesh (measured 2-10% faster on 2 cores), else 1.
  """

  def __init__(self, model_dir: str | os.PathLike, *, max_seq_length: int | None = None,
               batch_size: int = DEFAULT_BATCH_SIZE, tokens_per_batch: int | None = None,
               dtype: str | Any = "float32",
               mesh: jax.sharding.Mesh | None = None, buckets: Sequence[int] | None = None,
               shape_cost_batches: float | None = None, micro_batches: int | None = None,
               name: str | None = None):
    self.path = pathlib.Path(model_dir)
    if not self.path.is_dir():
      raise DataError("not a directory (a sentence encoder folder is needed)", path=self.path)
    self.name = name or self.path.name
    self.dtype = jnp.dtype(dtype)
    if self.dtype not in (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16)):
      raise ConfigError("dtype", f"must be float32 or bfloat16, got {self.dtype}")
    if batch_size <= 0:
      raise ConfigError("batch_size", f"must be positive, got {batch_size}")
    self.batch_size = int(batch_size)

    st_config_path = self.path / "sentence_bert_config.json"
    st_config = read_json(st_config_path) if st_config_path.is_file() else {}
    self.do_lower_case = bool(st_config.get("do_lower_case", False))
    self.pooling = read_pooling_mode(self.path)
    self.config = bert.BertConfig.from_json(self.path / "config.json")
    if max_seq_length is None:
      max_seq_length = st_config.get("max_seq_length") or DEFAULT_MAX_SEQ_LENGTH
    if not isinstance(max_seq_length, int) or max_seq_length < 2:
      raise ConfigError("max_seq_length", f"must be an integer >= 2, got {max_seq_length!r}")
    self.max_seq_length = min(max_seq_length, self.config.max_position_embeddings)
    self.buckets = None if buckets is None else _cap_buckets(buckets, self.max_seq_length)
    self.bucket_grid = _cap_buckets(BUCKET_GRID, self.max_seq_length)

    self.tokenizer = self._load_tokenizer()
    # This process's devices: encoding is per process work, also in a multi-process job.
    self.mesh = mesh if mesh is not None else mesh_lib.make_mesh(devices=jax.local_devices())
    self.data_parallel = mesh_lib.data_parallel_size(self.mesh)
    platform = self.mesh.devices.flat[0].platform
    if tokens_per_batch is None:
      tokens_per_batch = DEFAULT_TOKENS_PER_BATCH.get(platform, ACCELERATOR_TOKENS_PER_BATCH)
    if tokens_per_batch <= 0:
      raise ConfigError("tokens_per_batch", f"must be positive, got {tokens_per_batch}")
    self.tokens_per_batch = int(tokens_per_batch)
    if shape_cost_batches is None:
      shape_cost_batches = SHAPE_COST_BATCHES.get(platform, ACCELERATOR_SHAPE_COST_BATCHES)
    if shape_cost_batches < 0:
      raise ConfigError("shape_cost_batches", f"must be >= 0, got {shape_cost_batches}")
    self.shape_cost_batches = float(shape_cost_batches)
    if micro_batches is None:
      micro_batches = 2 if platform == "cpu" and self.data_parallel == 1 else 1
    if micro_batches < 1:
      raise ConfigError("micro_batches", f"must be >= 1, got {micro_batches}")
    self.micro_batches = int(micro_batches)
    # Batches are padded to a multiple of this many rows.
    self._row_multiple = self.data_parallel * self.micro_batches
    self._batch_sharding = mesh_lib.batch_sharding(self.mesh, 2)
    model = bert.load_bert(self.path, dtype=self.dtype)
    graphdef, state = nnx.split(model)
    # Replicated params: each device encodes its own slice of the batch.
    self._state = jax.device_put(state, mesh_lib.replicated(self.mesh))
    self._forward = jax.jit(
        functools.partial(_encode_batch, graphdef, pooling=self.pooling,
                          micro_batches=self.micro_batches),
        in_shardings=(mesh_lib.replicated(self.mesh), self._batch_sharding,
                      self._batch_sharding),
        out_shardings=mesh_lib.batch_sharding(self.mesh, 2))
    self._weights_sha256: str | None = None

  @property
  def dim(self) -> int:
    return self.config.hidden_size

  def _load_tokenizer(self):
    path = self.path / "tokenizer.json"
    if not path.is_file():
      raise DataError("no such file (a Hugging Face fast-tokenizer file is needed)", path=path)
    try:
      tokenizer = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for malformed files
      raise DataError(f"cannot load tokenizer: {e}", path=path) from None
    # tokenizer.json may carry its own padding/truncation (all-MiniLM-L6-v2: fixed 128).
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=self.max_seq_length)
    return tokenizer

  def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
    """Token ids per text, with special tokens, truncated to max_seq_length."""
    flat, offsets = self._tokenize_flat(texts)
    return [flat[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]

  def _tokenize_flat(self, texts: Sequence[str], chunk: int = 8192
                     ) -> tuple[np.ndarray, np.ndarray]:
    """All token ids in one int32 array, text i at flat[offsets[i]:offsets[i + 1]].

    Flat arrays, not lists of Python ints: a million texts would otherwise hold ~1 GB.

    Shape: -> int32 [tokens], int64 [n + 1].
    """
    texts = check_texts(texts)
    parts, lengths = [], []
    for start in range(0, len(texts), chunk):
      batch = texts[start:start + chunk]
      if self.do_lower_case:
        batch = [t.lower() for t in batch]
      encodings = self.tokenizer.encode_batch(batch, add_special_tokens=True)
      lengths.extend(len(e.ids) for e in encodings)
      parts.append(np.fromiter(itertools.chain.from_iterable(e.ids for e in encodings),
                               np.int32))
    flat = np.concatenate(parts) if parts else np.zeros(0, np.int32)
    return flat, np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])

  def rows_for(self, bucket: int, batch_size: int | None = None) -> int:
    """Rows per batch at a bucket length: about tokens_per_batch tokens, a multiple of dp."""
    rows = max(1, min(batch_size or self.batch_size, self.tokens_per_batch // bucket))
    return -(-rows // self._row_multiple) * self._row_multiple

  def plan_batches(self, lengths: np.ndarray, batch_size: int | None = None
                   ) -> list[tuple[np.ndarray, int, int]]:
    """Cuts texts into (rows, bucket length, padded row count) batches, longest first.

    As sentence-transformers does, texts are sorted by length so a batch holds similar
    lengths; a batch is padded to the bucket of its longest text and to that bucket's row
    count, so shapes repeat.

    Shape: lengths int [n].
    """
    buckets = self.buckets or choose_buckets(
        lengths, self.bucket_grid, self.shape_cost_batches * self.tokens_per_batch)
    order = np.argsort(-lengths, kind="stable")
    batches = []
    start = 0
    while start < len(order):
      bucket = bucket_length(int(lengths[order[start]]), buckets)
      rows = self.rows_for(bucket, batch_size)
      chunk = order[start:start + rows]
      padded_rows = rows
      if len(chunk) < rows and not any(b == bucket for _, b, _ in batches):
        # A short last batch in a bucket of its own: a power of two bounds the shapes. (After
        # full batches of its bucket it reuses their shape: cheaper than one more compile.)
        padded_rows = min(rows, 1 << (len(chunk) - 1).bit_length())
        padded_rows = -(-padded_rows // self._row_multiple) * self._row_multiple
      batches.append((chunk, bucket, padded_rows))
      start += len(chunk)
    return batches

  def encode(self, texts: Sequence[str], *, batch_size: int | None = None,
             show_progress: bool = False) -> np.ndarray:
    """Embeddings of `texts` in input order.

    Shape: -> float32 [n, d], rows L2-normalised.
    """
    if batch_size is not None and batch_size <= 0:
      raise ConfigError("batch_size", f"must be positive, got {batch_size}")
    flat, offsets = self._tokenize_flat(texts)
    flat = np.append(flat, np.int32(0))  # a pad id past the end: gathers never go out of range
    lengths = np.diff(offsets)
    n = len(lengths)
    out = np.zeros((n, self.dim), np.float32)
    if n == 0:
      return out
    pending: list[tuple[np.ndarray, jax.Array]] = []
    with tqdm(total=n, unit="items", desc=f"encode ({self.name})", disable=not show_progress,
              smoothing=0.1) as bar:
      for rows, bucket, padded_rows in self.plan_batches(lengths, batch_size):
        positions = np.arange(bucket)
        mask = np.zeros((padded_rows, bucket), np.int32)
        mask[:len(rows)] = positions[None] < lengths[rows][:, None]
        mask[len(rows):, 0] = 1  # padding rows: one token, so nothing divides by zero
        gather = np.minimum(offsets[rows][:, None] + positions[None], len(flat) - 1)
        input_ids = np.zeros((padded_rows, bucket), np.int32)
        input_ids[:len(rows)] = np.where(mask[:len(rows)] > 0, flat[gather], 0)
        pending.append((rows, self._forward(
            self._state, jax.device_put(input_ids, self._batch_sharding),
            jax.device_put(mask, self._batch_sharding))))
        # Keep two batches in flight: the host builds the next while devices compute.
        while len(pending) > 2:
          bar.update(self._collect(pending.pop(0), out))
      while pending:
        bar.update(self._collect(pending.pop(0), out))
    return out

  @staticmethod
  def _collect(item: tuple[np.ndarray, jax.Array], out: np.ndarray) -> int:
    rows, emb = item
    out[rows] = np.asarray(emb)[:len(rows)]
    return len(rows)

  def warmup(self, texts: Sequence[str], *, batch_size: int | None = None) -> float:
    """Compiles (and runs once) every batch shape `encode(texts)` will use; returns seconds."""
    start = time.perf_counter()
    lengths = np.diff(self._tokenize_flat(texts)[1])
    shapes = {(rows, bucket) for _, bucket, rows in self.plan_batches(lengths, batch_size)}
    for rows, bucket in sorted(shapes):
      ones = np.ones((rows, bucket), np.int32)
      self._forward(self._state, jax.device_put(ones, self._batch_sharding),
                    jax.device_put(ones, self._batch_sharding)).block_until_ready()
    return time.perf_counter() - start

  def weights_sha256(self) -> str:
    if self._weights_sha256 is None:
      h = hashlib.sha256()
      with open(self.path / "model.safetensors", "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
          h.update(block)
      self._weights_sha256 = h.hexdigest()
    return self._weights_sha256

  def describe(self) -> dict[str, Any]:
    """What a manifest records about this encoder."""
    return {
        "kind": "sentence",
        "name": self.name,
        "path": str(self.path.resolve()),
        "dims": self.dim,
        "max_seq_length": self.max_seq_length,
        "dtype": str(self.dtype),
        "pooling": self.pooling,
        "normalize": True,
        "architecture": "bert",
        "num_layers": self.config.num_hidden_layers,
        "hidden_size": self.config.hidden_size,
        "vocab_size": self.config.vocab_size,
        "weights_sha256": self.weights_sha256(),
        "devices": int(self.mesh.size),
    }


def _cap_buckets(buckets: Sequence[int], max_seq_length: int) -> tuple[int, ...]:
  """Sorted pad lengths <= max_seq_length, ending with max_seq_length."""
  capped = sorted({min(int(b), max_seq_length) for b in buckets if int(b) > 0})
  if not capped or capped[-1] < max_seq_length:
    capped.append(max_seq_length)
  return tuple(capped)
