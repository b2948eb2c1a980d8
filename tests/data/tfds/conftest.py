"""The tiny dataset of tiny.py, written in the standard layout."""

from __future__ import annotations

import pytest

from lrm.data.layout import write_dataset

from tests.data.tfds.tiny import tiny_dataset


@pytest.fixture
def tiny_layout(tmp_path):
  folder = tmp_path / "layout"
  write_dataset(folder, tiny_dataset())
  return folder
