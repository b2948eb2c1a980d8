"""Predictions files, re-scoring, and result records beside the published reference numbers.

`predictions.jsonl` (DESIGN.md section 5): one line per user, `{"user": id, "items": [top-K item
ids, best first]}`, ids as in `sequences.txt`. With it anyone can re-score a run without the
model (`rescore`). Result records keep published numbers under a separate "reference" key.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, Mapping, Sequence

import numpy as np

from lrm.core.artifacts import atomic_path, atomic_write_json
from lrm.core.errors import DataError
from lrm.core.report import format_table
from lrm.data.splits import EvalSet
from lrm.eval.metrics import DEFAULT_KS, PAD, check_ranked, drop_seen, retrieval_metrics

PREDICTIONS = "predictions.jsonl"

# DESIGN.md section 6: Amazon 2014 5-core, leave-one-out, full ranking, test split, as published
# in TIGER (Rajput et al., NeurIPS 2023), Table 2. Never mixed with our numbers.
TIGER_REFERENCE: dict[str, dict[str, dict[str, float]]] = {
    "amazon_beauty": {
        "TIGER": {"recall@5": 0.0454, "ndcg@5": 0.0321, "recall@10": 0.0648, "ndcg@10": 0.0384},
        "SASRec (TIGER's table)": {"recall@5": 0.0387, "ndcg@5": 0.0249, "recall@10": 0.0605,
                                   "ndcg@10": 0.0318},
    },
    "amazon_sports": {
        "TIGER": {"recall@5": 0.0264, "ndcg@5": 0.0181, "recall@10": 0.0400, "ndcg@10": 0.0225},
        "SASRec (TIGER's table)": {"recall@5": 0.0233, "ndcg@5": 0.0154, "recall@10": 0.0350,
                                   "ndcg@10": 0.0192},
    },
}
REFERENCE_METRICS = ("recall@5", "ndcg@5", "recall@10", "ndcg@10")


def write_predictions(path: str | os.PathLike, user_ids, ranked_items) -> None:
  """Writes predictions.jsonl atomically: one line per user, -1 padding left out."""
  users = np.asarray(user_ids)
  ranked = check_ranked(ranked_items)
  if users.ndim != 1 or len(users) != ranked.shape[0]:
    raise DataError(f"{users.shape} user ids for {ranked.shape[0]} ranked lists")
  if len(users) and not np.issubdtype(users.dtype, np.integer):
    raise DataError(f"user ids must be integers, got dtype {users.dtype}")
  uniq, counts = np.unique(users, return_counts=True)
  if len(uniq) != len(users):
    raise DataError(f"duplicate user ids: {uniq[counts > 1][:5].tolist()}")
  with atomic_path(path) as tmp:
    with open(tmp, "w") as f:
      for user, row in zip(users.tolist(), ranked.tolist()):
        items = [i for i in row if i != PAD]
        f.write(json.dumps({"user": user, "items": items}, separators=(",", ":")) + "\n")


def _is_int(v: Any) -> bool:
  return isinstance(v, int) and not isinstance(v, bool)


def read_predictions(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
  """Reads predictions.jsonl: (user_ids int64 [u], ranked int64 [u, K] padded with -1).

  K is the longest list in the file. Blank lines are skipped. A malformed line (bad JSON, a
  missing or ill-typed field, a negative id, an item listed twice, a user seen before) is a
  DataError naming `file:line`.
  """
  users: list[int] = []
  lists: list[list[int]] = []
  first_line: dict[int, int] = {}
  with open(path) as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      err = lambda msg: DataError(msg, path=path, line=lineno)
      try:
        rec = json.loads(line)
      except json.JSONDecodeError as e:
        raise err(f"invalid JSON: {e.msg}") from None
      if not isinstance(rec, dict) or "user" not in rec or "items" not in rec:
        raise err('expected an object {"user": id, "items": [ids]}')
      user, items = rec["user"], rec["items"]
      if not _is_int(user):
        raise err(f"user must be an integer id, got {user!r}")
      if not isinstance(items, list) or not all(_is_int(i) for i in items):
        raise err("items must be a list of integer item ids")
      if any(i < 0 for i in items):
        raise err("items hold a negative id")
      if len(set(items)) != len(items):
        dup = next(i for i in items if items.count(i) > 1)
        raise err(f"item {dup} listed more than once (duplicates would inflate metrics)")
      if user in first_line:
        raise err(f"user {user} already has predictions on line {first_line[user]}")
      first_line[user] = lineno
      users.append(user)
      lists.append(items)
  if not users:
    raise DataError("no predictions in file", path=path)
  width = max(len(x) for x in lists)
  ranked = np.full((len(lists), width), PAD, np.int64)
  for r, items in enumerate(lists):
    ranked[r, :len(items)] = items
  return np.asarray(users, np.int64), ranked


def rescore(predictions_path: str | os.PathLike, eval_set: EvalSet,
            ks: Sequence[int] | None = None, *, exclude_history: bool = False) -> dict[str, float]:
  """Recomputes metrics from a predictions file and the evaluation set it was made for.

  Every user of `eval_set` must have exactly one line and the file may name no other user
  (a mismatch means the wrong split or an incomplete run: a DataError, not a partial score).

  Args:
    ks: cut-offs; by default those of (5, 10, 20) that the file's list length K covers.
    exclude_history: score the variant that drops items already in each user's history
      (`drop_seen`); only fair when the lists were longer than max(ks).
  """
  users, ranked = read_predictions(predictions_path)
  if ks is None:
    ks = tuple(k for k in DEFAULT_KS if k <= ranked.shape[1])
    if not ks:
      raise DataError(f"lists hold at most {ranked.shape[1]} items, fewer than the smallest "
                      f"default cut-off {DEFAULT_KS[0]}; pass ks", path=predictions_path)
  order = np.argsort(users)
  sorted_users = users[order]
  pos = np.minimum(np.searchsorted(sorted_users, eval_set.user_ids), len(users) - 1)
  found = sorted_users[pos] == eval_set.user_ids
  if not found.all():
    missing = eval_set.user_ids[~found]
    raise DataError(f"{len(missing)} evaluated users have no predictions, e.g. "
                    f"{missing[:5].tolist()}", path=predictions_path)
  if len(users) != len(eval_set):
    extra = np.setdiff1d(users, eval_set.user_ids)
    raise DataError(f"{len(extra)} users in the file are not in the evaluation set, e.g. "
                    f"{extra[:5].tolist()} (predictions for another split?)",
                    path=predictions_path)
  aligned = ranked[order[pos]]
  if exclude_history:
    aligned = drop_seen(aligned, eval_set.histories)
  return retrieval_metrics(aligned, eval_set.targets, ks)


def results_table(ours: Mapping[str, Mapping[str, float]], dataset: str,
                  metrics: Sequence[str] = REFERENCE_METRICS) -> str:
  """A table of our runs (name -> metrics) above the published rows for `dataset`.

  Missing values show as "-". A dataset without published numbers (not in TIGER_REFERENCE)
  gives only our rows.
  """
  header = ["model", "source", *metrics]
  cell = lambda m, name: float(m[name]) if name in m else "-"
  rows = [[name, "ours", *(cell(m, x) for x in metrics)] for name, m in ours.items()]
  rows += [[name, "published", *(cell(m, x) for x in metrics)]
           for name, m in TIGER_REFERENCE.get(dataset, {}).items()]
  return format_table(header, rows)


def _check_metrics(field: str, metrics: Any) -> None:
  if not isinstance(metrics, Mapping):
    raise DataError(f"record field '{field}' must be a dict of metric name -> number")
  for name, v in metrics.items():
    if name == "reference" or isinstance(v, Mapping):
      raise DataError(f"record field '{field}' holds '{name}': published numbers go under the "
                      f"top-level 'reference' key, never among ours")
    if not isinstance(v, (int, float, np.number)) or isinstance(v, bool) or not math.isfinite(v):
      raise DataError(f"record field '{field}.{name}' must be a finite number, got {v!r}")


def write_results(path: str | os.PathLike, record: Mapping[str, Any]) -> dict[str, Any]:
  """Writes a benchmark result record as JSON (atomically) and returns what was written.

  `record` follows DESIGN.md section 5 ({"benchmark", "dataset", "split", "model", "metrics",
  ...}). Our numbers go under "metrics" (and "metrics_history_excluded" for the variant without
  history items); published numbers live only under "reference": when the record has none and
  its dataset is in TIGER_REFERENCE, those rows are added there.
  """
  out = dict(record)
  if "metrics" not in out:
    raise DataError("record has no 'metrics'")
  for field in ("metrics", "metrics_history_excluded"):
    if field in out:
      _check_metrics(field, out[field])
  if "reference" not in out and out.get("dataset") in TIGER_REFERENCE:
    out["reference"] = TIGER_REFERENCE[out["dataset"]]
  if "reference" in out and not isinstance(out["reference"], Mapping):
    raise DataError("record field 'reference' must be a dict")
  atomic_write_json(path, out)
  return out
