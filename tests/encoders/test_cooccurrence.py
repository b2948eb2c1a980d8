"""Behaviour embeddings: counts by hand, no held-out event used, co-consumed items close."""

from __future__ import annotations

import numpy as np
import pytest

from lrm.core.errors import ConfigError
from lrm.data.splits import leave_one_out
from lrm.data.types import Catalog, Sequences
from lrm.encoders import cooccurrence as cooc
from lrm.core import artifacts
from lrm.jobs import embed as embed_lib


def _catalog(n: int) -> Catalog:
  return Catalog(item_ids=np.arange(1, n + 1), fields={"title": ["same"] * n})


def test_counts_by_hand():
  # Leave-one-out drops each user's last two events: user 1 trains on [1, 2, 3, 1], user 2 on
  # [4, 2, 4].
  seqs = Sequences.from_lists([1, 2], [[1, 2, 3, 1, 9, 9], [4, 2, 4, 9, 9]])
  counts = cooc.cooccurrence_counts(leave_one_out(seqs), _catalog(9), window=1).toarray()
  expected = np.zeros((9, 9))
  for a, b in [(1, 2), (2, 3), (3, 1), (4, 2), (2, 4)]:
    expected[a - 1, b - 1] += 1
    expected[b - 1, a - 1] += 1
  np.testing.assert_array_equal(counts, expected)
  assert counts[8].sum() == 0                  # item 9 is only ever a held-out target
  with pytest.raises(ConfigError, match="split"):
    cooc.cooccurrence_counts(seqs, _catalog(9), window=1)


def test_co_consumed_items_embed_close_and_held_out_events_are_unused():
  # Two communities of items, each user consuming within one; items 41..50 appear only as
  # validation / test targets.
  rng = np.random.default_rng(0)
  lists = []
  for u in range(200):
    group = np.arange(1, 21) if u % 2 else np.arange(21, 41)
    lists.append(rng.choice(group, 6, replace=False).tolist() + [41 + u % 5, 46 + u % 5])
  seqs = Sequences.from_lists(np.arange(1, 201), lists)
  catalog = _catalog(50)
  emb = cooc.cooccurrence_embeddings(leave_one_out(seqs), catalog, dim=8, seed=0)
  assert emb.shape == (50, 8) and emb.dtype == np.float32
  assert not emb[40:].any()                    # never co-consumed in training: zero rows
  unit = emb[:40] / np.linalg.norm(emb[:40], axis=1, keepdims=True)
  sims = unit @ unit.T
  same = np.equal.outer(np.arange(40) < 20, np.arange(40) < 20)
  assert sims[same].mean() > sims[~same].mean() + 0.5
  np.testing.assert_array_equal(emb, cooc.cooccurrence_embeddings(
      leave_one_out(seqs), catalog, dim=8, seed=0))            # deterministic
  # Other held-out targets change nothing.
  swapped = [l[:-2] + [46 + u % 5, 41 + u % 5] for u, l in enumerate(lists)]
  np.testing.assert_allclose(emb, cooc.cooccurrence_embeddings(
      leave_one_out(Sequences.from_lists(np.arange(1, 201), swapped)), catalog, dim=8, seed=0),
      atol=1e-6)
  with pytest.raises(ConfigError, match="embed.cooccurrence_dim"):
    cooc.cooccurrence_embeddings(leave_one_out(seqs), catalog, dim=0)


def test_embed_stage_fuses_text_with_behaviour():
  seqs = Sequences.from_lists(np.arange(1, 41), [[1 + (u + i) % 10 for i in range(6)]
                                                  for u in range(40)])
  catalog = _catalog(10)
  spec = embed_lib.EmbedSpec(modalities=("text", "cooccurrence"), cooccurrence_dim=4)
  emb, info = embed_lib.embed_catalog(catalog, spec, sequences=seqs, show_progress=False)
  # Every title is the same, so only the behaviour block tells items apart.
  assert len(np.unique(emb.round(5), axis=0)) == 10
  assert info["modalities"]["cooccurrence"]["items_with_signal"] == 10
  with pytest.raises(ConfigError, match="sequences"):
    embed_lib.embed_catalog(catalog, spec)


def test_embed_artifacts_from_before_the_behaviour_fields_are_still_reused(tmp_path):
  spec = embed_lib.EmbedSpec()
  legacy = {k: v for k, v in spec.__dict__.items()
            if k not in ("cooccurrence_dim", "cooccurrence_window")}
  artifacts.write_manifest(tmp_path, stage="embed", config=legacy, inputs={"data": "d"})
  assert embed_lib.is_complete(tmp_path, spec, {"data": "d"})
  assert not embed_lib.is_complete(tmp_path, spec, {"data": "other"})
  assert not embed_lib.is_complete(tmp_path, embed_lib.EmbedSpec(cooccurrence_dim=8),
                                   {"data": "d"})
