"""load_tfds and the data sources: the Dataset back, the pipeline's tfds source, errors."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest

from lrm.core.errors import ConfigError, DataError
from lrm.data.layout import read_dataset
from lrm.data.tfds import build_tfds, item_source, load_tfds, user_source
from lrm.jobs import stages

from tests.data.tfds.tiny import assert_same_dataset

REPO = pathlib.Path(__file__).resolve().parents[3]


def test_sources_hold_every_record_in_order(tiny_layout, tmp_path):
  name, dataset = build_tfds(tmp_path / "tfds", "layout", path=tiny_layout, max_part_bytes=300)
  users, items = user_source(name, tmp_path / "tfds"), item_source(name, tmp_path / "tfds")
  user_ids = [int(users[i]["user_id"]) for i in range(len(users))]
  assert user_ids == dataset.sequences.user_ids.tolist()
  assert [int(items[i]["item_id"]) for i in range(len(items))] == dataset.catalog.item_ids.tolist()
  first = users[0]
  assert first["length"] == len(first["item_ids"]) == dataset.sequences.lengths[0]
  assert json.loads(items[1]["fields"].decode())["title"] == "Misérables"


def test_missing_dataset_names_the_folder(tmp_path):
  with pytest.raises(DataError, match="no such TFDS data_dir"):
    load_tfds("lrm_layout/nope", tmp_path / "absent")
  (tmp_path / "tfds").mkdir()
  with pytest.raises(DataError) as e:
    load_tfds("lrm_layout/nope", tmp_path / "tfds")
  assert str(tmp_path / "tfds" / "lrm_layout" / "nope-users") in str(e.value)
  assert "\n" not in str(e.value)
  with pytest.raises(DataError, match="no builder folder holds it"):
    load_tfds("nope", tmp_path / "tfds")


def test_records_that_disagree_with_the_info_are_refused(tiny_layout, tmp_path):
  name, _ = build_tfds(tmp_path / "tfds", "layout", path=tiny_layout)
  path = tmp_path / "tfds" / "lrm_layout" / "tiny_set-users" / "1.0.0" / "metadata.json"
  meta = json.loads(path.read_text())
  meta["counts"]["users"] += 1
  path.write_text(json.dumps(meta))
  with pytest.raises(DataError, match="partly rewritten"):
    load_tfds(name, tmp_path / "tfds")
  meta["record_format"] = 99
  path.write_text(json.dumps(meta))
  with pytest.raises(DataError, match="not written by lrm's build_tfds"):
    load_tfds(name, tmp_path / "tfds")


def _tfds_config(name, data_dir, run_dir):
  config = stages.default_config()
  config.run_dir = str(run_dir)
  config.data.source = "tfds"
  config.data.tfds = name
  config.data.data_dir = str(data_dir)
  return config


def test_pipeline_data_stage_reads_tfds(tiny_layout, tmp_path):
  name, _ = build_tfds(tmp_path / "tfds", "layout", path=tiny_layout)
  config = _tfds_config(name, tmp_path / "tfds", tmp_path / "run")
  out = stages.data_stage(config, tmp_path / "run")
  assert_same_dataset(read_dataset(out), read_dataset(tiny_layout))


def test_pipeline_validate_names_the_tfds_fields(tmp_path):
  config = _tfds_config("lrm_layout/x", "", tmp_path)
  with pytest.raises(ConfigError, match="'data.tfds'.*data.data_dir"):
    stages.validate(config)
  config.data.source = "synthetic"
  config.data.data_dir = str(tmp_path)
  with pytest.raises(ConfigError, match="'data.source'.*data.source=tfds"):
    stages.validate(config)


def test_cli_writes_tfds(tiny_layout, tmp_path):
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  out = subprocess.run(
      [sys.executable, "-m", "lrm.cli.main", "data", "--source=layout", f"--path={tiny_layout}",
       "--format=tfds", f"--out={tmp_path / 'tfds'}"],
      capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  assert "--config.data.tfds=lrm_layout/tiny_set" in out.stdout
  assert_same_dataset(load_tfds("lrm_layout/tiny_set", tmp_path / "tfds"),
                      read_dataset(tiny_layout))
