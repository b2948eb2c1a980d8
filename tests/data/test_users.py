"""User attributes: RecBole .user files, users.jsonl in the layout, Dataset alignment, and the
data stage carrying them into the run directory."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

from lrm.core import artifacts
from lrm.core.errors import DataError
from lrm.data.layout import read_dataset, read_users_jsonl, write_dataset
from lrm.data.movielens import read_recbole_atomic, read_recbole_users
from lrm.data.types import Catalog, Dataset, Sequences, UserTable

INTER = ("user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
         "3\t2\t4\t100\n1\t1\t5\t300\n1\t2\t3\t200\n2\t3\t1\t50\n")
USER_HEADER = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"


def _recbole(folder: pathlib.Path, users: str) -> pathlib.Path:
  folder.mkdir(parents=True, exist_ok=True)
  (folder / "toy.inter").write_text(INTER)
  (folder / "toy.user").write_text(users)
  return folder


def test_recbole_user_file(tmp_path):
  # User 9 is not in .inter (ignored); user 2 has no row (missing); rows out of order.
  folder = _recbole(tmp_path, USER_HEADER + "3\t45\tF\twriter\t01002\n9\t30\tM\tother\t1\n"
                    "1\t24\tM\ttechnician\tT8H1N\n")
  dataset = read_recbole_atomic(folder)
  users = dataset.users
  np.testing.assert_array_equal(users.user_ids, dataset.sequences.user_ids)
  np.testing.assert_array_equal(users.user_ids, [1, 2, 3])
  assert users.fields == {"age": [24, None, 45], "gender": ["M", None, "F"],
                          "occupation": ["technician", None, "writer"],
                          "zip_code": ["T8H1N", None, "01002"]}   # zips stay strings
  assert isinstance(users.fields["age"][0], int)


def test_no_user_file_means_no_users(tmp_path):
  folder = _recbole(tmp_path, "")
  (folder / "toy.user").unlink()
  assert read_recbole_atomic(folder).users is None


@pytest.mark.parametrize("text, line, message", [
    (USER_HEADER + "1\t24\tM\ttechnician\n", 2, "expected 5 tab-separated columns, got 4"),
    (USER_HEADER + "1\t24\tM\tx\t1\n\nx\t24\tM\tx\t1\n", 4, "non-integer user_id 'x'"),
    (USER_HEADER + "1\t24\tM\tx\t1\n2\t3\tF\tx\t1\n1\t5\tF\tx\t1\n", 4,
     "duplicate user_id 1 (first on line 2)"),
    (USER_HEADER + "1\ttwenty\tM\tx\t1\n", 2, "age must be an integer, got 'twenty'"),
    ("user_id:token\ttags:token_seq\n1\ta b\n", 1, "user features must be scalar"),
    ("age:token\n24\n", 1, "header has no 'user_id' column"),
])
def test_bad_user_file_names_file_and_line(tmp_path, text, line, message):
  folder = _recbole(tmp_path, text)
  with pytest.raises(DataError) as e:
    read_recbole_atomic(folder)
  assert str(e.value).startswith(f"{folder / 'toy.user'}:{line}: ")
  assert message in str(e.value)


def _dataset(users: UserTable | None) -> Dataset:
  return Dataset(name="u", catalog=Catalog(item_ids=[1, 2, 3]),
                 sequences=Sequences.from_lists([7, 2, 11], [[1, 2], [3], [2, 3, 1]]),
                 users=users)


def test_dataset_aligns_users_and_rejects_strangers():
  table = UserTable(user_ids=[11, 7], fields={"age": [30, 41], "city": ["Köln", None]})
  users = _dataset(table).users
  np.testing.assert_array_equal(users.user_ids, [7, 2, 11])
  assert users.fields == {"age": [41, None, 30], "city": [None, None, "Köln"]}
  with pytest.raises(DataError, match=r"ids with no sequence: \[5\]"):
    _dataset(UserTable(user_ids=[5], fields={"age": [1]}))
  with pytest.raises(DataError, match="must be str, int, float or None"):
    UserTable(user_ids=[1], fields={"tags": [["a"]]})
  with pytest.raises(DataError, match="reserved"):
    UserTable(user_ids=[1], fields={"user_id": [1]})


def test_users_jsonl_round_trip_and_stale_removal(tmp_path):
  original = _dataset(UserTable(user_ids=[11, 7, 2], fields={
      "age": [30, 41, None], "gender": ["F", "M", None], "score": [0.1 + 0.2, None, 2.5]}))
  write_dataset(tmp_path, original)
  lines = (tmp_path / "users.jsonl").read_text().splitlines()
  assert json.loads(lines[0]) == {"user_id": 7, "age": 41, "gender": "M", "score": None}
  assert artifacts.read_manifest(tmp_path)["user_fields"] == ["age", "gender", "score"]
  again = read_dataset(tmp_path)
  np.testing.assert_array_equal(again.users.user_ids, original.users.user_ids)
  assert again.users.fields == original.users.fields
  assert again.users.fields["score"][2] == 0.1 + 0.2     # floats exact through JSON
  write_dataset(tmp_path, _dataset(None))
  assert not (tmp_path / "users.jsonl").exists() and read_dataset(tmp_path).users is None


def test_users_jsonl_partial_file_gives_missing_values(tmp_path):
  write_dataset(tmp_path, _dataset(None))
  (tmp_path / "users.jsonl").write_text('{"user_id": 11, "age": 3}\n\n{"user_id": 2}\n')
  users = read_dataset(tmp_path).users
  assert users.fields == {"age": [None, None, 3]}


@pytest.mark.parametrize("text, line, message", [
    ('{"user_id": 7}\n{"user_id": 99, "age": 1}\n', 2, "unknown user_id 99"),
    ('{"user_id": 7}\n{"user_id": 2, "age": 1\n', 2, "bad JSON"),
    ('{"user_id": 7}\n\n{"age": 1}\n', 3, "missing required key 'user_id'"),
    ('{"user_id": "7"}\n', 1, "user_id must be an integer"),
    ('{"user_id": 7}\n{"user_id": 7}\n', 2, "duplicate user_id 7 (first on line 1)"),
    ('{"user_id": 7, "tags": ["a"]}\n', 1, "field 'tags' must be a string, number or null"),
    ('{"user_id": 7, "vip": true}\n', 1, "field 'vip' must be a string, number or null"),
    ('[7]\n', 1, "expected a JSON object"),
])
def test_bad_users_jsonl_names_file_and_line(tmp_path, text, line, message):
  write_dataset(tmp_path, _dataset(None))
  (tmp_path / "users.jsonl").write_text(text)
  with pytest.raises(DataError) as e:
    read_dataset(tmp_path)
  assert str(e.value).startswith(f"{tmp_path / 'users.jsonl'}:{line}: ")
  assert message in str(e.value)
  with pytest.raises(DataError):
    read_users_jsonl(tmp_path / "users.jsonl", np.array([7, 2, 11]))


def test_data_stage_carries_users_into_the_run_directory(tmp_path):
  from lrm.jobs.stages import data_stage, default_config
  folder = _recbole(tmp_path / "src", USER_HEADER + "1\t24\tM\ttechnician\t85711\n")
  config = default_config()
  config.data.source = "recbole"
  config.data.path = str(folder)
  out = data_stage(config, tmp_path / "run")
  assert (out / "users.jsonl").exists()
  dataset = read_dataset(out)
  assert dataset.users.fields["occupation"] == ["technician", None, None]
  assert read_recbole_users(folder / "toy.user").fields["zip_code"] == ["85711"]
