import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.sid_features import prefix_rows
from lrm.models.rpg import (RPG, RPGConfig, item_scores, last_log_probs, padded_codes,
                            rpg_loss, score_items)

SIZES = (8, 8, 8, 5)          # uneven, as RQ codes with a collision level
TINY = dict(num_items=30, codebook_sizes=SIZES, max_length=6, d_model=16, num_heads=2,
            head_dim=8, mlp_dim=32, num_layers=1, temperature=0.1)


def _codes(n=30, sizes=SIZES, seed=0):
  rng = np.random.default_rng(seed)
  return np.stack([rng.integers(0, k, n) for k in sizes], axis=1)


def _model(seed=0, codes=None, **kw):
  cfg = RPGConfig(**{**TINY, **kw})
  codes = _codes(cfg.num_items, cfg.codebook_sizes) if codes is None else codes
  model = RPG(cfg, codes, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  model.eval()
  return model, codes


def _random_heads(model, seed=3):
  """Zero-initialised heads make every codebook see the same state; perturb them."""
  k = model.head_kernel[...]
  model.head_kernel[...] = 0.3 * jax.random.normal(jax.random.key(seed), k.shape)


def test_input_is_mean_of_code_embeddings():
  model, codes = _model()
  emb = model.item_embeddings(jnp.array([3]))[0]
  table = model.code_embed[...]
  want = np.mean([table[c, codes[2, c]] for c in range(len(SIZES))], axis=0)
  np.testing.assert_allclose(emb, want, rtol=1e-6)


def test_exact_scores_equal_a_brute_force_loop():
  model, codes = _model()
  _random_heads(model)
  inputs = jnp.array([[0, 0, 4, 9, 2, 30], [1, 2, 3, 4, 5, 6]], jnp.int32)
  scores = np.asarray(score_items(model, inputs))
  logp = np.asarray(last_log_probs(model, inputs))
  for u in range(2):
    for item in range(30):
      want = sum(logp[u, c, codes[item, c]] for c in range(len(SIZES)))
      assert scores[u, item] == pytest.approx(want, rel=1e-5, abs=1e-4)


def test_codes_a_level_lacks_get_no_mass():
  model, _ = _model()
  logp = last_log_probs(model, jnp.array([[0, 1, 2, 3, 4, 5]], jnp.int32))
  probs = np.exp(np.asarray(logp))[0]
  assert probs.shape == (4, 8)
  np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
  assert probs[3, 5:].max() < 1e-12


def test_loss_is_mean_per_codebook_cross_entropy_over_target_positions():
  model, codes = _model()
  _random_heads(model)
  inputs = jnp.array([[0, 0, 3, 4, 5, 6], [0, 7, 8, 9, 10, 11]], jnp.int32)
  targets = jnp.array([[0, 0, 0, 5, 6, 7], [0, 0, 9, 10, 11, 12]], jnp.int32)
  loss, aux = rpg_loss(model, {"inputs": inputs, "targets": targets})
  logits = model.code_logits(model(inputs))
  labels = jnp.asarray(padded_codes(codes, SIZES))[targets]
  ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(-1)
  want = float((ce * (targets > 0)).sum() / (targets > 0).sum())
  assert float(loss) == pytest.approx(want, rel=1e-5)
  assert aux["num_targets"] == 7
  capped, aux_capped = rpg_loss(model, {"inputs": inputs, "targets": targets}, max_targets=16)
  assert float(capped) == pytest.approx(want, rel=1e-5)
  assert aux_capped["dropped_targets"] == 0


_BATCH = {"inputs": jnp.array([[0, 0, 3, 4, 5, 6], [0, 7, 8, 9, 10, 11]], jnp.int32),
          "targets": jnp.array([[0, 0, 0, 5, 6, 7], [0, 0, 9, 10, 11, 12]], jnp.int32)}


def test_last_position_loss_keeps_each_windows_last_target_only():
  model, _ = _model(loss_positions="last")
  _random_heads(model)
  loss, aux = rpg_loss(model, _BATCH)
  assert aux["num_targets"] == 2
  full, _ = _model()
  _random_heads(full)
  last_only = {"inputs": _BATCH["inputs"], "targets": _BATCH["targets"].at[:, :-1].set(0)}
  want, _ = rpg_loss(full, last_only)
  assert float(loss) == pytest.approx(float(want), rel=1e-6)


def test_item_softmax_loss_equals_cross_entropy_over_summed_code_logits():
  model, codes = _model(loss="item")
  _random_heads(model)
  loss, aux = rpg_loss(model, _BATCH, max_targets=8)
  targets = _BATCH["targets"]
  logits = np.asarray(model.code_logits(model(_BATCH["inputs"])))       # [b, l, C, K]
  want, hits = [], 0
  for b, t in zip(*np.nonzero(np.asarray(targets))):
    scores = np.array([sum(logits[b, t, c, codes[i, c]] for c in range(len(SIZES)))
                       for i in range(30)])
    target = int(targets[b, t]) - 1
    want.append(np.logaddexp.reduce(scores) - scores[target])
    hits += scores[target] >= scores.max()
  assert float(loss) == pytest.approx(np.mean(want), rel=1e-4)
  assert float(aux["item_accuracy"]) == pytest.approx(hits / len(want))
  grads = nnx.grad(lambda m: rpg_loss(m, _BATCH, max_targets=8)[0])(model)
  assert np.isfinite(np.asarray(grads.code_embed[...])).all()


def test_ngram_input_adds_the_mean_of_prefix_embeddings():
  model, codes = _model(ngram_buckets=16, ngram_order=3)   # levels 2, 3 (64, 512) hashed to 16
  plain = model.code_embed[...]
  tables = model.ngram_embed.tables[0]
  rows = np.asarray(prefix_rows(jnp.asarray(codes[2]), model.ngram_embed.families[0]))
  assert rows.max() < 16
  emb = model.item_embeddings(jnp.array([3]))[0]
  want = np.mean([plain[c, codes[2, c]] for c in range(len(SIZES))], axis=0) \
      + np.mean([tables[g].embedding[...][rows[g]] for g in range(3)], axis=0)
  np.testing.assert_allclose(emb, want, rtol=1e-5, atol=1e-6)
  loss, _ = rpg_loss(model, _BATCH)
  assert np.isfinite(float(loss))


def test_causal_and_left_padding_invariant():
  model, _ = _model()
  a = jnp.array([[0, 0, 3, 4, 5, 6]], jnp.int32)
  b = a.at[0, 4].set(11)
  ha, hb = model(a), model(b)
  np.testing.assert_allclose(ha[:, :4], hb[:, :4], rtol=1e-5, atol=1e-6)
  assert not np.allclose(ha[:, 4:], hb[:, 4:])
  short = jnp.array([[0, 4, 5, 6]], jnp.int32)
  np.testing.assert_allclose(score_items(model, short), score_items(model, a.at[0, 2].set(0)),
                             rtol=1e-5, atol=1e-4)


def test_item_scores_match_gather_per_codebook():
  logp = jax.nn.log_softmax(jax.random.normal(jax.random.key(0), (3, 4, 8)), -1)
  codes = jnp.asarray(_codes(11, (8, 8, 8, 8)))
  got = item_scores(logp, codes)
  want = jnp.take_along_axis(logp[:, None], codes[None, :, :, None], axis=-1)[..., 0].sum(-1)
  np.testing.assert_allclose(got, want, rtol=1e-6)


def test_bad_configs_and_codes():
  with pytest.raises(ConfigError, match="temperature"):
    RPGConfig(**{**TINY, "temperature": 0.0})
  with pytest.raises(ConfigError, match="codebook_sizes"):
    RPGConfig(**{**TINY, "codebook_sizes": ()})
  with pytest.raises(ConfigError, match="codes"):
    RPG(RPGConfig(**TINY), _codes(30, (8, 8, 8, 9)) + np.array([0, 0, 0, 4]),
        rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match="num_items"):
    RPG(RPGConfig(**TINY), _codes(29), rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match="loss_positions"):
    RPGConfig(**{**TINY, "loss_positions": "first"})
  with pytest.raises(ConfigError, match="loss"):
    RPGConfig(**{**TINY, "loss": "bpr"})
  with pytest.raises(ConfigError, match="ngram_order"):
    RPGConfig(**{**TINY, "ngram_buckets": 16, "ngram_order": 5})
  with pytest.raises(ConfigError, match="ngram_order"):
    RPGConfig(**{**TINY, "ngram_buckets": 16, "ngram_order": 0})
  with pytest.raises(ConfigError, match="ngram_buckets"):
    RPGConfig(**{**TINY, "ngram_buckets": -1})
  with pytest.raises(ConfigError, match="model.rpg.depth"):
    RPGConfig.from_dict({**TINY, "depth": 2}, where="model.rpg")


def test_rpg_dropout_recipe_trains_and_evaluates_deterministically():
  model, _ = _model(dropout=0.0, embed_dropout=0.5, attention_dropout=0.5)
  model.train()
  loss_a, _ = rpg_loss(model, _BATCH)
  loss_b, _ = rpg_loss(model, _BATCH)
  assert np.isfinite(float(loss_a)) and float(loss_a) != float(loss_b)
  model.eval()
  np.testing.assert_allclose(model(_BATCH["inputs"]), model(_BATCH["inputs"]))
  with pytest.raises(ConfigError, match="attention_dropout"):
    RPGConfig(**{**TINY, "attention_dropout": 1.0})
  with pytest.raises(ConfigError, match="embed_dropout"):
    RPGConfig(**{**TINY, "embed_dropout": -0.1})
