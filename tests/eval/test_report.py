"""predictions.jsonl round trip, re-scoring, malformed lines, result records and tables."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.data.splits import leave_one_out
from lrm.data.types import Sequences
from lrm.eval.metrics import drop_seen, rank_full_scores, retrieval_metrics
from lrm.eval.report import (TIGER_REFERENCE, read_predictions, rescore, results_table,
                             write_predictions, write_results)


def _split():
  rng = np.random.default_rng(1)
  lists = [rng.choice(40, size=rng.integers(3, 9), replace=False).tolist() for _ in range(25)]
  return leave_one_out(Sequences.from_lists(list(range(100, 125)), lists))


def test_write_read_rescore_round_trip(tmp_path):
  test = _split().test
  rng = np.random.default_rng(2)
  scores = rng.normal(size=(len(test), 40))
  scores[np.arange(len(test))[::3], test.targets[::3]] += 10.0  # some hits
  ranked = rank_full_scores(scores, np.arange(40), 20)
  ranked[0, 15:] = -1  # a short list is padded, not an error
  direct = retrieval_metrics(ranked, test.targets)
  path = tmp_path / "run" / "predictions.jsonl"
  # Written in another user order: rescore must align by user id.
  perm = rng.permutation(len(test))
  write_predictions(path, test.user_ids[perm], ranked[perm])
  users, back = read_predictions(path)
  assert users.tolist() == test.user_ids[perm].tolist()
  assert np.array_equal(back, ranked[perm])
  assert json.loads(path.read_text().splitlines()[0]).keys() == {"user", "items"}
  assert rescore(path, test) == direct
  assert direct["recall@20"] > 0.3
  assert rescore(path, test, ks=(5,)) == retrieval_metrics(ranked, test.targets, ks=(5,))
  excluded = rescore(path, test, exclude_history=True)
  assert excluded == retrieval_metrics(drop_seen(ranked, test.histories), test.targets)


def test_rescore_default_ks_follow_list_length(tmp_path):
  test = _split().test
  ranked = rank_full_scores(np.zeros((len(test), 40)), np.arange(40), 10)
  write_predictions(tmp_path / "p.jsonl", test.user_ids, ranked)
  assert set(rescore(tmp_path / "p.jsonl", test)) == {"recall@5", "ndcg@5", "recall@10",
                                                      "ndcg@10"}


def test_rescore_rejects_missing_or_extra_users(tmp_path):
  test = _split().test
  ranked = rank_full_scores(np.zeros((len(test), 40)), np.arange(40), 10)
  write_predictions(tmp_path / "p.jsonl", test.user_ids[1:], ranked[1:])
  with pytest.raises(DataError, match="1 evaluated users have no predictions"):
    rescore(tmp_path / "p.jsonl", test)
  users = test.user_ids.copy()
  write_predictions(tmp_path / "q.jsonl", np.r_[users, 999], np.r_[ranked, ranked[:1]])
  with pytest.raises(DataError, match=r"not in the evaluation set, e.g. \[999\]"):
    rescore(tmp_path / "q.jsonl", test)


@pytest.mark.parametrize("bad, message", [
    ("{not json", "invalid JSON"),
    ('[1, 2]', "expected an object"),
    ('{"user": 3}', "expected an object"),
    ('{"user": "3", "items": [1]}', "user must be an integer"),
    ('{"user": 3, "items": [1, 2.5]}', "list of integer"),
    ('{"user": 3, "items": [1, true]}', "list of integer"),
    ('{"user": 3, "items": [1, -4]}', "negative"),
    ('{"user": 3, "items": [1, 2, 1]}', "item 1 listed more than once"),
    ('{"user": 1, "items": [5]}', "user 1 already has predictions on line 1"),
])
def test_malformed_lines_are_named(tmp_path, bad, message):
  path = tmp_path / "predictions.jsonl"
  path.write_text('{"user": 1, "items": [4, 5]}\n\n' + bad + "\n")
  with pytest.raises(DataError, match=message) as e:
    read_predictions(path)
  assert str(e.value).startswith(f"{path}:3: ")


def test_empty_predictions_file(tmp_path):
  (tmp_path / "p.jsonl").write_text("\n")
  with pytest.raises(DataError, match="no predictions"):
    read_predictions(tmp_path / "p.jsonl")


def test_write_predictions_validates(tmp_path):
  with pytest.raises(DataError, match="more than once"):
    write_predictions(tmp_path / "p.jsonl", [1], [[3, 3]])
  with pytest.raises(DataError, match="duplicate user"):
    write_predictions(tmp_path / "p.jsonl", [1, 1], [[3], [4]])
  assert not (tmp_path / "p.jsonl").exists()


def test_reference_numbers_match_design():
  assert TIGER_REFERENCE["amazon_beauty"]["TIGER"] == {
      "recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384}
  assert TIGER_REFERENCE["amazon_sports"]["SASRec (TIGER's table)"] == {
      "recall@5": 0.0233, "ndcg@5": 0.0154, "recall@10": 0.0350, "ndcg@10": 0.0192}
  assert TIGER_REFERENCE["amazon_sports"]["TIGER"]["ndcg@10"] == 0.0225
  assert TIGER_REFERENCE["amazon_beauty"]["SASRec (TIGER's table)"]["recall@10"] == 0.0605


def test_results_table():
  ours = {"sasrec": {"recall@5": 0.05, "ndcg@5": 0.03, "recall@10": 0.07, "ndcg@10": 0.04},
          "popularity": {"recall@10": 0.01}}
  table = results_table(ours, "amazon_beauty")
  lines = table.splitlines()
  assert lines[0].split("|")[1].strip() == "model"
  assert "| sasrec " in lines[2] and "| ours " in lines[2] and "0.0700" in lines[2]
  assert "| popularity " in lines[3] and " - " in lines[3]
  assert "| TIGER " in lines[4] and "published" in lines[4] and "0.0648" in lines[4]
  assert len(lines) == 6
  assert len(results_table(ours, "movielens_1m").splitlines()) == 4


def test_write_results_keeps_reference_separate(tmp_path):
  record = {"benchmark": "tiger", "dataset": "amazon_sports", "split": "test", "model": "x",
            "metrics": {"recall@5": np.float64(0.02), "ndcg@10": 0.01},
            "metrics_history_excluded": {"recall@5": 0.03}}
  write_results(tmp_path / "r.json", record)
  back = json.loads((tmp_path / "r.json").read_text())
  assert back["metrics"] == {"recall@5": 0.02, "ndcg@10": 0.01}
  assert back["reference"] == TIGER_REFERENCE["amazon_sports"]
  assert "reference" not in record  # the caller's dict is not modified
  with pytest.raises(DataError, match="top-level 'reference'"):
    write_results(tmp_path / "s.json", {"metrics": {"TIGER": {"recall@5": 0.02}}})
  with pytest.raises(DataError, match="finite number"):
    write_results(tmp_path / "s.json", {"metrics": {"recall@5": float("nan")}})
  assert not (tmp_path / "s.json").exists()
