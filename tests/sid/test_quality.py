import json
import math

import numpy as np
import pytest

from lrm.core.errors import DataError
from lrm.sid.quality import format_report, quality_report, write_report

CODES = np.array([[0, 0], [0, 0], [0, 1], [1, 0], [1, 0], [1, 1], [1, 1]])
CATS = np.array([0, 0, 1, 1, 1, 0, -1])


def test_hand_made_report():
  rep = quality_report(CODES, (2, 3), categories=CATS, prefix_levels=(1, 2, 3))
  lv0, lv1 = rep["levels"]
  assert lv0["used"] == 2 and lv0["utilisation"] == 1.0
  p = np.array([3, 4]) / 7
  assert lv0["perplexity"] == pytest.approx(math.exp(-(p * np.log(p)).sum()))
  assert lv1["utilisation"] == pytest.approx(2 / 3)
  assert lv1["perplexity_norm"] == pytest.approx(lv1["perplexity"] / 3)
  assert rep["distinct_codes"] == 4 and rep["max_group"] == 2
  assert rep["collision_rate"] == pytest.approx(6 / 7)
  assert rep["unique_fraction"] == pytest.approx(4 / 7)
  assert rep["categories_known"] == 6
  c1, c2 = rep["category_coherence"]          # prefix 3 > L is skipped
  # Known items: 3 of category 0, 3 of category 1: P(same | random) = (3 + 3) / 15.
  assert c1["p_same_category_random"] == pytest.approx(0.4)
  # Prefix 1: groups {0,0,1} and {1,1,0}: 1 same pair of 3 each.
  assert c1["p_same_category_given_prefix"] == pytest.approx(1 / 3)
  assert c1["coherence"] == pytest.approx((1 / 3) / 0.4)
  # Prefix 2: groups {0,0}, {1}, {1,1}, {0} (the unknown item left out): 2 of 2 pairs.
  assert c2["p_same_category_given_prefix"] == 1.0
  assert c2["coherence"] == pytest.approx(2.5)
  assert c2["pairs_same_prefix"] == 2


def test_uniform_usage_perplexity_is_k():
  k = 8
  codes = np.repeat(np.arange(k), 5)[:, None]
  rep = quality_report(codes, (k,))
  assert rep["levels"][0]["perplexity"] == pytest.approx(k)
  assert rep["levels"][0]["perplexity_norm"] == pytest.approx(1.0)
  assert rep["levels"][0]["utilisation"] == 1.0
  # One code only: perplexity 1.
  assert quality_report(np.zeros((5, 1), int), (k,))["levels"][0]["perplexity"] == \
      pytest.approx(1.0)


def test_reconstruction_error():
  x = np.array([[3.0, 4.0], [0.0, 1.0]])
  xh = np.array([[3.0, 3.0], [0.0, 0.0]])
  rep = quality_report([[0], [1]], (2,), embeddings=x, reconstruction=xh)
  assert rep["reconstruction_error"] == pytest.approx(2 / 26)
  with pytest.raises(DataError, match="reconstruction"):
    quality_report([[0], [1]], (2,), reconstruction=xh)
  with pytest.raises(DataError, match="reconstruction has shape"):
    quality_report([[0], [1]], (2,), embeddings=x, reconstruction=xh[:1])


def test_coherence_matches_bruteforce():
  rng = np.random.default_rng(0)
  n = 120
  codes = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n), rng.integers(0, 2, n)], 1)
  cats = rng.integers(-1, 4, n)
  emb = rng.normal(size=(n, 5)) + 0.5
  rep = quality_report(codes, (3, 4, 2), categories=cats, embeddings=emb)
  i, j = np.triu_indices(n, 1)
  known = (cats[i] >= 0) & (cats[j] >= 0)
  same_cat = cats[i] == cats[j]
  u = emb / np.linalg.norm(emb, axis=1, keepdims=True)
  cos = (u[i] * u[j]).sum(1)
  for p, cc, ec in zip((1, 2, 3), rep["category_coherence"], rep["embedding_coherence"]):
    same = (codes[i, :p] == codes[j, :p]).all(1)
    want = same_cat[known & same].mean() / same_cat[known].mean()
    assert cc["coherence"] == pytest.approx(want)
    assert ec["mean_cosine_same_prefix"] == pytest.approx(cos[same].mean())
    assert ec["mean_cosine_random"] == pytest.approx(cos.mean())
  # A code that is the category itself: every same-prefix pair shares the category.
  perfect = quality_report(np.maximum(cats, 0)[:, None], (4,), categories=cats)
  assert perfect["category_coherence"][0]["p_same_category_given_prefix"] == 1.0


def test_bad_inputs_named():
  with pytest.raises(DataError, match="negative"):
    quality_report([[0], [-1]], (2,))
  with pytest.raises(DataError, match="codebook size"):
    quality_report([[0], [2]], (2,))
  with pytest.raises(DataError, match="categories must have shape"):
    quality_report([[0], [1]], (2,), categories=[0])
  with pytest.raises(DataError, match="categories must be >= -1"):
    quality_report([[0], [1]], (2,), categories=[0, -2])
  with pytest.raises(DataError, match="embeddings must have shape"):
    quality_report([[0], [1]], (2,), embeddings=np.zeros((3, 2)))


def test_format_and_write(tmp_path):
  rep = quality_report(CODES, (2, 3), categories=CATS, embeddings=np.eye(7)[:, :3] + 0.1)
  text = format_report(rep)
  assert "perplexity" in text and "collision rate" in text and "coherence" in text
  path = write_report(tmp_path / "q", rep)
  assert json.loads(path.read_text()) == json.loads(json.dumps(rep))
  assert [p.name for p in (tmp_path / "q").iterdir()] == ["report.json"]


def test_co_assignment_retention_is_label_invariant():
  from lrm.sid.quality import co_assignment_retention
  a = np.array([[0], [0], [0], [1], [1]])
  relabelled = np.array([[5], [5], [5], [2], [2]])
  assert co_assignment_retention(a, relabelled, 1) == 1.0
  # Pairs together in a: (0,1) (0,2) (1,2) (3,4); b keeps only (0,1) and (3,4).
  b = np.array([[1], [1], [0], [2], [2]])
  assert co_assignment_retention(a, b, 1) == 0.5
