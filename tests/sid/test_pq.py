"""Product quantisation / OPQ: exact assignment, reconstruction, rotation, save/load, bad input,
and the `sid` stage's `opq` method end to end."""

from __future__ import annotations

import json

import ml_collections
import numpy as np
import pytest

from lrm.core import artifacts
from lrm.core.errors import ConfigError, DataError
from lrm.jobs import sid as stage, stages
from lrm.sid import pq
from lrm.sid.table import SIDTable


def correlated(n=600, d=32, seed=0):
  """Rows with decaying variances mixed by a random matrix (correlated coordinates)."""
  rng = np.random.default_rng(seed)
  mix = rng.normal(size=(d, d)) / np.sqrt(d)
  return ((rng.normal(size=(n, d)) * np.linspace(3.0, 0.2, d)) @ mix + 1.0).astype(np.float32)


def relative_error(model, x):
  x_hat = pq.reconstruct(model, pq.assign(model, x))
  return float(((x - x_hat) ** 2).sum() / ((x - x.mean(axis=0)) ** 2).sum())


@pytest.fixture(scope="module")
def data():
  return correlated()


@pytest.fixture(scope="module")
def fitted(data):
  return pq.fit_opq(data, num_codebooks=4, codebook_size=16, rotation_iters=2, kmeans_iters=10)


def test_assign_is_the_argmin_of_every_codebook(data, fitted, monkeypatch):
  # Small chunks and blocks: several chunks per block and a padded last block.
  monkeypatch.setattr(pq, "_CHUNK_ELEMENTS", 1)
  monkeypatch.setattr(pq, "BLOCK_ROWS", 256)
  codes = pq.assign(fitted, data)
  assert codes.shape == (600, 4) and codes.dtype == np.int32
  z = (data.astype(np.float64) - fitted.mean) @ fitted.components / fitted.scale
  y = (z @ fitted.rotation).reshape(600, 4, -1)                            # [n, m, s]
  dist = ((y[:, :, None, :] - fitted.codebooks[None].astype(np.float64)) ** 2).sum(-1)
  np.testing.assert_array_equal(codes, dist.argmin(axis=-1))
  assert fitted.pca_dim == 32 and fitted.sub_dim == 8 and fitted.fit_items == 600


def test_reconstruction_error_falls_with_more_codebooks(data):
  errors = [relative_error(pq.fit_opq(data, num_codebooks=m, codebook_size=16, kmeans_iters=10),
                           data) for m in (2, 4, 8)]
  assert errors[0] > errors[1] > errors[2] > 0


def test_opq_rotation_is_orthogonal_and_no_worse_than_pq(data):
  # Without whitening, PCA to the full dim and the rotation keep distances: the error in the
  # original space is the rotated space's distortion, which the alternation never raises.
  plain = pq.fit_opq(data, num_codebooks=4, codebook_size=16, whiten=False, kmeans_iters=10)
  opq = pq.fit_opq(data, num_codebooks=4, codebook_size=16, whiten=False, kmeans_iters=10,
                   rotation_iters=4)
  np.testing.assert_array_equal(plain.rotation, np.eye(32, dtype=np.float32))
  r = opq.rotation.astype(np.float64)
  np.testing.assert_allclose(r @ r.T, np.eye(32), atol=1e-5)
  assert len(opq.distortion) == 5 and opq.distortion[0] == pytest.approx(plain.distortion[0])
  assert np.all(np.diff(opq.distortion) <= 1e-6 * opq.distortion[0])
  assert relative_error(opq, data) < relative_error(plain, data)


def test_save_load_round_trip(data, fitted, tmp_path):
  fitted.save(tmp_path / "tok", config={"seed": 0})
  loaded = pq.PQModel.load(tmp_path / "tok")
  for name in ("mean", "components", "scale", "rotation", "codebooks"):
    np.testing.assert_array_equal(getattr(loaded, name), getattr(fitted, name))
  assert loaded.distortion == pytest.approx(fitted.distortion) and loaded.fit_items == 600
  np.testing.assert_array_equal(pq.assign(loaded, data), pq.assign(fitted, data))
  artifacts.write_manifest(tmp_path / "other", stage="rq_kmeans")
  with pytest.raises(DataError, match="not an OPQ artifact"):
    pq.PQModel.load(tmp_path / "other")


@pytest.mark.parametrize("kwargs, field", [
    ({"num_codebooks": 5, "pca_dim": 32}, "pca_dim"),
    ({"num_codebooks": 4, "pca_dim": 40}, "pca_dim"),
    ({"num_codebooks": 64}, "num_codebooks"),
    ({"num_codebooks": 4, "codebook_size": 601}, "codebook_size"),
    ({"num_codebooks": 4, "rotation_iters": -1}, "rotation_iters"),
])
def test_bad_options_name_the_field(data, kwargs, field):
  with pytest.raises(ConfigError) as e:
    pq.fit_opq(data, **kwargs)
  assert e.value.field == field


def test_bad_input_is_rejected(data, fitted):
  x = data.copy()
  x[3, 5] = np.nan
  with pytest.raises(DataError, match="x has non-finite"):
    pq.fit_opq(x, num_codebooks=4, codebook_size=16)
  with pytest.raises(DataError, match="x has non-finite"):
    pq.assign(fitted, x)
  with pytest.raises(DataError, match="x must have shape"):
    pq.assign(fitted, data[:, :16])
  # pca_dim = 0 rounds the input dim down to a multiple of m.
  assert pq.resolve_pca_dim(30, 4) == 28


def test_spec_checks():
  assert stage.SIDSpec(method="opq", num_codebooks=8, codebook_size=16).sizes == (16,) * 8
  assert not stage.SIDSpec(method="opq").uses_collision_level
  assert stage.SIDSpec(method="opq", opq_collision_level=True).uses_collision_level
  assert not stage.SIDSpec(method="opq", opq_collision_level=True,
                           collision_level=False).uses_collision_level
  for kwargs, field in [({"pca_dim": 30, "num_codebooks": 4}, "sid.pca_dim"),
                        ({"num_codebooks": 0}, "sid.num_codebooks"),
                        ({"opq_iters": -1}, "sid.opq_iters"),
                        ({"metric": "cosine"}, "sid.metric"),
                        ({"codebook_sizes": (16, 16)}, "sid.codebook_sizes")]:
    with pytest.raises(ConfigError) as e:
      stage.SIDSpec(method="opq", **kwargs)
    assert e.value.field == field


@pytest.fixture(scope="module")
def catalog():
  rng = np.random.default_rng(3)
  x = correlated(n=300, d=32, seed=3)
  return x, np.arange(1, 301) * 7, rng.integers(-1, 5, 300)


def test_stage_end_to_end(catalog, tmp_path):
  x, item_ids, categories = catalog
  spec = stage.SIDSpec(method="opq", num_codebooks=8, codebook_size=16, iters=10, opq_iters=2)
  assert spec.collision_level            # the default, switched off for opq
  fit = np.arange(300) < 200
  result = stage.fit_sids(x, spec, item_ids=item_ids, categories=categories, fit_rows=fit)
  table, report = result.table, result.report
  assert table.num_semantic_levels == 8 and not table.has_collision
  assert report["collision_level_size"] == 0 and report["fit_items"] == 200
  assert [lv["level"] for lv in report["levels"]] == list(range(8))
  assert all(0 < lv["utilisation"] <= 1 and lv["perplexity"] > 1 for lv in report["levels"])
  assert report["mean_perplexity"] == pytest.approx(
      np.mean([lv["perplexity"] for lv in report["levels"]]))
  assert 0 < report["reconstruction_error"] < 1 and report["unique_fraction"] > 0.9
  assert [c["prefix"] for c in report["category_coherence"]] == [1, 2, 4, 8]
  assert report["opq"]["pca_dim"] == 32 and len(report["opq"]["distortion"]) == 3
  manifest = stage.write_sids(tmp_path, result, spec)
  assert manifest["method"] == "opq" and manifest["fit_items"] == 200
  assert json.loads((tmp_path / "report.json").read_text())["num_levels"] == 8
  np.testing.assert_array_equal(SIDTable.load(tmp_path).full_codes, table.codes)
  tok = stage.load_tokenizer(tmp_path)
  assert isinstance(tok, pq.PQModel) and tok.fit_items == 200
  np.testing.assert_array_equal(stage.assign_codes(tok, x), table.codes)
  assert stage.is_complete(tmp_path, spec)
  assert not stage.is_complete(tmp_path, stage.SIDSpec(method="opq", num_codebooks=4,
                                                       codebook_size=16, iters=10, opq_iters=2))


def test_opq_collision_level_numbers_tied_items_apart(catalog):
  x, item_ids, _ = catalog
  x = np.concatenate([x[:200], x[:100]])           # 100 items share their text with another
  spec = stage.SIDSpec(method="opq", num_codebooks=4, codebook_size=16, iters=5,
                       opq_collision_level=True)
  result = stage.fit_sids(x, spec, item_ids=np.arange(1, 301), fit_rows=np.arange(200))
  table = result.table
  assert table.has_collision and table.num_semantic_levels == 4
  assert len(np.unique(table.full_codes, axis=0)) == 300
  assert result.report["collision_level_size"] == table.collision_size >= 2


def test_stage_fit_rows_checks(catalog):
  x, item_ids, _ = catalog
  opq = stage.SIDSpec(method="opq", num_codebooks=8, codebook_size=64, iters=5)
  with pytest.raises(ConfigError) as e:
    stage.fit_sids(x, opq, item_ids=item_ids, fit_rows=np.arange(50))
  assert e.value.field == "sid.codebook_size"
  with pytest.raises(DataError, match="fit_rows"):
    stage.fit_sids(x, opq, item_ids=item_ids, fit_rows=np.array([0, 300]))
  with pytest.raises(DataError, match="fit_rows"):
    stage.fit_sids(x, opq, item_ids=item_ids, fit_rows=np.ones(10, bool))
  with pytest.raises(ValueError, match="fit_rows"):
    stage.fit_sids(x, stage.SIDSpec(codebook_size=8), item_ids=item_ids, fit_rows=np.arange(9))


def test_artifacts_from_before_the_opq_fields_are_still_reused(tmp_path):
  spec = stage.SIDSpec()
  later = ("num_codebooks", "pca_dim", "whiten", "opq_iters", "opq_collision_level")
  legacy = {k: v for k, v in spec.to_dict().items() if k not in later}
  artifacts.write_manifest(tmp_path, stage="sid", config=legacy, inputs={"embed": "e"})
  assert stage.is_complete(tmp_path, spec, {"embed": "e"})
  assert not stage.is_complete(tmp_path, spec, {"embed": "other"})
  assert not stage.is_complete(tmp_path, stage.SIDSpec(opq_iters=3), {"embed": "e"})


def test_artifacts_from_before_the_opq_collision_field_are_still_reused(tmp_path):
  spec = stage.SIDSpec(method="opq", num_codebooks=4, codebook_size=16)
  legacy = {k: v for k, v in spec.to_dict().items() if k != "opq_collision_level"}
  artifacts.write_manifest(tmp_path, stage="sid", config=legacy, inputs={"embed": "e"})
  assert stage.is_complete(tmp_path, spec, {"embed": "e"})
  assert not stage.is_complete(tmp_path, stage.SIDSpec(
      method="opq", num_codebooks=4, codebook_size=16, opq_collision_level=True), {"embed": "e"})


def test_pipeline_fits_opq_on_training_items(tmp_path):
  from lrm.data.splits import leave_one_out
  from lrm.data.synthetic import WorldConfig, make_world
  world = make_world(WorldConfig(num_items=400, num_users=40))
  config = ml_collections.ConfigDict({"resume": True, "sid": stage.SIDSpec(
      method="opq", num_codebooks=4, codebook_size=16, iters=5).to_dict()})
  x = world.catalog.embeddings["visual"]
  report = stages.sid_stage(config, tmp_path, world.dataset, x)
  train_items = np.unique(leave_one_out(world.sequences).train.items)
  assert report["fit_items"] == len(train_items) and report["method"] == "opq"
  assert artifacts.read_manifest(tmp_path / "sid")["fit_items"] == len(train_items)
