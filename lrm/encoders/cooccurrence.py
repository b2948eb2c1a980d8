"""Behaviour embeddings of items: a truncated SVD of the positive PMI of co-consumption.

Items one user consumed within `window` positions of each other count as co-consumed; the
counts' positive pointwise mutual information (context distribution smoothed by `smoothing`, as
word2vec's negative sampling implicitly factorises, Levy & Goldberg 2014) is factorised by a
truncated SVD, and an item's vector is its row of U * sqrt(S). Items bought together by the same
users get nearby vectors: the collaborative signal an item-ID model learns, in a form SIDs can
be fitted on.

The embed stage's `cooccurrence` modality, fused beside `text`, lets the SIDs tell apart items
whose text is the same (Amazon Sports has no titles: two items in three share brand and
categories) and carry behaviour, as LETTER (Wang et al., CIKM 2024) and PLUM's co-occurrence
loss do. The counts come from the training part of leave-one-out only, so no validation or test
target informs them. Items without a training co-consumption get a zero row: cold items are
carried by the content modalities alone.

Shape letters: n items (catalog rows), p co-consumed pairs, k dims.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import scipy.sparse.linalg

from lrm.core.errors import ConfigError
from lrm.data.splits import LeaveOneOut
from lrm.data.types import Catalog
from lrm.encoders.pairs import window_pairs


def cooccurrence_counts(split: LeaveOneOut, catalog: Catalog, *, window: int
                        ) -> scipy.sparse.csr_matrix:
  """Symmetric counts of items consumed within `window` positions by one user (training part
  of `split` only; the diagonal stays empty). Shape: -> [n, n]."""
  if not isinstance(split, LeaveOneOut):
    raise ConfigError("split", "co-consumption counts come from a LeaveOneOut split's training "
                      f"part only, got {type(split).__name__}")
  a, b = window_pairs(split.train, catalog, window=window)
  a, b = np.concatenate([a, b]), np.concatenate([b, a])
  n = len(catalog)
  counts = scipy.sparse.coo_matrix((np.ones(len(a), np.float64), (a, b)), shape=(n, n))
  return counts.tocsr()      # duplicate (a, b) entries are summed


def positive_pmi(counts: scipy.sparse.csr_matrix, *, smoothing: float) -> scipy.sparse.csr_matrix:
  """max(0, log p(a, b) / (p(a) p_s(b))) with p_s the context marginal raised to `smoothing`
  and renormalised (0.75 damps the pull of the most popular items). Shape: [n, n] -> [n, n]."""
  coo = counts.tocoo()
  total = coo.data.sum()
  marginal = np.asarray(counts.sum(axis=1)).ravel()
  context = marginal ** smoothing
  context = context / context.sum()
  pmi = (np.log(coo.data / total) - np.log(marginal[coo.row] / total)
         - np.log(context[coo.col]))
  keep = pmi > 0
  return scipy.sparse.csr_matrix((pmi[keep], (coo.row[keep], coo.col[keep])),
                                 shape=counts.shape)


def cooccurrence_embeddings(split: LeaveOneOut, catalog: Catalog, *, dim: int = 64,
                            window: int = 3, smoothing: float = 0.75, seed: int = 0
                            ) -> np.ndarray:
  """Every catalog item's behaviour vector (zero for items never co-consumed in training).

  Deterministic for a seed: ARPACK starts from a seeded vector, and each dimension's sign is
  fixed so that its largest-magnitude entry is positive.

  Shape: -> float32 [n, dim].
  """
  for name, value in (("dim", dim), ("window", window)):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
      raise ConfigError(f"embed.cooccurrence_{name}", f"must be an integer >= 1, got {value!r}")
  if not 0 < smoothing <= 1:
    raise ConfigError("embed.cooccurrence_smoothing", f"must lie in (0, 1], got {smoothing!r}")
  n = len(catalog)
  counts = cooccurrence_counts(split, catalog, window=window)
  out = np.zeros((n, dim), np.float32)
  k = min(int(dim), n - 2)      # ARPACK needs k < n - 1
  if counts.nnz == 0 or k < 1:
    return out
  ppmi = positive_pmi(counts, smoothing=smoothing)
  if ppmi.nnz == 0:
    return out
  v0 = np.random.default_rng(seed).standard_normal(n)
  u, s, _ = scipy.sparse.linalg.svds(ppmi, k=k, v0=v0)
  order = np.argsort(-s)                         # svds returns ascending singular values
  u, s = u[:, order], s[order]
  vectors = u * np.sqrt(s)
  signs = np.sign(vectors[np.abs(vectors).argmax(axis=0), np.arange(k)])
  out[:, :k] = vectors * np.where(signs == 0, 1.0, signs)
  return out
