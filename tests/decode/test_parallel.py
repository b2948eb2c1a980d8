"""Decoders of parallel-code models: exact scoring and beam search over the code trie."""

import jax
import numpy as np
import pytest
from flax import nnx

from lrm.decode.parallel import item_graph, rank_beam, rank_exact, rank_graph
from lrm.models.rpg import RPG, RPGConfig, score_items
from lrm.sid.trie import build_trie


def _model(codes, sizes, seed=0):
  cfg = RPGConfig(num_items=len(codes), codebook_sizes=sizes, max_length=5, d_model=16,
                  num_heads=2, head_dim=8, mlp_dim=32, num_layers=1, temperature=0.2)
  model = RPG(cfg, codes, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  k = model.head_kernel[...]
  model.head_kernel[...] = 0.5 * jax.random.normal(jax.random.key(seed + 7), k.shape)
  return model


@pytest.fixture
def small_catalog():
  """40 items with distinct codes over 3 codebooks of 4 (so every path fits in a beam of 64)."""
  rng = np.random.default_rng(0)
  sizes = (4, 4, 4)
  every = np.stack(np.meshgrid(*[np.arange(k) for k in sizes], indexing="ij"), -1).reshape(-1, 3)
  codes = every[rng.choice(len(every), 40, replace=False)]
  item_ids = np.arange(100, 140)
  inputs = rng.integers(0, 41, (37, 5)).astype(np.int32)
  return codes, sizes, item_ids, inputs


def test_exact_equals_brute_force_top_k(small_catalog):
  codes, sizes, item_ids, inputs = small_catalog
  model = _model(codes, sizes)
  items, stats = rank_exact(model, inputs, item_ids, k=7, batch_size=16)
  scores = np.asarray(score_items(model, inputs))
  want = item_ids[np.argsort(-scores, axis=1, kind="stable")[:, :7]]
  np.testing.assert_array_equal(np.sort(items, 1), np.sort(want, 1))
  assert stats["users_per_s"] > 0
  assert all(len(set(r)) == 7 for r in items)


def test_beam_returns_valid_distinct_items_and_agrees_with_exact(small_catalog):
  codes, sizes, item_ids, inputs = small_catalog
  model = _model(codes, sizes)
  trie = build_trie(codes, sizes, item_ids=item_ids)
  exact, _ = rank_exact(model, inputs, item_ids, k=10, batch_size=16)
  # A beam of 64 holds every prefix of every level: the search is exhaustive.
  beam, stats = rank_beam(model, inputs, item_ids, k=10, batch_size=16, trie=trie, beam_size=64)
  assert stats["invalid_rate"] == 0.0
  assert np.isin(beam, item_ids).all()
  assert all(len(set(r)) == 10 for r in beam)
  np.testing.assert_array_equal(beam, exact)
  # A narrow beam still returns real, distinct items.
  narrow, _ = rank_beam(model, inputs, item_ids, k=4, batch_size=16, trie=trie, beam_size=4)
  assert np.isin(narrow, item_ids).all() and all(len(set(r)) == 4 for r in narrow)


def test_graph_returns_valid_distinct_items_and_agrees_with_exact(small_catalog):
  codes, sizes, item_ids, inputs = small_catalog
  model = _model(codes, sizes)
  graph = item_graph(model, num_edges=5, chunk=16)
  assert graph.shape == (40, 5)
  assert not (graph == np.arange(40)[:, None]).any()          # never its own neighbour
  exact, _ = rank_exact(model, inputs, item_ids, k=10, batch_size=16)
  # Every item an entry: the first top-k is already exact, and moving can only keep it.
  full, _ = rank_graph(model, inputs, item_ids, k=10, batch_size=16, graph=graph,
                       entries=np.arange(40), beam_size=12, steps=2)
  np.testing.assert_array_equal(full, exact)
  # From a few entries the beams must walk the graph; items stay real and distinct.
  walked, stats = rank_graph(model, inputs, item_ids, k=4, batch_size=16, graph=graph,
                             entries=np.arange(6), beam_size=6, steps=3)
  assert stats["users_per_s"] > 0
  assert np.isin(walked, item_ids).all() and all(len(set(r)) == 4 for r in walked)
  with pytest.raises(ValueError, match="beam_size"):
    rank_graph(model, inputs, item_ids, k=10, batch_size=16, graph=graph,
               entries=np.arange(6), beam_size=6, steps=1)
