import json

import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.data.synthetic import WorldConfig, make_world
from lrm.sid import stage
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
