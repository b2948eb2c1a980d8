"""The compression transformer: folding bookkeeping, masking, causality, the degenerate case
equal to full attention (also with the full-resolution options), recent windows and event
reads, sharding, and finite gradients at T = 32k."""

from __future__ import annotations


import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.compression import (CompressionConfig, HistoryEncoder, LongHistoryConfig,
                                    LongHistoryRecommender, long_history_loss, score_items)

TINY = dict(d_model=16, num_heads=2, head_dim=8, mlp_dim=32, num_layers=2, dropout=0.0)


def history(b, t, pads, d=16, seed=1):
  x = jax.random.normal(jax.random.key(seed), (b, t, d))
  valid = jnp.arange(t)[None] >= jnp.asarray(pads)[:, None]
  return jnp.where(valid[..., None], x, 0.0), valid


def encoder(**kw):
  return HistoryEncoder(CompressionConfig(**{**TINY, **kw}), rngs=nnx.Rngs(0))


def apply(module, *args, method="__call__"):
  """`module.method(*args)` jitted (eager NNX dispatch is slow on a loaded 2-core CPU)."""
  graphdef, state = nnx.split(module)
  return jax.jit(lambda s, *a: getattr(nnx.merge(graphdef, s), method)(*a))(state, *args)


@pytest.mark.parametrize("mode,summaries", [("mean", 8), ("mean", 2), ("concat", 1),
                                            ("concat", 4)])
def test_folding_keeps_every_event_once_and_drops_padding(mode, summaries):
  enc = encoder(fold=8, summaries=summaries, fold_mode=mode)
  t, group = 24, 8 // summaries
  x, valid = history(1, t, [5], d=16)
  folded, folded_valid = apply(enc, x, valid, method="fold")
  assert folded.shape == (1, 3, summaries, 16)
  # Which folded tokens each event reaches (Jacobian support): exactly its own, if valid.
  jac = jax.jit(jax.jacobian(lambda x: enc.fold(x, valid)[0]))(x)          # [1,w,s,d, 1,t,d]
  reach = np.abs(np.asarray(jac)).sum(axis=(0, 3, 4, 6)) > 0      # [w, s, t]
  for e in range(t):
    hit = np.argwhere(reach[:, :, e])
    if e < 5:
      assert len(hit) == 0, f"padded event {e} reaches a folded token"
    else:
      assert hit.tolist() == [[e // 8, (e % 8) // group]], f"event {e} -> {hit.tolist()}"
  expected_valid = np.asarray(valid).reshape(3, summaries, group).any(-1)
  np.testing.assert_array_equal(np.asarray(folded_valid[0]), expected_valid)
  if mode == "mean":  # masked means: counts x means add back up to the sum of valid events
    counts = np.asarray(valid).reshape(1, 3, summaries, group).sum(-1)[..., None]
    np.testing.assert_allclose((np.asarray(folded) * counts).sum((1, 2)),
                               np.asarray(x).sum(1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("readout,options", [
    ("query", dict(recent_windows=0)), ("mean", dict(recent_windows=0)),
    ("query", dict(recent_windows=1, summary_reads="events")),
    ("mean", dict(recent_windows=3, summary_reads="events"))])
def test_one_window_no_pooling_no_globals_equals_full_attention(readout, options):
  """The degenerate case: F = T, S = F (mean fold), G = 0, causal local attention; with
  S = F, reading events is reading folded tokens and a recent window is any window."""
  t = 16
  kw = dict(fold=t, summaries=t, num_globals=0, local_attention=True, causal_window=True,
            readout=readout, **options)
  comp, full = encoder(**kw), encoder(mixer="full", **kw)
  nnx.update(full, nnx.state(comp))
  x, valid = history(3, t, [0, 5, 15])
  np.testing.assert_allclose(apply(comp, x, valid), apply(full, x, valid), rtol=1e-5, atol=1e-5)
  # And not equal once windows, pooling or globals come in.
  other = encoder(**{**kw, "fold": 4, "summaries": 4})
  nnx.update(other, nnx.state(comp))
  assert np.abs(np.asarray(apply(other, x, valid) - apply(comp, x, valid))).max() > 1e-4


@pytest.mark.parametrize("kw", [
    dict(mixer="full"),
    dict(fold=4, summaries=2, num_globals=3),
    dict(fold=4, summaries=1, fold_mode="concat", num_globals=2, readout="mean"),
    dict(fold=8, summaries=8, num_globals=2, global_init="pooled", causal_window=False),
    dict(fold=4, summaries=4, num_globals=2, local_attention=False),
    dict(fold=4, summaries=2, num_globals=2, summary_reads="events", recent_windows=0),
    dict(fold=4, summaries=1, fold_mode="concat", num_globals=2, recent_windows=2),
    dict(fold=4, summaries=2, num_globals=1, summary_reads="events", recent_windows=9,
         readout="mean"),
])
def test_padding_is_masked_and_left_padding_by_whole_windows_changes_nothing(kw):
  enc = encoder(**kw)
  x, valid = history(2, 16, [4, 9])
  noise = jax.random.normal(jax.random.key(7), x.shape)
  out = apply(enc, x, valid)
  assert np.isfinite(np.asarray(out)).all()
  np.testing.assert_allclose(apply(enc, jnp.where(valid[..., None], x, noise), valid), out,
                             rtol=1e-5, atol=1e-5)
  if kw.get("global_init") != "pooled":   # pooled globals average a share of the length
    longer = jnp.concatenate([jnp.zeros((2, 8, 16)), x], 1)
    longer_valid = jnp.concatenate([jnp.zeros((2, 8), bool), valid], 1)
    np.testing.assert_allclose(apply(enc, longer, longer_valid), out, rtol=1e-5, atol=1e-5)


def test_recent_windows_keep_every_event_and_older_windows_are_pooled():
  enc = encoder(fold=4, summaries=2, recent_windows=1)
  x, valid = history(2, 16, [3, 0])
  groups = apply(enc, x, valid, method="fold_groups")
  assert [g[0].shape for g in groups] == [(2, 3, 2, 16), (2, 1, 4, 16)]
  old, recent = groups
  np.testing.assert_allclose(recent[0].reshape(2, 4, 16), x[:, 12:], rtol=1e-6)
  np.testing.assert_array_equal(recent[1].reshape(2, 4), valid[:, 12:])
  pooled, pooled_valid = apply(enc, x[:, :12], valid[:, :12], method="fold")
  np.testing.assert_allclose(old[0], pooled, rtol=1e-6)
  np.testing.assert_array_equal(old[1], pooled_valid)
  np.testing.assert_array_equal(np.concatenate([old[3], recent[3]], 1), valid)
  # R >= W: every window is recent (nothing pooled).
  (only,) = apply(encoder(fold=4, summaries=2, recent_windows=5), x, valid,
                  method="fold_groups")
  assert only[0].shape == (2, 4, 4, 16)


@pytest.mark.parametrize("kw,sees_events", [
    (dict(summary_reads="folded", recent_windows=0), False),
    (dict(summary_reads="events", recent_windows=0), True),
    (dict(summary_reads="folded", recent_windows=1), True)])
def test_what_resolution_the_query_sees(kw, sees_events):
  """Two events pooled together can be replaced by their mean without changing a pooled
  model; a model whose summary tokens read events, or whose window is recent, sees it."""
  enc = encoder(fold=4, summaries=2, num_globals=2, **kw)
  x, valid = history(1, 8, [0])
  mean = (x[:, 4] + x[:, 5]) / 2
  blurred = x.at[:, 4].set(mean).at[:, 5].set(mean)    # same pooled tokens, last window
  diff = np.abs(np.asarray(apply(enc, x, valid) - apply(enc, blurred, valid))).max()
  assert (diff > 1e-4) == sees_events, diff


def test_folded_tokens_never_see_later_windows_or_later_events():
  cfg = CompressionConfig(**TINY, fold=4, summaries=4, num_globals=0, causal_window=True)
  enc = HistoryEncoder(cfg, rngs=nnx.Rngs(0))
  block = enc.blocks[0]
  x, valid = history(1, 16, [0])
  folded, fvalid = enc.fold(x, valid)
  summary = jnp.zeros((1, 1, 16))
  _, base = block.compress(summary, folded, fvalid)
  changed = folded.at[:, 2, 1:].add(1.0)           # window 2, tokens 1..3
  _, out = block.compress(summary, changed, fvalid)
  diff = np.abs(np.asarray(out - base)).sum(-1)[0]   # [w, s]
  assert (diff[:2] == 0).all() and diff[2, 0] == 0 and (diff[3] == 0).all()
  assert (diff[2, 1:] > 0).all()


def test_config_errors_name_the_field():
  with pytest.raises(ConfigError, match="summaries"):
    CompressionConfig(fold=8, summaries=3)
  with pytest.raises(ConfigError, match="mixer"):
    CompressionConfig(mixer="linear")
  with pytest.raises(ConfigError, match="summary_reads"):
    CompressionConfig(summary_reads="windows")
  for bad in (-1, True, 1.5):
    with pytest.raises(ConfigError, match="recent_windows"):
      CompressionConfig(recent_windows=bad)
  with pytest.raises(ConfigError, match="encoder.foldd"):
    CompressionConfig.from_dict({"foldd": 3})
  with pytest.raises(ConfigError, match="fold"):
    encoder(fold=8, summaries=8)(*history(1, 12, [0]))
  with pytest.raises(ConfigError, match="model.history_levels"):
    LongHistoryConfig.from_dict({"codebook_sizes": (4, 4), "history_levels": 3})


def test_sharded_forward_matches_single_device():
  from lrm.parallel.mesh import make_mesh
  from lrm.parallel.rules import sharding_context
  mesh = make_mesh((4, 1, 2))
  cfg = CompressionConfig(**TINY, fold=4, summaries=2, num_globals=2)
  plain = HistoryEncoder(cfg, rngs=nnx.Rngs(0))
  x, valid = history(8, 32, [0, 3, 7, 31, 1, 2, 20, 12])
  expected = apply(plain, x, valid)
  with sharding_context(mesh):
    sharded = HistoryEncoder(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(sharded)
    forward = jax.jit(lambda s, x, v: nnx.merge(graphdef, s)(x, v))
    out = forward(state, x, valid)
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-5)
  kernel = sharded.blocks[0].attention.query.kernel[...]
  assert kernel.sharding.spec[1] == "tensor"


def test_gradients_are_finite_at_32k_events():
  t = 32768
  cfg = LongHistoryConfig(codebook_sizes=(8, 8, 4), history_levels=2, encoder=CompressionConfig(
      d_model=8, num_heads=1, head_dim=8, mlp_dim=16, num_layers=1, dropout=0.0, fold=64,
      summaries=2, num_globals=4, summary_reads="events", recent_windows=2))
  model = LongHistoryRecommender(cfg, rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  item_codes = jnp.asarray(np.stack([rng.integers(0, k, 50) for k in (8, 8, 4)], 1), jnp.int32)
  hist = rng.integers(0, 50, (1, t)).astype(np.int32)
  hist[:, :1000] = -1                                    # left padding
  batch = {"history": jnp.asarray(hist),
           "gap": jnp.asarray(np.where(hist >= 0, rng.integers(1, 40, (1, t)), 0), jnp.int32),
           "age": jnp.asarray(np.where(hist >= 0, rng.integers(1, 40, (1, t)), 0), jnp.int32),
           "kind": jnp.asarray(np.where(hist >= 0, 1, 0), jnp.int32),
           "target": jnp.array([3], jnp.int32)}
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)

  @jax.jit
  def grads(params):
    def loss(p):
      return long_history_loss(nnx.merge(graphdef, p, rest), batch, item_codes)[0]
    return jax.value_and_grad(loss)(params)

  value, g = grads(params)
  leaves = jax.tree_util.tree_leaves(g)
  assert np.isfinite(float(value))
  assert all(np.isfinite(np.asarray(l)).all() for l in leaves)
  assert sum(float(jnp.abs(l).sum()) for l in leaves) > 0


def test_recommender_scores_every_item_from_sid_prefixes():
  cfg = LongHistoryConfig(codebook_sizes=(4, 4, 3), encoder=CompressionConfig(
      **TINY, fold=4, summaries=2, num_globals=2))
  model = LongHistoryRecommender(cfg, rngs=nnx.Rngs(0))
  item_codes = jnp.array([[0, 0, 0], [0, 0, 1], [0, 1, 0], [3, 3, 2], [1, 2, 0]], jnp.int32)
  batch = {"history": jnp.array([[-1, -1, 0, 1, 2, 3, 4, 0]]), "gap": jnp.ones((1, 8), int),
           "age": jnp.ones((1, 8), int), "kind": jnp.ones((1, 8), int)}
  scores = jax.jit(lambda m, c: score_items(m, batch, c))(model, item_codes)
  assert scores.shape == (1, 5) and np.isfinite(np.asarray(scores)).all()
  items = model.item_embeddings(item_codes)
  # Items differing only in the last level share the first two prefix rows, not the third.
  assert not np.allclose(items[0], items[1])
  # A new item needs no new parameters: its code just indexes the same tables.
  grown = jnp.concatenate([item_codes, jnp.array([[2, 2, 2]])], 0)
  np.testing.assert_allclose(jax.jit(lambda m, c: score_items(m, batch, c))(model, grown)[:, :5],
                             scores, rtol=1e-5)
