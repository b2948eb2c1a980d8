import json

import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.data.synthetic import WorldConfig, make_world
from lrm.jobs import sid as stage
from lrm.sid.table import SIDTable
from lrm.sid.trie import contains, trie_from_table


@pytest.fixture(scope="module")
def world():
  return make_world(WorldConfig(num_items=600, num_users=50))


def _fit(world, **kw):
  spec = stage.SIDSpec(levels=2, codebook_size=16, iters=10, **kw)
  x = world.catalog.embeddings["visual"]
  return spec, x, stage.fit_sids(x, spec, item_ids=world.catalog.item_ids,
                                 categories=world.catalog.leaf_category(), show_progress=False)


@pytest.mark.parametrize("method", ["rq_kmeans", "kmeans", "rq_vae"])
def test_fit_write_reload_assign(world, tmp_path, method):
  spec, x, result = _fit(world, method=method,
                         rqvae={"steps": 150, "batch_size": 200, "hidden_dims": (32,),
                                "latent_dim": 16})
  table = result.table
  levels = 1 if method == "kmeans" else 2
  assert table.num_semantic_levels == levels and table.has_collision
  # The collision level makes every item's full code unique, and the trie holds exactly them.
  assert len(np.unique(table.full_codes, axis=0)) == table.num_items
  assert contains(trie_from_table(table), table.full_codes).all()
  # Planted topics: items sharing a first-level code share a leaf category far above chance.
  first = result.report["category_coherence"][0]
  assert first["coherence"] > 5
  manifest = stage.write_sids(tmp_path, result, spec)
  assert manifest["method"] == method
  assert json.loads((tmp_path / "report.json").read_text())["num_items"] == 600
  reloaded = SIDTable.load(tmp_path)
  np.testing.assert_array_equal(reloaded.full_codes, table.full_codes)
  # A new item gets a code from the fitted tokenizer, without refitting; old codes untouched.
  tok = stage.load_tokenizer(tmp_path)
  np.testing.assert_array_equal(stage.assign_codes(tok, x), table.codes)
  new = stage.assign_codes(tok, x[:3] + 0.01)
  extended = table.extend(np.array([10_001, 10_002, 10_003]), new)
  np.testing.assert_array_equal(extended.full_codes[:600], table.full_codes)


def test_reconstruction_error_falls_with_levels(world):
  errors = []
  for levels in (1, 2, 3):
    spec = stage.SIDSpec(levels=levels, codebook_size=16, iters=10)
    r = stage.fit_sids(world.catalog.embeddings["visual"], spec,
                       item_ids=world.catalog.item_ids, show_progress=False)
    errors.append(r.report["reconstruction_error"])
  assert errors[0] > errors[1] > errors[2]


def test_spec_errors_name_the_field(world):
  with pytest.raises(ConfigError, match="sid.method"):
    stage.SIDSpec(method="vq")
  with pytest.raises(ConfigError, match="sid.bogus"):
    stage.SIDSpec.from_config({"bogus": 1})
  with pytest.raises(ConfigError, match="sid.rqvae"):
    stage.fit_sids(world.catalog.embeddings["visual"],
                   stage.SIDSpec(method="rq_vae", rqvae={"nope": 1}),
                   item_ids=world.catalog.item_ids)
  x = world.catalog.embeddings["visual"].copy()
  x[3, 0] = np.nan
  with pytest.raises(DataError, match="NaN"):
    stage.fit_sids(x, stage.SIDSpec(), item_ids=world.catalog.item_ids)


def test_sid_v2_method_fits_writes_and_reloads(world, tmp_path):
  from lrm.data import write_dataset
  from lrm.data.splits import leave_one_out
  x = np.concatenate([world.catalog.embeddings["visual"], world.catalog.embeddings["audio"]], 1)
  options = {"modality_dims": (64, 32), "modality_hidden": (32,), "modality_out": 16,
             "hidden_dims": (32,), "latent_dim": 16, "steps": 30, "batch_size": 200,
             "cooccurrence_batch_size": 64}
  spec = stage.SIDSpec(method="sid_v2", codebook_sizes=(16, 8), sid_v2=options)
  train = leave_one_out(world.sequences).train
  result = stage.fit_sids(x, spec, item_ids=world.catalog.item_ids, cooccurrence=train,
                          categories=world.catalog.leaf_category(), show_progress=False)
  assert result.table.codes.shape == (600, 2) and result.table.has_collision
  assert result.report["method"] == "sid_v2"
  manifest = stage.write_sids(tmp_path / "a", result, spec)
  assert manifest["method"] == "sid_v2"
  tok = stage.load_tokenizer(tmp_path / "a")
  np.testing.assert_array_equal(stage.assign_codes(tok, x), result.table.codes)
  # `pairs_data` reads the same pairs from a dataset folder's training part.
  write_dataset(tmp_path / "data", world.dataset)
  spec_path = stage.SIDSpec(method="sid_v2", sid_v2={"pairs_data": str(tmp_path / "data")})
  from_folder = stage.cooccurrence_rows(spec_path, world.catalog.item_ids, None)
  np.testing.assert_array_equal(
      from_folder, stage.cooccurrence_rows(spec, world.catalog.item_ids, train))
  assert len(from_folder) > 100
  with pytest.raises(ConfigError, match="sid.sid_v2.modality_dims"):
    stage.fit_sids(x, stage.SIDSpec(method="sid_v2", sid_v2={"modality_dims": (64,)}),
                   item_ids=world.catalog.item_ids)
  with pytest.raises(ConfigError, match="sid.sid_v2.cooccurrence_weight"):
    stage.fit_sids(x, stage.SIDSpec(method="sid_v2", codebook_sizes=(16, 8), sid_v2=options),
                   item_ids=world.catalog.item_ids, show_progress=False)
