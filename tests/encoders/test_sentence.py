"""SentenceEncoder: golden parity with sentence-transformers, batching, data parallelism."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.encoders import sentence, tiny
from lrm.encoders.sentence import SentenceEncoder
from lrm.parallel import make_mesh


@pytest.fixture(scope="module")
def golden(shared_dir):
  return json.loads((shared_dir / "models" / "all-MiniLM-L6-v2" / "golden.json").read_text())


@pytest.fixture(scope="module")
def minilm(minilm_path):
  return SentenceEncoder(minilm_path)  # default mesh: all 8 test devices


@pytest.fixture
def tiny_dir(tmp_path):
  return tiny.write_tiny_bert(tmp_path / "tiny", seed=1)


def _cosines(a, b):
  return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_golden_parity(minilm, golden):
  got = minilm.encode(golden["sentences"])
  want = np.asarray(golden["embeddings"], np.float32)
  assert got.shape == want.shape == (12, 384) and got.dtype == np.float32
  cos = _cosines(got, want)
  assert (cos >= 0.9999).all(), cos
  np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_golden_token_ids(minilm, golden):
  assert minilm.tokenize(golden["sentences"][:2]) == golden["input_ids_first_two"]
  # Truncation to max_seq_length (256), not tokenizer.json's own 128.
  ids = minilm.tokenize(golden["sentences"])
  assert max(len(x) for x in ids) == 256 and all(x[-1] == 102 for x in ids)


def test_batched_equals_one_at_a_time(minilm, golden):
  batched = minilm.encode(golden["sentences"])
  single = np.concatenate([minilm.encode([s]) for s in golden["sentences"]])
  np.testing.assert_allclose(batched, single, atol=2e-5)


def test_eight_devices_match_one(minilm, minilm_path, golden):
  assert jax.device_count() == 8 and minilm.data_parallel == 8
  one = SentenceEncoder(minilm_path, mesh=make_mesh(devices=jax.devices()[:1]))
  texts = golden["sentences"] * 3  # 36 texts: several batches, a padded tail
  np.testing.assert_allclose(minilm.encode(texts, batch_size=16), one.encode(texts, batch_size=16),
                             atol=2e-5)


def test_tiny_checkpoint_encodes_in_input_order(tiny_dir):
  enc = SentenceEncoder(tiny_dir, mesh=make_mesh(devices=jax.devices()[:2]))
  texts = ["red nail polish", "", "blue eye shadow and lip gloss " * 10, "face cream",
           "Ünïcödé 123 !?", "hair brush"]
  emb = enc.encode(texts, batch_size=4)
  assert emb.shape == (6, 16) and emb.dtype == np.float32
  assert np.isfinite(emb).all()
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  perm = [3, 5, 0, 2, 1, 4]
  np.testing.assert_allclose(enc.encode([texts[i] for i in perm]), emb[perm], atol=1e-5)
  # Distinct texts, distinct vectors (the random model still reads its input).
  assert _cosines(emb[:1], emb[3:4])[0] < 0.999
  assert len(enc.tokenize(texts)[2]) == 32  # truncated to sentence_bert_config's 32
  assert enc.encode([]).shape == (0, 16)


def test_micro_batches_give_the_same_embeddings(tiny_dir):
  one_device = make_mesh(devices=jax.devices()[:1])
  split = SentenceEncoder(tiny_dir, mesh=one_device)
  assert split.micro_batches == 2  # the one-device CPU default
  whole = SentenceEncoder(tiny_dir, mesh=one_device, micro_batches=1)
  texts = [f"red nail polish {'and blue ' * i}" for i in range(9)]
  np.testing.assert_allclose(split.encode(texts), whole.encode(texts), atol=1e-6)
  for _, _, rows in split.plan_batches(np.arange(3, 40)):
    assert rows % 2 == 0


def test_warmup_compiles_exactly_the_shapes_encode_uses(tiny_dir):
  enc = SentenceEncoder(tiny_dir, mesh=make_mesh(devices=jax.devices()[:1]), tokens_per_batch=64,
                        shape_cost_batches=0)
  texts = [("nail polish " * i).strip() for i in range(1, 16)]
  shapes = {(r, b) for _, b, r in enc.plan_batches(np.diff(enc._tokenize_flat(texts)[1]))}
  assert len(shapes) > 1
  enc.warmup(texts)
  assert enc._forward._cache_size() == len(shapes)
  enc.encode(texts)
  assert enc._forward._cache_size() == len(shapes)  # nothing new to compile


def test_describe(tiny_dir):
  d = SentenceEncoder(tiny_dir, name="tiny").describe()
  assert d["kind"] == "sentence" and d["name"] == "tiny" and d["dims"] == 16
  assert d["max_seq_length"] == 32 and d["pooling"] == "mean" and d["dtype"] == "float32"
  assert len(d["weights_sha256"]) == 64


def test_cls_pooling(tiny_dir):
  (tiny_dir / "1_Pooling" / "config.json").write_text(json.dumps(
      {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False}))
  cls = SentenceEncoder(tiny_dir)
  assert cls.pooling == "cls"
  from lrm.encoders import bert
  import jax.numpy as jnp
  ids = cls.tokenize(["red nail polish"])
  hidden = np.asarray(bert.load_bert(tiny_dir)(jnp.asarray(ids), jnp.ones((1, len(ids[0])))))
  want = hidden[0, 0] / np.linalg.norm(hidden[0, 0])
  np.testing.assert_allclose(cls.encode(["red nail polish"])[0], want, atol=1e-5)


@pytest.mark.parametrize("pooling", [
    {"pooling_mode_cls_token": True, "pooling_mode_mean_tokens": True},
    {"pooling_mode_weightedmean_tokens": True},
    {"pooling_mode_mean_tokens": False},
])
def test_unsupported_pooling_is_rejected(tiny_dir, pooling):
  (tiny_dir / "1_Pooling" / "config.json").write_text(json.dumps(pooling))
  with pytest.raises(ConfigError, match=r"1_Pooling/config\.json: pooling .* not supported"):
    SentenceEncoder(tiny_dir)


def test_unsupported_module_is_rejected(tiny_dir):
  (tiny_dir / "modules.json").write_text(json.dumps([
      {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
      {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
      {"idx": 2, "name": "2", "path": "2_Dense", "type": "sentence_transformers.models.Dense"}]))
  with pytest.raises(DataError, match=r"modules\.json: module .*Dense.* not supported"):
    SentenceEncoder(tiny_dir)


def test_missing_tokenizer_is_named(tiny_dir):
  (tiny_dir / "tokenizer.json").unlink()
  with pytest.raises(DataError, match=r"tokenizer\.json: no such file"):
    SentenceEncoder(tiny_dir)


def test_bad_texts_and_options(tiny_dir):
  enc = SentenceEncoder(tiny_dir)
  with pytest.raises(DataError, match="single str"):
    enc.encode("one text")
  with pytest.raises(DataError, match="text 1 is int"):
    enc.encode(["ok", 3])
  with pytest.raises(ConfigError, match="batch_size"):
    enc.encode(["ok"], batch_size=0)
  with pytest.raises(ConfigError, match="dtype"):
    SentenceEncoder(tiny_dir, dtype="float16")


@pytest.mark.parametrize("buckets", [None, (8, 16, 24, 32, 48, 64)])
def test_plan_batches_cover_every_text_with_few_shapes(tiny_dir, buckets):
  enc = SentenceEncoder(tiny_dir, mesh=make_mesh(), max_seq_length=64, tokens_per_batch=256,
                        buckets=buckets)
  rng = np.random.default_rng(0)
  lengths = np.minimum(rng.geometric(0.06, size=1000) + 2, 64)
  batches = enc.plan_batches(lengths, batch_size=32)
  rows = np.concatenate([b[0] for b in batches])
  assert sorted(rows.tolist()) == list(range(1000))
  shapes, used = set(), set()
  for chunk, bucket, padded_rows in batches:
    assert bucket in (enc.buckets or enc.bucket_grid) and lengths[chunk].max() <= bucket
    assert len(chunk) <= padded_rows <= 32 and padded_rows % 8 == 0
    shapes.add((padded_rows, bucket))
    used.add(bucket)
  assert len(shapes) <= len(used) + 1  # one shape per bucket, plus the tail
  assert len(used) <= 12
  # Bucketing keeps padding low on this length mix.
  assert lengths.sum() / sum(b * r for _, b, r in batches) > 0.75


def _brute_force_buckets(lengths, candidates, cost):
  import itertools
  best = None
  top = candidates[np.searchsorted(candidates, lengths.max())]
  rest = [c for c in candidates if c < top]
  for k in range(len(rest) + 1):
    for subset in itertools.combinations(rest, k):
      b = np.array(sorted(subset) + [top])
      total = b[np.searchsorted(b, lengths)].sum() - lengths.sum() + cost * len(b)
      if best is None or total < best[0]:
        best = (total, tuple(int(x) for x in b))
  return best


@pytest.mark.parametrize("seed", range(6))
def test_choose_buckets_is_optimal(seed):
  rng = np.random.default_rng(seed)
  candidates = np.array([4, 8, 12, 16, 24, 32, 48, 64])
  lengths = rng.integers(2, 65, size=rng.integers(1, 60))
  cost = float(rng.choice([0, 10, 50, 200]))
  chosen = sentence.choose_buckets(lengths, candidates, cost)
  b = np.array(chosen)
  total = b[np.searchsorted(b, lengths)].sum() - lengths.sum() + cost * len(b)
  assert total == _brute_force_buckets(lengths, candidates, cost)[0]
  assert set(chosen) <= set(candidates.tolist()) and chosen[-1] >= lengths.max()


def test_choose_buckets_trades_padding_for_compiles():
  lengths = np.repeat([10, 30, 60], 100)
  grid = tuple(range(4, 65, 4))
  assert sentence.choose_buckets(lengths, grid, 0) == (12, 32, 60)
  assert sentence.choose_buckets(lengths, grid, 1e9) == (60,)


def test_bucket_length():
  assert sentence.bucket_length(3, (16, 32)) == 16
  assert sentence.bucket_length(17, (16, 32)) == 32
  assert sentence.bucket_length(40, (16, 32)) == 32
