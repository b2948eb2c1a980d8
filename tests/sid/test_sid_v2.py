"""SID-v2: per-modality reconstruction, progressive masking, the co-occurrence loss's effect."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.data.splits import leave_one_out
from lrm.data.synthetic import WorldConfig, make_world
from lrm.encoders.contrastive import info_nce_from_logits
from lrm.encoders.pairs import co_consumption_rows
from lrm.sid import rqvae, sid_v2

SMALL = dict(modality_hidden=(16,), modality_out=8, hidden_dims=(16,), latent_dim=8,
             codebook_sizes=(8, 4, 2), kmeans_init=False)


def test_reconstruction_losses_by_hand():
  x = jnp.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
  r = jnp.array([[0.0, 2.0, 5.0], [1.0, 1.0, 1.0]])
  # Block 0 (1 dim): errors 1, 1 -> 1. Block 1 (2 dims): 0, 4, 1, 1 -> 1.5.
  np.testing.assert_allclose(sid_v2.reconstruction_losses(x, r, (1, 2)), [1.0, 1.5])


def test_model_sums_per_modality_losses_and_reconstructs_each_block():
  cfg = sid_v2.SIDv2Config(modality_dims=(3, 5), **SMALL)
  model = sid_v2.SIDv2(cfg, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(1), (6, 8))
  out = model(x)
  assert out.reconstruction.shape == (6, 8) and out.modality_losses.shape == (2,)
  a, b = x[:, :3], x[:, 3:]
  expected = [jnp.mean((a - out.reconstruction[:, :3]) ** 2),
              jnp.mean((b - out.reconstruction[:, 3:]) ** 2)]
  np.testing.assert_allclose(out.modality_losses, expected, rtol=1e-6)
  np.testing.assert_allclose(out.reconstruction_loss, sum(expected), rtol=1e-6)
  # Each modality has its own decoder: block 0's reconstruction ignores decoder 1.
  model.modality_decoders[1][0].kernel[...] = jnp.zeros_like(model.modality_decoders[1][0].kernel)
  np.testing.assert_allclose(model(x).reconstruction[:, :3], out.reconstruction[:, :3])
  # A SIDv2 is an RQVAE wherever codes are read.
  assert isinstance(model, rqvae.RQVAE)
  np.testing.assert_array_equal(rqvae.rqvae_assign(model, np.asarray(x)), out.codes)


def test_progressive_masking_leaves_deeper_levels_out_of_the_loss():
  cfg = sid_v2.SIDv2Config(modality_dims=(4,), **SMALL)
  model = sid_v2.SIDv2(cfg, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(2), (5, 4))
  only_first = jnp.array([[True, False, False]] * 5)

  def loss(m):
    return m(x, only_first).loss

  grads = nnx.grad(loss)(model)
  g = [np.asarray(grads["codebooks"][c][...]) for c in range(3)]
  assert np.abs(g[0]).sum() > 0
  assert np.abs(g[1]).sum() == 0 and np.abs(g[2]).sum() == 0
  out = model(x, only_first)
  first_words = model.lookup(out.codes[:, :1])
  np.testing.assert_allclose(out.quantized, first_words, rtol=1e-6)
  # The sampled masks keep a prefix of the levels, each r in 1..L.
  mask = np.asarray(rqvae._level_mask(jax.random.key(0), 400, 3, "example"))
  r = mask.sum(1)
  assert (mask == (np.arange(3)[None] < r[:, None])).all() and set(r) == {1, 2, 3}


def test_cooccurrence_loss_pulls_co_consumed_items_into_shared_prefixes():
  # Content alone is weak here (noisy modalities); the users' planted topic structure says
  # which items go together. Co-consumption comes from the training part only. Measured: 0.46
  # of co-consumed pairs share a first-level code from content alone, 0.52 with the loss.
  world = make_world(WorldConfig(branching=(4, 4), num_items=400, num_users=300,
                                 modality_noise=1.5, explore_prob=0.0, seed=3))
  x = np.concatenate([world.catalog.embeddings["visual"], world.catalog.embeddings["audio"]], 1)
  split = leave_one_out(world.sequences)
  pairs = co_consumption_rows(split.train, world.catalog, window=2)
  base = dict(modality_dims=(64, 32), modality_hidden=(32,), modality_out=16, hidden_dims=(32,),
              latent_dim=16, codebook_sizes=(16, 8), batch_size=200, steps=60, kmeans_iters=5,
              cooccurrence_batch_size=128, cooccurrence_temperature=0.2, seed=0)
  shared = {}
  for weight in (0.0, 1.0):
    cfg = sid_v2.SIDv2Config(**base, cooccurrence_weight=weight)
    model, history = sid_v2.train_sid_v2(x, cfg, pairs=pairs, show_progress=False)
    codes = rqvae.rqvae_assign(model, x)
    shared[weight] = sid_v2.prefix_sharing(codes, pairs, level=1)
    if weight:
      assert history["cooccurrence"][-10:].mean() < history["cooccurrence"][:10].mean()
  assert shared[1.0] > shared[0.0] + 0.04, shared


def _loss(logits, mask=None):
  return float(info_nce_from_logits(logits, mask))


def test_l2_logits_by_hand_and_invariant_to_scaling_and_shifting():
  za = jnp.array([[0.0, 0.0], [1.0, 0.0]])
  zb = jnp.array([[0.0, 1.0], [3.0, 0.0]])
  # Squared distances [[1, 9], [2, 4]], mean 4; logits = -d2 / (t * 4), t = 0.5.
  expected = -np.array([[1.0, 9.0], [2.0, 4.0]]) / 2.0
  np.testing.assert_allclose(sid_v2.cooccurrence_logits(za, zb, "l2", 0.5), expected, rtol=1e-6)
  # Row 0: log(e^-.5 + e^-4.5) + .5; row 1: log(e^-1 + e^-2) + 2.
  by_hand = 0.5 * (np.log(np.exp(-0.5) + np.exp(-4.5)) + 0.5 + np.log(np.exp(-1) + np.exp(-2)) + 2)
  assert _loss(sid_v2.cooccurrence_logits(za, zb, "l2", 0.5)) == pytest.approx(by_hand, rel=1e-6)
  # Shrinking the geometry or crowding it around one point leaves the l2 logits as they are.
  shift = jnp.array([5.0, -3.0])
  np.testing.assert_allclose(sid_v2.cooccurrence_logits(0.1 * za + shift, 0.1 * zb + shift,
                                                        "l2", 0.5), expected, rtol=1e-4)


def test_cosine_loss_rewards_crowding_noisy_positives_into_a_cone_and_l2_does_not():
  # The failure on Beauty: positives no closer than chance (noisy co-consumption). Moving every
  # latent towards one direction (a cone) lowers the cosine InfoNCE; the l2 one is unchanged.
  z = jax.random.normal(jax.random.key(0), (64, 16))
  za, zb = z[:32], z[32:]
  cone = jnp.zeros(16).at[0].set(6.0)
  for similarity, lower in (("cosine", True), ("l2", False)):
    before = _loss(sid_v2.cooccurrence_logits(za, zb, similarity, 0.1))
    after = _loss(sid_v2.cooccurrence_logits(za + cone, zb + cone, similarity, 0.1))
    if lower:
      assert after < before - 0.5, (before, after)
    else:
      assert after == pytest.approx(before, rel=1e-4)


def test_quantized_space_reads_the_codes_and_trains_only_the_encoder():
  cfg = sid_v2.SIDv2Config(modality_dims=(4,), **SMALL)
  model = sid_v2.SIDv2(cfg, rngs=nnx.Rngs(0))
  x = jax.random.normal(jax.random.key(3), (6, 4))
  np.testing.assert_allclose(model.cooccurrence_embed(x),
                             model.lookup(model(x).codes), rtol=1e-5, atol=1e-6)
  mask = jnp.zeros((3, 3), bool)
  grads = nnx.grad(lambda m: m.cooccurrence_loss(x[:3], x[3:], mask))(model)
  assert all(np.abs(np.asarray(grads["codebooks"][c][...])).sum() == 0 for c in range(3))
  assert np.abs(np.asarray(grads["encoder"][0].kernel[...])).sum() > 0
  latent = sid_v2.SIDv2(sid_v2.SIDv2Config(modality_dims=(4,), cooccurrence_space="latent",
                                           **SMALL), rngs=nnx.Rngs(0))
  np.testing.assert_allclose(latent.cooccurrence_embed(x), latent.encode(x), rtol=1e-6)


def test_config_checks_name_the_field():
  with pytest.raises(ConfigError, match="modality_dims"):
    sid_v2.SIDv2Config(modality_dims=())
  with pytest.raises(ConfigError, match="input_dim"):
    sid_v2.SIDv2Config(modality_dims=(3, 4), input_dim=5)
  with pytest.raises(ConfigError, match="cooccurrence_temperature"):
    sid_v2.SIDv2Config(cooccurrence_temperature=0.0)
  with pytest.raises(ConfigError, match="cooccurrence_similarity"):
    sid_v2.SIDv2Config(cooccurrence_similarity="dot")
  with pytest.raises(ConfigError, match="cooccurrence_space"):
    sid_v2.SIDv2Config(cooccurrence_space="codes")
  with pytest.raises(ConfigError, match="cooccurrence_weight"):
    sid_v2.train_sid_v2(np.zeros((10, 4), np.float32),
                        sid_v2.SIDv2Config(modality_dims=(4,), **SMALL), show_progress=False)
  cfg = sid_v2.SIDv2Config(modality_dims=(3, 4))
  assert cfg.input_dim == 7 and sid_v2.SIDv2Config.from_dict(cfg.to_dict()) == cfg
