"""RQ-VAE: training on the synthetic world's planted embeddings, quantizer details, artifacts."""

from __future__ import annotations

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.data.synthetic import WorldConfig, make_world
from lrm.sid import rqvae
from lrm.sid.rqvae import RQVAEConfig, load, rqvae_assign, rqvae_reconstruct, save, train_rqvae

# Small enough for 2 CPU cores: 64-d inputs, 16-d latent, 3 levels x 16 codes.
SMALL = RQVAEConfig(input_dim=64, hidden_dims=(64, 32), latent_dim=16, codebook_sizes=(16, 16, 16),
                    batch_size=256, steps=400, learning_rate=3e-3, dead_code_restart_every=50,
                    kmeans_iters=10, seed=0)


@pytest.fixture(scope="module")
def world():
  return make_world(WorldConfig(seed=0, num_items=2000, num_users=50))


@pytest.fixture(scope="module")
def x(world) -> np.ndarray:
  return world.catalog.embeddings["visual"]


@pytest.fixture(scope="module")
def top_topic(world) -> np.ndarray:
  """int [i]: each item's planted top-level topic (6 of them)."""
  return world.truth.leaf_path[world.truth.item_topic][:, 0]


@pytest.fixture(scope="module")
def trained(x):
  return train_rqvae(x, SMALL, show_progress=False)


def _purity(codes: np.ndarray, labels: np.ndarray) -> float:
  """Share of items whose label is the majority label of their code."""
  return sum(np.bincount(labels[codes == c]).max() for c in np.unique(codes)) / len(codes)


def test_loss_falls_and_history_is_complete(trained):
  _, h = trained
  assert h["loss"].shape == (SMALL.steps,)
  assert np.isfinite(h["loss"]).all()
  first, last = h["loss"][:20].mean(), h["loss"][-50:].mean()
  assert last < 0.5 * first, (first, last)
  assert h["utilisation"].shape == (SMALL.steps // SMALL.dead_code_restart_every, 3)
  assert h["restarted"].shape == h["utilisation"].shape
  for name in ("reconstruction", "codebook", "commitment"):
    assert h[name].shape == (SMALL.steps,)


def test_codebooks_stay_used(trained, x):
  model, h = trained
  assert h["utilisation"][-1, 0] >= 0.9
  codes = rqvae_assign(model, x)
  for c in range(3):
    assert len(np.unique(codes[:, c])) >= 0.8 * SMALL.codebook_sizes[c]


def test_first_level_recovers_planted_topics(trained, x, top_topic):
  model, _ = trained
  codes = rqvae_assign(model, x)
  purity = _purity(codes[:, 0], top_topic)
  chance = _purity(np.random.default_rng(0).permutation(codes[:, 0]), top_topic)
  assert purity >= 0.9 and purity > chance + 0.3, (purity, chance)


def test_reconstruction_improves_with_levels(trained, x):
  model, _ = trained
  codes = rqvae_assign(model, x)
  errors = [np.mean((rqvae_reconstruct(model, codes[:, :c]) - x) ** 2) for c in (1, 2, 3)]
  assert errors[0] > errors[1] > errors[2], errors
  assert errors[2] < 0.25 * x.var(axis=0).sum() / x.shape[1]  # well below predicting the mean


def test_assign_is_deterministic_and_chunking_does_not_matter(trained, x):
  model, _ = trained
  codes = rqvae_assign(model, x)
  assert codes.dtype == np.int32 and codes.shape == (len(x), 3)
  np.testing.assert_array_equal(codes, rqvae_assign(model, x))
  np.testing.assert_array_equal(codes, rqvae_assign(model, x, chunk_size=333))
  # The same codes the forward pass picks.
  out = model(jnp.asarray(x[:100]))
  np.testing.assert_array_equal(codes[:100], np.asarray(out.codes))


def test_same_seed_same_model(x):
  cfg = dataclasses.replace(SMALL, steps=30, dead_code_restart_every=10)
  a, ha = train_rqvae(x, cfg, show_progress=False)
  b, hb = train_rqvae(x, cfg, show_progress=False)
  np.testing.assert_array_equal(ha["loss"], hb["loss"])
  np.testing.assert_array_equal(rqvae_assign(a, x), rqvae_assign(b, x))


def test_save_load_round_trip(trained, x, tmp_path):
  model, _ = trained
  save(model, SMALL, tmp_path / "rq")
  manifest = json.loads((tmp_path / "rq" / "manifest.json").read_text())
  assert manifest["stage"] == "rqvae" and manifest["config"]["codebook_sizes"] == [16, 16, 16]
  loaded, cfg = load(tmp_path / "rq")
  assert cfg == SMALL
  before, after = rqvae._flat_params(model), rqvae._flat_params(loaded)
  assert before.keys() == after.keys()
  for k in before:
    np.testing.assert_array_equal(before[k], after[k])
  np.testing.assert_array_equal(rqvae_assign(model, x), rqvae_assign(loaded, x))
  # A second save over the first is fine; a missing manifest means "not an artifact".
  save(loaded, cfg, tmp_path / "rq")
  (tmp_path / "rq" / "manifest.json").unlink()
  with pytest.raises(DataError, match="manifest"):
    load(tmp_path / "rq")


def test_rotation_trick_forward_is_exact_and_gradient_is_a_scaled_rotation():
  z = jax.random.normal(jax.random.key(1), (5,))
  q = jax.random.normal(jax.random.key(2), (5,))
  f = lambda v: rqvae._rotate_onto(v[None], q[None])[0]
  np.testing.assert_allclose(f(z), q, rtol=1e-5, atol=1e-6)
  jac = np.asarray(jax.jacobian(f)(z))
  scale = float(jnp.linalg.norm(q) / jnp.linalg.norm(z))
  np.testing.assert_allclose(jac @ jac.T, scale ** 2 * np.eye(5), atol=1e-4)
  np.testing.assert_allclose(jac @ np.asarray(z), q, rtol=1e-4, atol=1e-5)  # maps z onto q


@pytest.mark.parametrize("options", [
    {"rotation_trick": True},
    {"progressive_masking": True, "progressive_masking_mode": "example"},
    {"progressive_masking": True, "progressive_masking_mode": "batch"},
])
def test_variants_train(x, options):
  cfg = dataclasses.replace(SMALL, steps=150, **options)
  model, h = train_rqvae(x, cfg, show_progress=False)
  assert np.isfinite(h["loss"]).all()
  assert h["reconstruction"][-30:].mean() < 0.5 * h["reconstruction"][:10].mean()
  assert rqvae_assign(model, x).shape == (len(x), 3)


def test_level_mask_modes():
  key = jax.random.key(0)
  per_example = np.asarray(rqvae._level_mask(key, 1000, 3, "example"))
  per_batch = np.asarray(rqvae._level_mask(key, 1000, 3, "batch"))
  for mask in (per_example, per_batch):
    assert mask[:, 0].all()  # the first level is always kept
    assert (np.diff(mask.astype(int), axis=1) <= 0).all()  # a prefix of levels
  assert set(per_example.sum(1)) == {1, 2, 3}
  assert len({tuple(r) for r in per_batch}) == 1


def test_dead_code_restart_revives_unused_codes(x):
  # Random (not k-means) codebooks leave many codes unused; restarts bring them back.
  cfg = dataclasses.replace(SMALL, kmeans_init=False, steps=100, codebook_sizes=(32, 32))
  _, off = train_rqvae(x, dataclasses.replace(cfg, dead_code_restart_every=0),
                       show_progress=False)
  _, on = train_rqvae(x, dataclasses.replace(cfg, dead_code_restart_every=20),
                      show_progress=False)
  assert on["restarted"].sum() > 0
  assert on["utilisation"][-1, 0] > off["utilisation"][-1, 0] + 0.2, (on["utilisation"],
                                                                     off["utilisation"])


def test_data_parallel_matches_single_device(x):
  from lrm.parallel.mesh import make_mesh
  if len(jax.devices()) < 2:
    pytest.skip("needs several (host) devices")
  mesh = make_mesh((-1, 1, 1))
  cfg = dataclasses.replace(SMALL, steps=20, dead_code_restart_every=10)
  model, h = train_rqvae(x, cfg, mesh=mesh, show_progress=False)
  _, h1 = train_rqvae(x, cfg, show_progress=False)
  np.testing.assert_allclose(h["loss"], h1["loss"], rtol=1e-3)
  kernel = model.encoder[0].kernel[...]
  assert len(kernel.sharding.device_set) == len(jax.devices())


@pytest.mark.parametrize("field,value", [
    ("input_dim", 0), ("hidden_dims", (64, -1)), ("latent_dim", 1.5), ("codebook_sizes", ()),
    ("codebook_sizes", (16, 1)), ("beta", -0.1), ("learning_rate", 0.0), ("weight_decay", -1.0),
    ("batch_size", 0), ("steps", 0), ("epochs", float("nan")), ("rotation_trick", "yes"),
    ("dead_code_restart_every", -1), ("dead_code_threshold", 0),
    ("progressive_masking_mode", "level"), ("kmeans_iters", 0), ("kmeans_init_size", 4),
])
def test_config_errors_name_the_field(field, value):
  with pytest.raises(ConfigError) as e:
    RQVAEConfig(**{field: value})
  assert e.value.field == field


def test_from_dict_rejects_unknown_fields_and_round_trips():
  assert RQVAEConfig.from_dict(SMALL.to_dict()) == SMALL
  with pytest.raises(ConfigError) as e:
    RQVAEConfig.from_dict({"codebook_size": 3})
  assert e.value.field == "rqvae.codebook_size"


def test_bad_input_is_a_data_error(trained, x):
  model, _ = trained
  bad = x[:300].copy()
  bad[7, 3] = np.nan
  with pytest.raises(DataError, match="NaN"):
    train_rqvae(bad, SMALL, show_progress=False)
  with pytest.raises(DataError, match="input_dim"):
    rqvae_assign(model, x[:, :10])
  with pytest.raises(DataError, match="largest codebook"):
    train_rqvae(x[:8], SMALL, show_progress=False)
  codes = rqvae_assign(model, x[:4])
  codes[1, 2] = 16
  with pytest.raises(DataError, match="level 2"):
    rqvae_reconstruct(model, codes)


def test_warm_start_keeps_codes_stable_and_leaves_the_init_model_alone(trained, x):
  from lrm.sid.table import stability_report
  model, _ = trained
  before = rqvae._flat_params(model)
  old = rqvae_assign(model, x)
  # A refit with another seed, fine-tuning at a low learning rate; the cold refit differs only in
  # starting from scratch (k-means init), so its code ids are an arbitrary relabelling.
  cfg = dataclasses.replace(SMALL, seed=1, steps=200, learning_rate=3e-5)
  warm, h = train_rqvae(x, cfg, show_progress=False, init_model=model)
  cold, _ = train_rqvae(x, cfg, show_progress=False)
  assert np.isfinite(h["loss"]).all()
  w = stability_report(old, rqvae_assign(warm, x))
  c = stability_report(old, rqvae_assign(cold, x))
  assert w["changed"] < 0.5 * c["changed"], (w, c)
  assert w["level_changed"][0] < 0.05 < 0.5 < c["level_changed"][0], (w, c)
  # The warm model is a copy: training it left the given model bit for bit as it was.
  assert warm is not model and warm.config == cfg
  after = rqvae._flat_params(model)
  assert before.keys() == after.keys()
  for k in before:
    np.testing.assert_array_equal(before[k], after[k])
  np.testing.assert_array_equal(old, rqvae_assign(model, x))


def test_warm_start_from_the_same_parameters_is_an_exact_copy(trained, x):
  model, _ = trained
  # A learning rate too small to move anything: the codes are the init model's.
  cfg = dataclasses.replace(SMALL, steps=1, learning_rate=1e-12, dead_code_restart_every=0)
  warm, _ = train_rqvae(x, cfg, show_progress=False, init_model=model)
  np.testing.assert_array_equal(rqvae_assign(model, x), rqvae_assign(warm, x))


@pytest.mark.parametrize("field,value", [
    ("codebook_sizes", (16, 16, 8)), ("codebook_sizes", (16, 16)), ("latent_dim", 8),
    ("hidden_dims", (64,)), ("input_dim", 32),
])
def test_warm_start_shape_mismatch_names_the_field(trained, x, field, value):
  model, _ = trained
  cfg = dataclasses.replace(SMALL, steps=5, **{field: value})
  xx = x[:, :value] if field == "input_dim" else x
  with pytest.raises(ConfigError, match="init_model") as e:
    train_rqvae(xx, cfg, show_progress=False, init_model=model)
  assert e.value.field == field


def test_warm_start_rejects_non_models_and_mismatched_parameters(trained, x):
  model, _ = trained
  with pytest.raises(ConfigError) as e:
    train_rqvae(x, SMALL, show_progress=False, init_model="out/rqvae")
  assert e.value.field == "init_model"
  # A model whose parameters disagree with its own config (e.g. edited by hand).
  broken = rqvae.RQVAE(SMALL, rngs=rqvae.nnx.Rngs(0))
  broken.codebooks[2] = rqvae.nnx.Param(jnp.zeros((8, SMALL.latent_dim)))
  with pytest.raises(DataError, match="codebooks/2"):
    train_rqvae(x, dataclasses.replace(SMALL, steps=5), show_progress=False, init_model=broken)
