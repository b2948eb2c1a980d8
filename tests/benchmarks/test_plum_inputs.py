"""benchmarks/plum_ablation.py: which text each row's input embeddings come from."""

from __future__ import annotations

import numpy as np
import pytest

from lrm.core.errors import ConfigError
from lrm.data.types import Catalog


class _LengthEncoder:
  """Embeds a text as (its length, 1): enough to tell which fields were joined."""

  def encode(self, texts, show_progress=False):
    return np.array([[len(t), 1.0] for t in texts], np.float32)


def _catalog(titles):
  return Catalog(item_ids=np.arange(1, 5),
                 fields={"title": titles, "brand": ["Ab", "Cde", "F", "Gh"],
                         "categories": [["Outdoors", "Tents"]] * 4})


def test_sports_modalities_skip_the_missing_title(plum, tmp_path):
  inputs = plum._input_embeddings(tmp_path, _catalog([None] * 4), _LengthEncoder(), "",
                                  "sports")
  brand, categories = inputs["split"]
  lengths = lambda x: np.round(x[:, 0] / x[:, 1]).astype(int)   # unit rows: length / 1
  assert lengths(brand).tolist() == [2, 3, 1, 2]
  assert lengths(categories).tolist() == [len("Outdoors > Tents")] * 4
  assert lengths(inputs["fused"]).tolist() == [len(b) + len("; Outdoors > Tents")
                                               for b in ("Ab", "Cde", "F", "Gh")]
  assert sorted(p.name for p in tmp_path.iterdir()) == ["brand.npy", "cat.npy", "fused.npy"]


def test_a_mostly_empty_modality_is_refused(plum, tmp_path):
  with pytest.raises(ConfigError, match="title"):
    plum._input_embeddings(tmp_path, _catalog([None, None, None, "A tent"]), _LengthEncoder(),
                           "", "beauty")
