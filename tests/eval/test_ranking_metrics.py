"""AUC / GAUC against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.eval.ranking import auc, gauc, task_metrics


def test_auc_hand_computed():
  # Positives 0.9, 0.4; negatives 0.5, 0.1: pairs (0.9>0.5, 0.9>0.1, 0.4<0.5, 0.4>0.1) = 3/4.
  assert auc([0.9, 0.5, 0.4, 0.1], [1, 0, 1, 0]) == pytest.approx(0.75)
  # A tie between a positive and a negative counts one half: (1 + 0.5) / 2.
  assert auc([0.3, 0.3, 0.1, 0.9], [1, 0, 0, 1]) == pytest.approx(0.75 + 0.125)
  assert np.isnan(auc([0.1, 0.2], [1, 1]))


def test_gauc_weights_users_by_examples_and_skips_one_class_users():
  scores = [0.9, 0.1, 0.2, 0.8, 0.7, 0.5, 0.4]
  labels = [1, 0, 1, 0, 0, 1, 0]
  users = [0, 0, 1, 1, 1, 2, 2]
  # user 0: AUC 1 (2 examples); user 1: positive 0.2 below both negatives, AUC 0 (3 examples);
  # user 2: AUC 1 (2 examples) -> (2 * 1 + 3 * 0 + 2 * 1) / 7.
  value, kept = gauc(scores, labels, users)
  assert value == pytest.approx(4 / 7) and kept == 3
  value, kept = gauc([0.1, 0.2, 0.3], [1, 1, 0], [0, 0, 1])
  assert np.isnan(value) and kept == 0


def test_task_metrics_use_only_known_labels():
  outputs = np.array([[2.0, 0.5], [1.0, 0.9], [-1.0, 0.0], [0.0, 0.3]])
  labels = {"click": np.array([1, 1, 0, 0.]), "watch_time": np.array([0.5, 0.7, 9.0, 9.0])}
  masks = {"click": np.ones(4), "watch_time": np.array([1, 1, 0, 0.])}
  m = task_metrics(outputs, labels, masks, np.array([0, 0, 0, 0]), ("click", "watch_time"),
                   binary=("click",))
  assert m["click/auc"] == 1.0 and m["click/gauc"] == 1.0
  assert m["watch_time/rmse"] == pytest.approx(np.sqrt((0.0 + 0.04) / 2))


def test_bad_inputs_raise():
  with pytest.raises(DataError, match="labels"):
    auc([0.1, 0.2], [2, 0])
  with pytest.raises(DataError, match="equal"):
    auc([0.1, 0.2], [1])
