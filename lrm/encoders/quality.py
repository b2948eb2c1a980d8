"""Sanity of meaning for item embeddings: do nearest neighbours share a label?"""

from __future__ import annotations

import numpy as np


def neighbour_label_agreement(embeddings: np.ndarray, labels: np.ndarray, *,
                              max_queries: int = 20_000, seed: int = 0,
                              chunk: int = 2048) -> dict[str, float]:
  """Share of items whose cosine nearest neighbour (itself excluded) has the same label.

  Items with label -1 (unknown) are skipped as queries and never count as a match. Catalogs
  larger than `max_queries` are scored on a seeded sample of queries (against every item), so
  the cost stays linear in the catalog. Also returns the chance level: the probability that a
  random other labelled item shares the label.

  Shape:
    embeddings: [n, d]; labels: int [n].
  """
  emb = np.asarray(embeddings, np.float32)
  emb = emb / np.maximum(np.linalg.norm(emb, axis=1, keepdims=True), 1e-12)
  labels = np.asarray(labels)
  labelled = np.flatnonzero(labels >= 0)
  query_rows = labelled
  if len(labelled) > max_queries:
    query_rows = np.sort(np.random.default_rng(seed).choice(labelled, max_queries, replace=False))
  hits = 0
  for start in range(0, len(query_rows), chunk):
    rows = query_rows[start:start + chunk]
    sims = emb[rows] @ emb.T
    sims[np.arange(len(rows)), rows] = -np.inf
    nn = sims.argmax(axis=1)
    hits += int((labels[nn] == labels[rows]).sum())
  counts = np.bincount(labels[labelled]) if len(labelled) else np.zeros(0)
  m = len(labelled)
  chance = float((counts * (counts - 1)).sum() / (m * (m - 1))) if m > 1 else 0.0
  return {"nn_label_agreement": hits / max(len(query_rows), 1), "chance": chance,
          "items_scored": int(len(query_rows))}
