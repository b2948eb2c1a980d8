"""Sanity of meaning for item embeddings: do nearest neighbours share a label?"""

from __future__ import annotations

import numpy as np


def neighbour_label_agreement(embeddings: np.ndarray, labels: np.ndarray, *,
                              chunk: int = 2048) -> dict[str, float]:
  """Share of items whose cosine nearest neighbour (itself excluded) has the same label.

  Items with label -1 (unknown) are skipped as queries and never count as a match. Also
  returns the chance level: the probability that a random other labelled item shares the label.

  Shape:
    embeddings: [n, d]; labels: int [n].
  """
  emb = np.asarray(embeddings, np.float32)
  emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  labels = np.asarray(labels)
  query_rows = np.flatnonzero(labels >= 0)
  hits = 0
  for start in range(0, len(query_rows), chunk):
    rows = query_rows[start:start + chunk]
    sims = emb[rows] @ emb.T
    sims[np.arange(len(rows)), rows] = -np.inf
    nn = sims.argmax(axis=1)
    hits += int((labels[nn] == labels[rows]).sum())
  counts = np.bincount(labels[query_rows]) if len(query_rows) else np.zeros(0)
  m = len(query_rows)
  chance = float((counts * (counts - 1)).sum() / (m * (m - 1))) if m > 1 else 0.0
  return {"nn_label_agreement": hits / max(m, 1), "chance": chance, "items_scored": int(m)}
