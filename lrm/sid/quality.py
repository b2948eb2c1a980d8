"""Quality of a Semantic-ID assignment: codebook usage, collisions, reconstruction, coherence.

All numbers are exact (from group counts), not sampled:
- per level: utilisation (share of codebook entries used), perplexity exp(H) of code usage
  (= k for uniform usage) and perplexity / k;
- collisions over the L semantic levels: the share of items whose full code is shared with
  another item, the number of distinct codes, the largest group;
- relative reconstruction error sum ||x - x_hat||^2 / sum ||x||^2 (when both are given);
- semantic coherence per prefix length p: P(same category | same p-prefix) divided by
  P(same category | random pair), over unordered pairs of items with known categories;
- embedding coherence per prefix length p (when embeddings are given): the mean cosine
  similarity of pairs sharing a p-prefix minus that of random pairs (exact: the sum of
  cosines over a group's pairs is (||sum of unit vectors||^2 - size) / 2).

Shape letters: n items, c level (L levels), k codebook size, d embedding dim.
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Sequence

import numpy as np

from lrm.core import artifacts
from lrm.core.errors import DataError
from lrm.core.report import format_table
from lrm.sid.table import check_codes, group_index

REPORT_JSON = "report.json"


def _pairs(counts: np.ndarray) -> float:
  counts = np.asarray(counts, np.float64)
  return float((counts * (counts - 1) / 2).sum())


def _ratio(a: float, b: float) -> float | None:
  return None if b == 0 else a / b


def level_usage(codes: np.ndarray, k: int) -> dict[str, Any]:
  """Usage of one level's codebook.

  Shape:
    codes: [n]
  """
  counts = np.bincount(codes, minlength=k).astype(np.float64)
  n = counts.sum()
  p = counts[counts > 0] / n if n else np.zeros(0)
  entropy = float(-(p * np.log(p)).sum()) if n else 0.0
  perplexity = math.exp(entropy)
  return {"codebook_size": int(k), "used": int((counts > 0).sum()),
          "utilisation": float((counts > 0).sum() / k), "entropy": entropy,
          "perplexity": perplexity, "perplexity_norm": perplexity / k}


def category_coherence(codes: np.ndarray, categories: np.ndarray, p: int) -> dict[str, Any]:
  """P(same category | same p-prefix), P(same category | random pair) and their ratio.

  Items with category -1 (unknown) are left out. Counts unordered pairs exactly: pairs within
  a prefix group g = sum_g C(n_g, 2), of which sum_{g, a} C(n_ga, 2) share category a.

  Shape:
    codes: [n, L]
    categories: [n]
  """
  known = categories >= 0
  cats = categories[known].astype(np.int64)
  pre = codes[known, :p]
  group, _ = group_index(pre)
  n = len(cats)
  same_prefix = _pairs(np.bincount(group)) if n else 0.0
  joint = np.unique(np.stack([group, cats], axis=1), axis=0, return_counts=True)[1] if n \
      else np.zeros(0)
  same_both = _pairs(joint)
  same_cat = _pairs(np.unique(cats, return_counts=True)[1]) if n else 0.0
  all_pairs = n * (n - 1) / 2
  p_prefix = _ratio(same_both, same_prefix)
  p_random = _ratio(same_cat, all_pairs)
  lift = None if p_prefix is None or not p_random else p_prefix / p_random
  return {"prefix": p, "pairs_same_prefix": same_prefix, "p_same_category_given_prefix": p_prefix,
          "p_same_category_random": p_random, "coherence": lift}


def embedding_coherence(codes: np.ndarray, embeddings: np.ndarray, p: int) -> dict[str, Any]:
  """Mean cosine of pairs sharing a p-prefix, of all pairs, and their difference (exact).

  A difference, not a ratio: the mean cosine of random pairs is near 0 for centred
  embeddings.

  Shape:
    codes: [n, L]
    embeddings: [n, d]
  """
  x = np.asarray(embeddings, np.float64)
  norm = np.linalg.norm(x, axis=1, keepdims=True)
  u = np.where(norm > 0, x / np.where(norm > 0, norm, 1), 0.0)
  self_sim = (norm[:, 0] > 0).astype(np.float64)        # cos(x, x): 1, 0 for zero vectors
  group, counts = group_index(codes[:, :p])
  sums = np.zeros((len(counts), u.shape[1]))
  np.add.at(sums, group, u)
  self_per_group = np.bincount(group, weights=self_sim, minlength=len(counts))
  within = float(((sums ** 2).sum(axis=1) - self_per_group).sum() / 2)
  total = float(((u.sum(axis=0) ** 2).sum() - self_sim.sum()) / 2)
  n = len(u)
  mean_within = _ratio(within, _pairs(counts))
  mean_all = _ratio(total, n * (n - 1) / 2)
  gain = None if mean_within is None or mean_all is None else mean_within - mean_all
  return {"prefix": p, "mean_cosine_same_prefix": mean_within, "mean_cosine_random": mean_all,
          "cosine_gain": gain}


def quality_report(codes: Any, codebook_sizes: Sequence[int], *, embeddings: Any = None,
                   reconstruction: Any = None, categories: Any = None,
                   prefix_levels: Sequence[int] = (1, 2, 3), seed: int = 0) -> dict[str, Any]:
  """Quality numbers of a code assignment (see the module docstring); JSON-ready.

  `codes` are the L semantic levels (no collision level). `reconstruction` needs
  `embeddings` (x_hat against x). `categories` are int leaf labels, -1 unknown. Prefix
  lengths beyond L are skipped. Every number is exact, so `seed` changes nothing today; it is
  recorded for sampled metrics to come.

  Shape:
    codes: [n, L]
    embeddings, reconstruction: [n, d]
    categories: [n]
  """
  codes = check_codes(codes, codebook_sizes)
  n, L = codes.shape
  sizes = tuple(int(k) for k in codebook_sizes)
  report: dict[str, Any] = {"num_items": n, "num_levels": L, "codebook_sizes": list(sizes),
                            "seed": int(seed)}
  report["levels"] = [{"level": c, **level_usage(codes[:, c], sizes[c])} for c in range(L)]
  _, counts = group_index(codes)
  shared = int(counts[counts > 1].sum())
  report["distinct_codes"] = int(len(counts))
  report["unique_fraction"] = float(len(counts) / n) if n else 0.0
  report["collision_rate"] = float(shared / n) if n else 0.0
  report["max_group"] = int(counts.max()) if len(counts) else 0
  prefixes = [int(p) for p in prefix_levels if 1 <= int(p) <= L]
  report["prefix_groups"] = {str(p): int(len(group_index(codes[:, :p])[1])) for p in prefixes}

  x = None
  if embeddings is not None:
    x = np.asarray(embeddings)
    if x.ndim != 2 or x.shape[0] != n:
      raise DataError(f"embeddings must have shape ({n}, d), got {x.shape}")
    if not np.isfinite(x).all():
      raise DataError("embeddings contain NaN or inf")
  if reconstruction is not None:
    if x is None:
      raise DataError("reconstruction given without embeddings")
    xh = np.asarray(reconstruction)
    if xh.shape != x.shape:
      raise DataError(f"reconstruction has shape {xh.shape}, embeddings {x.shape}")
    x64, xh64 = x.astype(np.float64), xh.astype(np.float64)
    report["reconstruction_error"] = _ratio(float(((x64 - xh64) ** 2).sum()),
                                            float((x64 ** 2).sum()))
  if categories is not None:
    cats = np.asarray(categories)
    if cats.shape != (n,):
      raise DataError(f"categories must have shape ({n},), got {cats.shape}")
    if cats.size and not np.issubdtype(cats.dtype, np.integer):
      raise DataError(f"categories must be integers (-1 unknown), got dtype {cats.dtype}")
    if cats.size and cats.min() < -1:
      raise DataError(f"categories must be >= -1 (-1 unknown), got {int(cats.min())}")
    report["categories_known"] = int((cats >= 0).sum())
    report["category_coherence"] = [category_coherence(codes, cats, p) for p in prefixes]
  if x is not None:
    report["embedding_coherence"] = [embedding_coherence(codes, x, p) for p in prefixes]
  return report


def co_assignment_retention(codes_a: Any, codes_b: Any, prefix: int) -> float | None:
  """Share of item pairs sharing a `prefix`-level code under `codes_a` that also share one
  under `codes_b` (exact, from group counts).

  Invariant to relabelling codes, so it compares two independent fits (another seed), where
  raw code ids are arbitrary; `stability_report` compares warm-started refits code by code.

  Shape: codes_a, codes_b [n, >= prefix].
  """
  a = np.asarray(codes_a)[:, :prefix]
  b = np.asarray(codes_b)[:, :prefix]
  if a.shape != b.shape:
    raise DataError(f"codes_a has shape {a.shape}, codes_b {b.shape}")
  ga = group_index(a)[0]
  gb = group_index(b)[0]
  together_a = _pairs(np.bincount(ga))
  together_both = _pairs(np.unique(np.stack([ga, gb], axis=1), axis=0, return_counts=True)[1])
  return _ratio(together_both, together_a)


def format_report(report: dict[str, Any]) -> str:
  """The report as printed tables."""
  out = [format_table(
      ["level", "k", "used", "utilisation", "perplexity", "perplexity/k"],
      [[r["level"], r["codebook_size"], r["used"], r["utilisation"], r["perplexity"],
        r["perplexity_norm"]] for r in report["levels"]])]
  rows = [["items", report["num_items"]], ["distinct codes", report["distinct_codes"]],
          ["unique fraction", report["unique_fraction"]],
          ["collision rate", report["collision_rate"]], ["largest group", report["max_group"]]]
  if report.get("reconstruction_error") is not None:
    rows.append(["reconstruction error", report["reconstruction_error"]])
  out.append(format_table(["metric", "value"], rows))
  na = lambda v: "-" if v is None else v
  if report.get("category_coherence"):
    out.append(format_table(
        ["prefix", "same category: same prefix", "same category: random pair", "coherence"],
        [[r["prefix"], na(r["p_same_category_given_prefix"]), na(r["p_same_category_random"]),
          na(r["coherence"])] for r in report["category_coherence"]]))
  if report.get("embedding_coherence"):
    out.append(format_table(
        ["prefix", "mean cos: same prefix", "mean cos: random pair", "gain"],
        [[r["prefix"], na(r["mean_cosine_same_prefix"]), na(r["mean_cosine_random"]),
          na(r["cosine_gain"])] for r in report["embedding_coherence"]]))
  return "\n\n".join(out)


def write_report(directory: str | os.PathLike, report: dict[str, Any]) -> pathlib.Path:
  """Writes `directory/report.json` atomically; returns its path."""
  path = pathlib.Path(directory) / REPORT_JSON
  artifacts.atomic_write_json(path, report)
  return path
