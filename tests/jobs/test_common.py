"""What the jobs share (lrm/jobs/common.py)."""

import json

import numpy as np
import pytest

from lrm.core.errors import ConfigError
from lrm.data.splits import leave_one_out
from lrm.data.types import Sequences
from lrm.jobs import common


def test_sample_rows_is_a_fixed_sorted_subset_or_all():
  rows = common.sample_rows(10, 4, seed=3)
  assert len(rows) == 4 and (np.diff(rows) > 0).all()
  np.testing.assert_array_equal(rows, common.sample_rows(10, 4, seed=3))
  assert common.sample_rows(10, 0, seed=3) is None and common.sample_rows(10, 10, seed=3) is None


def test_subset_keeps_the_rows_in_their_order():
  seqs = Sequences.from_lists([1, 2, 3], [[1, 2, 3], [4, 5, 6], [7, 8, 9]])
  test = leave_one_out(seqs).test
  part = common.subset(test, np.array([2, 0]))
  np.testing.assert_array_equal(part.user_ids, [3, 1])
  np.testing.assert_array_equal(part.targets, [9, 3])
  assert common.subset(test, None) is test
  assert len(common.sample_users(test, 2, seed=0).targets) == 2


def test_checkpoints_are_bound_to_their_spec(tmp_path):
  assert not common.has_checkpoints(tmp_path)
  (tmp_path / "checkpoints" / "tmp").mkdir(parents=True)
  assert not common.has_checkpoints(tmp_path)
  (tmp_path / "checkpoints" / "20").mkdir()
  assert common.has_checkpoints(tmp_path)
  common.check_spec(tmp_path, {"model": "tiger", "sizes": (4, 4)})
  assert json.loads((tmp_path / "train_spec.json").read_text())["sizes"] == [4, 4]
  common.check_spec(tmp_path, {"model": "tiger", "sizes": (4, 4)})     # the same: no error
  with pytest.raises(ConfigError, match=r"'lm\.sizes'.*trained with \[4, 4\].*another x"):
    common.check_spec(tmp_path, {"model": "tiger", "sizes": (8,)},
                      field=lambda key: f"lm.{key}", other="x")


def test_saved_results_names_the_command_that_writes_them(tmp_path):
  with pytest.raises(FileNotFoundError, match="run `lrm replay` first"):
    common.saved_results(tmp_path / "results.json", "lrm replay")
  (tmp_path / "results.json").write_text('{"a": 1}')
  assert common.saved_results(tmp_path / "results.json", "lrm replay") == {"a": 1}
