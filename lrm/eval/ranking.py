"""Ranking metrics: AUC, per-user GAUC, RMSE; per task, on warm and cold candidates.

AUC is the Mann-Whitney statistic (ties count one half, through average ranks). GAUC is the
per-user AUC averaged over users that have both a positive and a negative, weighted by the
user's number of examples (the usual "impression-weighted" form); users with one class only
are left out, and the count of users kept is reported.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from lrm.core.errors import DataError


def _average_ranks(x: np.ndarray) -> np.ndarray:
  """1-based ranks of x, ties sharing the mean of their ranks."""
  order = np.argsort(x, kind="mergesort")
  sx = x[order]
  starts = np.r_[True, sx[1:] != sx[:-1]]
  group = np.cumsum(starts) - 1
  first = np.flatnonzero(starts)
  last = np.r_[first[1:], len(x)]
  mean_rank = (first + last + 1) / 2.0          # mean of ranks first+1 .. last
  ranks = np.empty(len(x))
  ranks[order] = mean_rank[group]
  return ranks


def _check(scores, labels) -> tuple[np.ndarray, np.ndarray]:
  s = np.asarray(scores, np.float64)
  y = np.asarray(labels)
  if s.ndim != 1 or y.shape != s.shape:
    raise DataError(f"scores {s.shape} and labels {y.shape} must be equal 1-d arrays")
  if not np.isfinite(s).all():
    raise DataError("scores must be finite")
  if y.size and not np.isin(y, (0, 1)).all():
    raise DataError("labels must be 0 or 1")
  return s, y.astype(bool)


def auc(scores, labels) -> float:
  """Probability that a random positive outscores a random negative (ties 1/2); nan if a
  class is empty."""
  s, y = _check(scores, labels)
  p, n = int(y.sum()), int((~y).sum())
  if p == 0 or n == 0:
    return float("nan")
  ranks = _average_ranks(s)
  return float((ranks[y].sum() - p * (p + 1) / 2.0) / (p * n))


def gauc(scores, labels, groups) -> tuple[float, int]:
  """Example-weighted mean of per-group AUC over groups with both classes; (gauc, groups)."""
  s, y = _check(scores, labels)
  g = np.asarray(groups)
  if g.shape != s.shape:
    raise DataError(f"groups {g.shape} must match scores {s.shape}")
  order = np.argsort(g, kind="mergesort")
  g, s, y = g[order], s[order], y[order]
  bounds = np.flatnonzero(np.r_[True, g[1:] != g[:-1], True])
  total, weight, kept = 0.0, 0.0, 0
  for a, b in zip(bounds[:-1], bounds[1:]):
    ys = y[a:b]
    if ys.all() or not ys.any():
      continue
    total += (b - a) * auc(s[a:b], ys)
    weight += b - a
    kept += 1
  return (total / weight if weight else float("nan")), kept


def task_metrics(outputs: np.ndarray, labels: Mapping[str, np.ndarray],
                 masks: Mapping[str, np.ndarray], users: np.ndarray, tasks: Sequence[str],
                 binary: Sequence[str]) -> dict[str, float]:
  """`<task>/auc`, `<task>/gauc` for binary tasks and `<task>/rmse` for regression ones, over
  the examples whose label is known.

  Shape: outputs [n, t] (column i = tasks[i]); labels, masks, users [n].
  """
  out: dict[str, float] = {}
  for i, task in enumerate(tasks):
    if task not in labels:
      continue
    known = np.asarray(masks[task]) > 0
    if not known.any():
      continue
    s, y = outputs[known, i], np.asarray(labels[task])[known]
    if task in binary:
      out[f"{task}/auc"] = auc(s, y)
      out[f"{task}/gauc"], out[f"{task}/gauc_users"] = gauc(s, y, np.asarray(users)[known])
    else:
      out[f"{task}/rmse"] = float(np.sqrt(np.mean((s - y) ** 2)))
  return out
