"""The fine-tuning job's pairs (lrm/jobs/finetune.py); the contrastive fit itself is
tests/encoders/test_contrastive.py's."""

import numpy as np
import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.data.splits import cold_start_split, warm_leave_one_out
from lrm.data.synthetic import WorldConfig, make_world
from lrm.encoders import pairs as pairs_lib
from lrm.jobs import finetune
from lrm.jobs.finetune import build_pairs
from lrm.tasks.ranking import cold_warm_split


def test_finetune_pairs_for_the_ranker_skip_cold_items_and_warm_targets():
  world = make_world(WorldConfig(branching=(2, 2), num_items=60, num_users=80))
  data = world.dataset
  pairs = build_pairs(data, window=2, item_to_item=True, queries=False, cold_fraction=0.2,
                      cold_seed=4)
  cold_rows = data.catalog.rows(cold_start_split(data.sequences, data.catalog, fraction=0.2,
                                                 seed=4).cold_items)
  assert len(pairs) and not np.isin(pairs.item, cold_rows).any()
  # The ranking protocol at the same fraction and seed holds out the same items.
  np.testing.assert_array_equal(
      np.sort(cold_rows), cold_warm_split(data.sequences, data.catalog, cold_fraction=0.2,
                                          seed=4).cold_rows)
  # Exactly the pairs of the warm training part; the plain split's pairs reach cold items.
  warm = warm_leave_one_out(data.sequences, data.catalog, cold_fraction=0.2, seed=4)
  expected = pairs_lib.co_consumption_pairs(warm, data.catalog, window=2)
  np.testing.assert_array_equal(pairs.positive_keys, expected.positive_keys)
  plain = build_pairs(data, window=2, item_to_item=True, queries=False)
  assert np.isin(plain.item, cold_rows).any()
  with pytest.raises(ConfigError, match="pairs.cold_fraction"):
    build_pairs(data, window=2, item_to_item=True, queries=False, cold_fraction=1.0)


def test_evaluate_needs_the_run_it_reads(tmp_path):
  with pytest.raises(ConfigError, match="workdir"):
    finetune.evaluate(None, None)
  with pytest.raises(DataError, match="manifest"):
    finetune.evaluate(None, tmp_path)
