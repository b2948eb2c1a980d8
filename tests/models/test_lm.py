"""lrm.models.lm (the bilingual decoder-only LM) and lrm.models.vocab_growth."""

import dataclasses
import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.decode.generative import recommend
from lrm.models.lm import (LM, LMConfig, SIDDecoder, apply_rope, attention_mask, count_params,
                           flops_per_token, greedy_generate, lm_config, lm_loss, lm_rngs)
from lrm.models.vocab_growth import grow_vocab, sid_levels
from lrm.parallel.mesh import batch_sharding, make_mesh
from lrm.parallel.rules import sharding_context
from lrm.sid.trie import build_trie
from lrm.train.optimizer import make_optimizer
from lrm.train.trainer import make_train_step, state_shardings, train

SIZES = (8, 8, 4)
SID_START = 100
TINY = LMConfig(vocab_size=128, d_model=32, num_layers=2, num_heads=4, num_kv_heads=2,
                head_dim=8, mlp_dim=64, sid_start=SID_START, codebook_sizes=SIZES)

_forward = nnx.jit(lambda m, tok, seg, pos, pre: m(tok, segment_ids=seg, positions=pos,
                                                   prefix=pre))
_hidden = nnx.jit(lambda m, tok, seg, pos: m.hidden(tok, segment_ids=seg, positions=pos))
_loss = nnx.jit(lambda m, batch: lm_loss(m, batch))


@functools.lru_cache(maxsize=None)
def _model(seed: int = 0, **kw) -> LM:
  return LM(dataclasses.replace(TINY, **kw), rngs=nnx.Rngs(seed))


def _rows(tokens, segment_ids=None, positions=None, prefix=None):
  tokens = jnp.asarray(tokens, jnp.int32)
  b, l = tokens.shape
  seg = jnp.ones((b, l), jnp.int32) if segment_ids is None else jnp.asarray(segment_ids,
                                                                            jnp.int32)
  pos = jnp.broadcast_to(jnp.arange(l, dtype=jnp.int32), (b, l)) if positions is None \
      else jnp.asarray(positions, jnp.int32)
  pre = jnp.zeros((b, l), bool) if prefix is None else jnp.asarray(prefix, bool)
  return tokens, seg, pos, pre


def _logits(model, *args):
  return np.asarray(_forward(model, *_rows(*args)))


def test_config_errors_name_the_field():
  with pytest.raises(ConfigError, match="model.num_kv_heads"):
    dataclasses.replace(TINY, num_kv_heads=3)
  with pytest.raises(ConfigError, match="model.head_dim"):
    dataclasses.replace(TINY, head_dim=7)
  with pytest.raises(ConfigError, match="model.dtype"):
    dataclasses.replace(TINY, dtype="float16")
  with pytest.raises(ConfigError, match="model.vocab_size"):
    dataclasses.replace(TINY, sid_start=120)
  with pytest.raises(ConfigError, match="model.attention_impl"):
    dataclasses.replace(TINY, attention_impl="flash")
  with pytest.raises(ConfigError, match="model.d_model"):
    dataclasses.replace(TINY, d_model=0)
  with pytest.raises(ConfigError, match="model.size"):
    lm_config("2b", 32768)
  with pytest.raises(ConfigError, match="model.codebook_sizes"):
    SIDDecoder(_model(codebook_sizes=(), sid_start=0))


def test_dropout_acts_in_training_only_and_leaves_the_weights_alone():
  with pytest.raises(ConfigError, match="model.dropout"):
    dataclasses.replace(TINY, dropout=1.0)
  plain = LM(TINY, rngs=lm_rngs(0))
  dropped = LM(dataclasses.replace(TINY, dropout=0.3), rngs=lm_rngs(0))
  # Same parameters: dropout adds RNG streams, never weights.
  assert jax.tree.map(np.shape, nnx.state(plain, nnx.Param)) == \
      jax.tree.map(np.shape, nnx.state(dropped, nnx.Param))
  nnx.update(dropped, nnx.state(plain, nnx.Param))
  tokens = np.random.default_rng(0).integers(3, 100, (2, 7))
  dropped.train()
  first, second = _logits(dropped, tokens), _logits(dropped, tokens)
  assert not np.allclose(first, second)            # fresh masks per call
  assert not np.allclose(first, _logits(plain, tokens))
  dropped.eval()
  np.testing.assert_allclose(_logits(dropped, tokens), _logits(plain, tokens), atol=1e-6)


@pytest.mark.parametrize("kw", [{}, {"tie_embeddings": False, "qkv_bias": True, "qk_norm": True}])
def test_parameter_count_and_flops(kw):
  cfg = dataclasses.replace(TINY, **kw)
  abstract = nnx.eval_shape(lambda: LM(cfg, rngs=nnx.Rngs(0)))
  actual = sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param)))
  assert count_params(cfg)["total"] == actual
  # 6 x (blocks + head matmul) + PaLM's attention term.
  matmul = count_params(cfg)["non_embedding"] + 128 * 32
  assert flops_per_token(cfg, 64) == 6 * matmul + 12 * 2 * 4 * 8 * 64
  big = count_params(lm_config("300m", 32768))["total"]
  assert 2.5e8 < big < 3.5e8


def test_attention_mask_structure():
  seg = jnp.array([[1, 1, 1, 2, 2, 0]])
  pos = jnp.array([[0, 1, 2, 0, 1, 0]])
  pre = jnp.array([[True, True, False, True, False, False]])
  np.testing.assert_array_equal(np.asarray(attention_mask(seg, pos, pre)[0, 0]),
                                [[1, 1, 0, 0, 0, 0],
                                 [1, 1, 0, 0, 0, 0],
                                 [1, 1, 1, 0, 0, 0],
                                 [0, 0, 0, 1, 0, 0],
                                 [0, 0, 0, 1, 1, 0],
                                 [0, 0, 0, 0, 0, 1]])


def test_packing_segments_causality_and_prefix():
  model = _model()
  rng = np.random.default_rng(0)
  a, b = rng.integers(3, 128, 5), rng.integers(3, 128, 4)
  # Row: [A (prefix of 2) | B | 3 padding]; A alone and B alone as references.
  tokens = np.concatenate([a, b, [0, 0, 0]])[None]
  seg = np.array([[1] * 5 + [2] * 4 + [0] * 3])
  pos = np.array([[0, 1, 2, 3, 4, 0, 1, 2, 3, 0, 0, 0]])
  pre = np.array([[1, 1, 0, 0, 0] + [0] * 7], bool)
  packed = _logits(model, tokens, seg, pos, pre)
  alone_a = _logits(model, a[None], None, None, pre[:, :5])
  alone_b = _logits(model, b[None])
  np.testing.assert_allclose(packed[0, :5], alone_a[0], atol=1e-5)
  np.testing.assert_allclose(packed[0, 5:9], alone_b[0], atol=1e-5)
  assert np.isfinite(packed).all()
  # Another segment's tokens never matter.
  other = tokens.copy()
  other[0, 5:9] = (other[0, 5:9] + 7) % 128
  moved = _logits(model, other, seg, pos, pre)
  np.testing.assert_allclose(moved[0, :5], packed[0, :5], atol=1e-6)
  assert not np.allclose(moved[0, 5:9], packed[0, 5:9], atol=1e-4)
  # Causal after the prefix: a later token does not reach earlier ones ...
  later = tokens.copy()
  later[0, 3] = (later[0, 3] + 1) % 128
  changed = _logits(model, later, seg, pos, pre)
  np.testing.assert_allclose(changed[0, :3], packed[0, :3], atol=1e-6)
  # ... but inside the prefix attention is bidirectional: token 1 reaches token 0.
  inside = tokens.copy()
  inside[0, 1] = (inside[0, 1] + 1) % 128
  assert not np.allclose(_logits(model, inside, seg, pos, pre)[0, 0], packed[0, 0], atol=1e-4)
  # Without the prefix flag, token 1 does not reach token 0.
  causal = _logits(model, tokens, seg, pos, np.zeros_like(pre))
  np.testing.assert_allclose(_logits(model, inside, seg, pos, np.zeros_like(pre))[0, 0],
                             causal[0, 0], atol=1e-6)


def test_rope_scores_depend_on_relative_position_only():
  rng = np.random.default_rng(1)
  q = jnp.asarray(rng.standard_normal((1, 1, 1, 8)), jnp.float32)
  k = jnp.asarray(rng.standard_normal((1, 1, 1, 8)), jnp.float32)
  score = lambda m, n: float(jnp.sum(apply_rope(q, jnp.array([[m]]), 100.0)
                                     * apply_rope(k, jnp.array([[n]]), 100.0)))
  assert score(3, 1) == pytest.approx(score(10, 8), abs=1e-4)
  assert score(3, 1) == pytest.approx(score(102, 100), abs=1e-4)
  assert score(3, 1) != pytest.approx(score(3, 2), abs=1e-3)
  # Hence the whole model is invariant to shifting every position.
  model = _model()
  tok = rng.integers(0, 128, (2, 7))
  base = _logits(model, tok)
  shifted = _logits(model, tok, None, np.arange(7)[None].repeat(2, 0) + 13)
  np.testing.assert_allclose(base, shifted, atol=2e-4)


def test_gqa_equals_mha_with_repeated_kv_heads():
  gqa = _model()
  mha = LM(dataclasses.replace(TINY, num_kv_heads=4), rngs=nnx.Rngs(5))
  params = nnx.to_pure_dict(nnx.state(gqa, nnx.Param))
  for layer in params["layers"].values():
    for name in ("key", "value"):
      layer["attention"][name]["kernel"] = jnp.repeat(layer["attention"][name]["kernel"], 2, 1)
  state = nnx.state(mha, nnx.Param)
  nnx.replace_by_pure_dict(state, params)
  nnx.update(mha, state)
  tok = np.random.default_rng(2).integers(0, 128, (2, 9))
  np.testing.assert_allclose(_logits(mha, tok), _logits(gqa, tok), atol=1e-5)


def test_kv_cache_decoding_equals_full_forward():
  model = _model()
  rng = np.random.default_rng(3)
  prompt = rng.integers(3, 100, (2, 6))
  valid = np.ones((2, 6), bool)
  valid[0, :2] = False                                        # left padding
  prefix = valid & (np.arange(6) < 4)
  cont = rng.integers(3, 100, (2, 3))
  full_tokens = np.concatenate([prompt, cont], 1)
  full_valid = np.concatenate([valid, np.ones((2, 3), bool)], 1)
  positions = np.maximum(np.cumsum(full_valid, 1) - 1, 0)
  full_prefix = np.concatenate([prefix, np.zeros((2, 3), bool)], 1)
  full = _logits(model, full_tokens, full_valid.astype(np.int32), positions, full_prefix)

  step = nnx.jit(lambda m, tok, cache: m.decode_step(tok, cache))
  cache = model.init_cache(2, 9)
  logits, cache = nnx.jit(lambda m, t, c, v, p: m.decode_step(t, c, valid=v, prefix=p))(
      model, jnp.asarray(prompt), cache, jnp.asarray(valid), jnp.asarray(prefix))
  np.testing.assert_allclose(np.asarray(logits)[valid], full[:, :6][valid], atol=1e-5)
  for i in range(3):
    logits, cache = step(model, jnp.asarray(cont[:, i:i + 1]), cache)
    np.testing.assert_allclose(np.asarray(logits)[:, 0], full[:, 6 + i], atol=1e-5)
  assert int(cache.length) == 9
  np.testing.assert_array_equal(np.asarray(cache.next_position), [7, 9])
  with pytest.raises(ValueError, match="do not fit"):
    model.decode_step(jnp.asarray(cont[:, :1]), cache)


def _greedy_reference(model, prompt, valid, prefix, allowed, num_tokens):
  """The slow way: a full forward pass of prompt + generated so far for every new token, the
  argmax over allowed tokens at the last real token.

  Shape: prompt [b, P], valid / prefix bool [b, P], allowed bool [v] -> [b, num_tokens].
  """
  b = len(prompt)
  seq, seq_valid, seq_prefix = prompt, valid, prefix
  out = np.zeros((b, num_tokens), np.int64)
  for i in range(num_tokens):
    positions = np.maximum(np.cumsum(seq_valid, 1) - 1, 0)
    logits = _logits(model, seq, seq_valid.astype(np.int32), positions, seq_prefix)
    last = seq.shape[1] - 1 - np.argmax(seq_valid[:, ::-1], 1)
    out[:, i] = np.where(allowed, logits[np.arange(b), last], -np.inf).argmax(-1)
    seq = np.concatenate([seq, out[:, i:i + 1]], 1)
    seq_valid = np.concatenate([seq_valid, np.ones((b, 1), bool)], 1)
    seq_prefix = np.concatenate([seq_prefix, np.zeros((b, 1), bool)], 1)
  return out


_greedy = nnx.jit(lambda m, p, v, pre, allowed, n: greedy_generate(
    m, p, v, n, prompt_prefix=pre, allowed=allowed), static_argnums=(5,))


@pytest.mark.parametrize("masked", [False, True])
def test_greedy_generate_equals_a_full_forward_loop(masked):
  model = _model(seed=1, init_std=0.3)          # a wide init: few near-ties between logits
  rng = np.random.default_rng(9)
  prompt = rng.integers(3, 128, (4, 7)).astype(np.int32)
  valid = np.ones((4, 7), bool)
  valid[0, :3] = False                           # left padding
  valid[1, 5:] = False                           # right padding: continues after slot 4
  prefix = valid & (np.arange(7) < 4) & (np.arange(4) >= 2)[:, None]   # rows 2, 3 prefix-LM
  prompt[~valid] = 0
  allowed = rng.random(128) < 0.5 if masked else np.ones(128, bool)
  out = np.asarray(_greedy(model, prompt, valid, prefix, allowed, 5))
  np.testing.assert_array_equal(out, _greedy_reference(model, prompt, valid, prefix, allowed, 5))
  assert allowed[out].all()
  np.testing.assert_array_equal(np.asarray(_greedy(model, prompt, valid, prefix, allowed, 1)),
                                out[:, :1])


def _teacher_forced_sid_logp(model, prompt, valid, codes):
  """Sum over levels of log-softmax over the level's rows, from the full forward.

  Shape: prompt [b, P], valid [b, P], codes [b, K, L] -> [b, K]."""
  b, K, L = codes.shape
  P = prompt.shape[1]
  offsets = np.asarray(model.config.level_offsets)
  sid = codes + offsets                                                   # [b, K, L]
  tok = np.concatenate([np.repeat(prompt, K, 0), sid.reshape(b * K, L)[:, :L - 1]], 1)
  v = np.concatenate([np.repeat(valid, K, 0), np.ones((b * K, L - 1), bool)], 1)
  hidden = _hidden(model, *_rows(tok, v.astype(np.int32),
                                 np.maximum(np.cumsum(v, 1) - 1, 0))[:3])
  total = np.zeros(b * K)
  for c in range(L):
    lg = model.row_logits(hidden[:, P - 1 + c], offsets[c], SIZES[c])
    lp = np.asarray(jax.nn.log_softmax(lg))
    total += lp[np.arange(b * K), codes.reshape(b * K, L)[:, c]]
  return total.reshape(b, K)


def test_recommend_drives_the_lm_with_teacher_forced_scores():
  model = _model()
  rng = np.random.default_rng(4)
  codes = np.unique(rng.integers(0, SIZES, (40, 3)), axis=0)
  trie = build_trie(codes, SIZES)
  prompt = rng.integers(3, 100, (5, 7)).astype(np.int32)
  valid = np.ones((5, 7), bool)
  valid[1, :3] = False
  valid[3, :1] = False
  prompt[~valid] = 0
  recs = recommend(SIDDecoder(model), prompt, valid, trie, beam_size=8, top_k=5, batch_size=2)
  assert recs.items.shape == (5, 5) and recs.invalid_rate == 0.0
  np.testing.assert_array_equal(codes[recs.items], recs.codes)
  assert all(len(set(row)) == 5 for row in recs.items.tolist())
  np.testing.assert_allclose(recs.scores, _teacher_forced_sid_logp(model, prompt, valid,
                                                                   recs.codes), atol=1e-4)



def test_sid_beam_search_compiles_once_for_every_batch_wrapper_and_checkpoint(monkeypatch):
  """`recommend` traces the LM's beam search once per shape: not per batch, not per
  `SIDDecoder` wrapper (lrm/jobs/lm makes a new one per call), not per set of weights."""
  traces = []
  init_decode = SIDDecoder.init_decode
  monkeypatch.setattr(SIDDecoder, "init_decode",
                      lambda self, *a, **kw: traces.append(1) or init_decode(self, *a, **kw))
  rng = np.random.default_rng(6)
  trie = build_trie(np.unique(rng.integers(0, SIZES, (30, 3)), axis=0), SIZES)
  prompt = rng.integers(3, 100, (5, 11)).astype(np.int32)  # a width no other test decodes
  valid = np.ones((5, 11), bool)
  first = recommend(SIDDecoder(_model()), prompt, valid, trie, beam_size=6, top_k=4, batch_size=2)
  again = recommend(SIDDecoder(_model()), prompt, valid, trie, beam_size=6, top_k=4, batch_size=2)
  other = recommend(SIDDecoder(_model(seed=3)), prompt, valid, trie, beam_size=6, top_k=4,
                    batch_size=2)
  assert len(traces) == 1
  np.testing.assert_array_equal(first.items, again.items)
  assert not np.array_equal(first.scores, other.scores)

def _batch(rng, b=4, l=12):
  tokens = rng.integers(0, 128, (b, l)).astype(np.int32)
  return {"tokens": tokens, "targets": rng.integers(0, 128, (b, l)).astype(np.int32),
          "loss_mask": (rng.random((b, l)) < 0.5).astype(np.float32),
          "segment_ids": np.ones((b, l), np.int32),
          "positions": np.broadcast_to(np.arange(l, dtype=np.int32), (b, l)).copy(),
          "prefix": np.zeros((b, l), bool)}


def test_loss_respects_the_mask():
  model = _model()
  batch = _batch(np.random.default_rng(5))
  loss, aux = _loss(model, batch)
  logits = _logits(model, batch["tokens"])
  logp = np.asarray(jax.nn.log_softmax(logits))
  ce = -np.take_along_axis(logp, batch["targets"][..., None], -1)[..., 0]
  m = batch["loss_mask"]
  assert float(loss) == pytest.approx((ce * m).sum() / m.sum(), rel=1e-5)
  assert float(aux["scored_tokens"]) == m.sum()
  hits = (logits.argmax(-1) == batch["targets"]) * m
  assert float(aux["token_accuracy"]) == pytest.approx(hits.sum() / m.sum())
  unscored = dict(batch, targets=np.where(m > 0, batch["targets"], 5).astype(np.int32))
  assert float(_loss(model, unscored)[0]) == pytest.approx(float(loss), rel=1e-6)
  empty = dict(batch, loss_mask=np.zeros_like(m))
  assert float(_loss(model, empty)[0]) == 0.0
  with pytest.raises(KeyError, match="prefix"):
    lm_loss(model, {k: v for k, v in batch.items() if k != "prefix"})


def test_bfloat16_and_remat():
  batch = _batch(np.random.default_rng(6))
  bf16 = LM(dataclasses.replace(TINY, dtype="bfloat16"), rngs=nnx.Rngs(0))
  logits = _logits(bf16, batch["tokens"])
  assert logits.dtype == np.float32 and np.isfinite(logits).all()
  grad = nnx.jit(nnx.value_and_grad(lambda m, b: lm_loss(m, b)[0]))
  plain_loss, plain = grad(_model(), batch)
  remat_model = LM(dataclasses.replace(TINY, remat=True), rngs=nnx.Rngs(0))
  remat_loss, remat = grad(remat_model, batch)
  assert float(remat_loss) == pytest.approx(float(plain_loss), rel=1e-6)
  for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(remat)):
    np.testing.assert_allclose(a, b, atol=1e-6)


# -- vocabulary growth ---------------------------------------------------------------------

_update = nnx.jit(lambda m, o, b: o.update(m, nnx.grad(lambda m: lm_loss(m, b)[0])(m)))


def _trained_untied(steps=2):
  model = LM(dataclasses.replace(TINY, tie_embeddings=False), rngs=nnx.Rngs(7))
  tx = make_optimizer(learning_rate=1e-2, warmup_steps=0, decay="constant", total_steps=10)
  opt = nnx.Optimizer(model, tx, wrt=nnx.Param)
  rng = np.random.default_rng(8)
  for _ in range(steps):
    _update(model, opt, _batch(rng))
  return model, opt


def _leaf(state_pure, *path):
  for p in path:
    state_pure = state_pure[p]
  return np.asarray(state_pure)


def test_vocab_growth_keeps_rows_and_optimizer_state():
  model, opt = _trained_untied()
  # Old: levels (8, 8, 4) at 100..119, rows 120..127 padding. New: (12, 8, 4) at 100..123.
  old_to_new = np.full(128, -1)
  old_to_new[:108] = np.arange(108)                           # text + level 0 stay put
  old_to_new[108:120] = np.arange(112, 124)                   # levels 1, 2 shift by 4
  parents = np.full(256, -1)
  parents[[100, 101, 108]] = 1                                # new code 8 sibling of 0, 1
  parents[109] = 9                                            # new code 9: no siblings
  new_model, new_opt = grow_vocab(model, opt, old_to_new=old_to_new, new_vocab_size=256,
                                  sid_start=100, codebook_sizes=(12, 8, 4), parents=parents,
                                  noise_scale=0.0)
  assert new_model.config.vocab_size == 256 and new_model.config.level_offsets == (100, 112, 120)
  old_t, new_t = np.asarray(model.embed.embedding[...]), np.asarray(new_model.embed.embedding[...])
  kept = old_to_new >= 0
  np.testing.assert_array_equal(new_t[old_to_new[kept]], old_t[kept])
  np.testing.assert_allclose(new_t[108], old_t[[100, 101]].mean(0), rtol=1e-6)
  np.testing.assert_allclose(new_t[109], old_t[100:108].mean(0), rtol=1e-6)  # level-0 mean
  np.testing.assert_allclose(new_t[200], old_t[kept].mean(0), rtol=1e-5)      # non-SID row
  old_h, new_h = np.asarray(model.lm_head[...]), np.asarray(new_model.lm_head[...])
  np.testing.assert_array_equal(new_h[:, old_to_new[kept]], old_h[:, kept])
  # Every other parameter is copied exactly, so old tokens score as before.
  old_p, new_p = nnx.to_pure_dict(nnx.state(model)), nnx.to_pure_dict(nnx.state(new_model))
  for a, b in zip(jax.tree.leaves(old_p["layers"]), jax.tree.leaves(new_p["layers"])):
    np.testing.assert_array_equal(a, b)
  tok = np.random.default_rng(9).integers(0, 108, (2, 6))
  np.testing.assert_allclose(_logits(new_model, tok)[..., old_to_new[kept]],
                             _logits(model, tok)[..., kept], atol=1e-5)
  # Optimizer: Adam moments moved with their rows, zeros for new rows, counts kept.
  old_s, new_s = nnx.to_pure_dict(nnx.state(opt)), nnx.to_pure_dict(nnx.state(new_opt))
  adam_old, adam_new = old_s["opt_state"][1][0], new_s["opt_state"][1][0]
  assert int(_leaf(new_s, "step")) == int(_leaf(old_s, "step")) == 2
  assert int(adam_new["count"]) == int(adam_old["count"]) == 2
  fresh = np.setdiff1d(np.arange(256), old_to_new[kept])
  for moment in ("mu", "nu"):
    o, n = _leaf(adam_old, moment, "embed", "embedding"), _leaf(adam_new, moment, "embed",
                                                                "embedding")
    assert np.abs(o[kept]).sum() > 0
    np.testing.assert_array_equal(n[old_to_new[kept]], o[kept])
    assert (n[fresh] == 0).all()
    oh, nh = _leaf(adam_old, moment, "lm_head"), _leaf(adam_new, moment, "lm_head")
    np.testing.assert_array_equal(nh[:, old_to_new[kept]], oh[:, kept])
    assert (nh[:, fresh] == 0).all()
    np.testing.assert_array_equal(_leaf(adam_new, moment, "layers", 1, "mlp", "up", "kernel"),
                                  _leaf(adam_old, moment, "layers", 1, "mlp", "up", "kernel"))
  # Noise: new rows differ from their base, old rows still exact.
  noisy, _ = grow_vocab(model, None, old_to_new=old_to_new, new_vocab_size=256, sid_start=100,
                        codebook_sizes=(12, 8, 4), parents=parents, noise_scale=0.05, seed=1)
  noisy_t = np.asarray(noisy.embed.embedding[...])
  np.testing.assert_array_equal(noisy_t[old_to_new[kept]], old_t[kept])
  assert not np.allclose(noisy_t[108], new_t[108]) and np.allclose(noisy_t[108], new_t[108],
                                                                  atol=0.05)
  # A grown optimizer keeps training the grown model.
  _update(new_model, new_opt, _batch(np.random.default_rng(10)))
  assert int(nnx.to_pure_dict(nnx.state(new_opt))["step"]) == 3


def test_vocab_growth_rejects_bad_mappings():
  model = _model()
  with pytest.raises(ConfigError, match="old_to_new"):
    grow_vocab(model, None, old_to_new=np.arange(100), new_vocab_size=256, sid_start=100,
               codebook_sizes=SIZES)
  dup = np.arange(128)
  dup[5] = 4
  with pytest.raises(ConfigError, match="same new id"):
    grow_vocab(model, None, old_to_new=dup, new_vocab_size=256, sid_start=100,
               codebook_sizes=SIZES)
  with pytest.raises(ConfigError, match="parents"):
    grow_vocab(model, None, old_to_new=np.arange(128), new_vocab_size=256, sid_start=100,
               codebook_sizes=SIZES, parents=np.zeros(10))
  np.testing.assert_array_equal(sid_levels(8, 2, (3, 2)), [-1, -1, 0, 0, 0, 1, 1, -1])


# -- training --------------------------------------------------------------------------------

def copy_task(n: int, seed: int, length: int = 4, symbols: int = 8) -> dict[str, np.ndarray]:
  """Rows of two packed examples [BOS a_1..a_n SEP a_1..a_n] (prefix: BOS..SEP), then padding;
  the copies are scored."""
  rng = np.random.default_rng(seed)
  ex = 2 * length + 2                                          # tokens per example
  l = 2 * (ex - 1) + 2
  out = {k: np.zeros((n, l), np.int32) for k in ("tokens", "targets", "segment_ids",
                                                 "positions")}
  out["loss_mask"] = np.zeros((n, l), np.float32)
  out["prefix"] = np.zeros((n, l), bool)
  for r in range(n):
    for s in range(2):
      a = rng.integers(3, 3 + symbols, length)
      seq = np.concatenate([[1], a, [2], a])
      at = s * (ex - 1)
      sl = slice(at, at + ex - 1)
      out["tokens"][r, sl], out["targets"][r, sl] = seq[:-1], seq[1:]
      out["segment_ids"][r, sl] = s + 1
      out["positions"][r, sl] = np.arange(ex - 1)
      out["prefix"][r, at:at + length + 2] = True
      out["loss_mask"][r, at + length + 1:at + ex - 1] = 1.0
  return out


def test_trainer_learns_a_packed_copy_task(tmp_path):
  cfg = LMConfig(vocab_size=128, d_model=64, num_layers=2, num_heads=4, num_kv_heads=2,
                 head_dim=16, mlp_dim=128)
  model = LM(cfg, rngs=nnx.Rngs(0))
  config = {"batch_size": 32, "num_steps": 80, "log_every": 20, "eval_every": 10_000,
            "checkpoint_every": 10_000, "learning_rate": 5e-3, "warmup_steps": 16,
            "decay": "cosine", "weight_decay": 0.0, "b2": 0.99, "seed": 0}
  result = train(model, lm_loss, copy_task(512, seed=0), config=config, workdir=tmp_path,
                 progress=False)
  assert result.step == 80
  lines = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
  losses = [x["train/loss"] for x in lines if "train/loss" in x]
  assert losses[-1] < 0.1 * losses[0], losses
  model.eval()
  held_out = {k: jnp.asarray(v) for k, v in copy_task(64, seed=1).items()}
  loss, aux = _loss(model, held_out)
  assert float(loss) < 0.15 and float(aux["token_accuracy"]) > 0.95, (float(loss), aux)


@functools.lru_cache(maxsize=None)
def _losses_under(shape):
  mesh = make_mesh(shape) if shape else None
  with sharding_context(mesh):
    model = LM(dataclasses.replace(TINY, num_layers=1), rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  shardings = state_shardings(state, mesh) if mesh else None
  if mesh:
    state = jax.device_put(state, shardings)
  step = make_train_step(graphdef, lm_loss, seed=0, shardings=shardings)
  data = copy_task(24, seed=2)
  out = []
  for i in range(2):
    batch = {k: v[8 * i:8 * i + 8] for k, v in data.items()}
    if mesh:
      batch = {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
    state, aux = step(state, batch, np.int32(i))
    out.append(float(aux["loss"]))
  return tuple(out)


# (2,2,2) exercises data, fsdp and tensor at once in CI; the other two run with the slow tests.
@pytest.mark.parametrize("shape", [pytest.param((8, 1, 1), marks=pytest.mark.slow), (2, 2, 2),
                                   pytest.param((1, 4, 2), marks=pytest.mark.slow)])
def test_same_losses_under_every_mesh(shape):
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  np.testing.assert_allclose(_losses_under(shape), _losses_under(None), rtol=2e-5)
