"""Prefix n-gram SID embeddings: keys per whole prefix, hashing and its collisions, padding."""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.sid_features import (CodeFamily, PrefixNGramEmbedding, check_codes,
                                     collision_report, prefix_rows)


def all_codes(sizes):
  return np.array(list(itertools.product(*[range(k) for k in sizes])), np.int32)


def test_exact_keys_are_mixed_radix_and_never_shared_across_subtrees():
  family = CodeFamily("sid", (4, 5, 3), max_rows=None)
  codes = all_codes(family.codebook_sizes)
  rows = np.asarray(prefix_rows(jnp.asarray(codes), family))
  np.testing.assert_array_equal(rows[:, 0], codes[:, 0])
  np.testing.assert_array_equal(rows[:, 1], codes[:, 0] * 5 + codes[:, 1])
  np.testing.assert_array_equal(rows[:, 2], (codes[:, 0] * 5 + codes[:, 1]) * 3 + codes[:, 2])
  # Same c2 under different c1: different level-2 rows; one row per distinct prefix.
  a, b = prefix_rows(jnp.array([[0, 2, 1], [1, 2, 1]]), family)
  assert a[1] != b[1] and a[2] != b[2]
  for level in range(3):
    assert len(np.unique(rows[:, level])) == len(np.unique(codes[:, :level + 1], axis=0))
  assert all(r["collisions"] == 0 and not r["hashed"] for r in collision_report(codes, family))


def test_hashed_levels_key_the_whole_prefix_and_count_collisions():
  family = CodeFamily("sid", (8, 8, 8), max_rows=50)
  assert [family.hashed(l) for l in range(3)] == [False, True, True]
  codes = all_codes(family.codebook_sizes)
  rows = np.asarray(prefix_rows(jnp.asarray(codes), family))
  assert rows.min() >= 0 and rows[:, 1:].max() < 50
  report = collision_report(codes, family)
  for level, r in enumerate(report):
    distinct_pairs = {(tuple(c[:level + 1]), int(x)) for c, x in zip(codes, rows[:, level])}
    brute = len({p for p, _ in distinct_pairs}) - len({x for _, x in distinct_pairs})
    assert r["collisions"] == brute
  assert report[0]["collisions"] == 0
  assert report[1]["prefixes"] == 64 and report[1]["collisions"] >= 64 - 50
  # The hash depends on c1: the same (c2, c3) under different c1 rarely lands on one row.
  same = np.mean([rows[(codes[:, 0] == 0)][:, 2] == rows[(codes[:, 0] == c1)][:, 2]
                  for c1 in range(1, 8)])
  assert same < 0.1
  # A big table collides rarely.
  wide = CodeFamily("sid", (8, 8, 8), max_rows=1 << 20)
  assert wide.hashed(2) is False
  deep = CodeFamily("sid", (256, 256, 256), max_rows=1 << 20)
  sample = np.random.default_rng(0).integers(0, 256, (2000, 3)).astype(np.int32)
  assert collision_report(sample, deep)[2]["collisions"] <= 10


def test_padding_codes_zero_the_prefix_and_everything_deeper():
  family = CodeFamily("sid", (4, 4), max_rows=None)
  emb = PrefixNGramEmbedding([family], 8, combine="tokens", rngs=nnx.Rngs(0))
  out = np.asarray(emb(jnp.array([[1, -1], [-1, 2], [1, 2]])))
  assert out.shape == (3, 2, 8)
  assert np.abs(out[0, 0]).sum() > 0 and (out[0, 1] == 0).all()
  assert (out[1] == 0).all()
  np.testing.assert_array_equal(out[0, 0], out[2, 0])      # shared level-1 prefix row


def test_sum_equals_tokens_and_depth_truncation_and_families():
  fams = [CodeFamily("slice", (4, 4, 4), max_rows=20), CodeFamily("room", (3, 5), levels=1)]
  summed = PrefixNGramEmbedding(fams, 8, combine="sum", rngs=nnx.Rngs(1))
  tokens = PrefixNGramEmbedding(fams, 8, combine="tokens", rngs=nnx.Rngs(1))
  codes = {"slice": jnp.array([[1, 2, 3], [3, 0, 1]]), "room": jnp.array([[2, 4], [0, 1]])}
  t = tokens(codes)
  assert t.shape == (2, 3 + 1, 8) and tokens.num_tokens() == 4
  np.testing.assert_allclose(summed(codes), t.sum(-2), rtol=1e-6, atol=1e-7)
  short = tokens(codes, levels={"slice": 2})
  assert short.shape == (2, 2 + 1, 8)
  np.testing.assert_allclose(short[:, :2], t[:, :2])
  with pytest.raises(ConfigError, match="missing code families"):
    summed({"slice": codes["slice"]})


def test_bad_inputs_name_the_field():
  with pytest.raises(ConfigError, match="sid.levels"):
    CodeFamily("sid", (4, 4), levels=3)
  with pytest.raises(ConfigError, match="codebook_sizes"):
    CodeFamily("sid", (4, 0))
  with pytest.raises(ConfigError, match="max_rows"):
    CodeFamily("sid", (1 << 16, 1 << 16), max_rows=None)
  family = CodeFamily("sid", (4, 4))
  with pytest.raises(ConfigError, match="sid.codes"):
    check_codes(np.array([[1, 4]]), family)
  with pytest.raises(ConfigError, match="sid.codes"):
    prefix_rows(jnp.array([[1]]), family)
  with pytest.raises(ConfigError, match="families"):
    PrefixNGramEmbedding([family, family], 8, rngs=nnx.Rngs(0))
