"""Contrastive fine-tuning: InfoNCE by hand, false-negative masking, the two stages, reload."""

from __future__ import annotations

import numpy as np
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.data.synthetic import WorldConfig, make_world
from lrm.encoders import contrastive as C
from lrm.encoders import pairs as pairs_lib
from lrm.encoders.tiny import write_tiny_bert


def _log_softmax_loss(logits: np.ndarray) -> float:
  rows = [np.log(np.exp(r).sum()) - r[i] for i, r in enumerate(logits)]
  return float(np.mean(rows))


def test_info_nce_matches_a_hand_computed_value():
  q = np.array([[1.0, 0.0], [0.6, 0.8]], np.float32)
  k = np.array([[0.8, 0.6], [0.0, 1.0]], np.float32)
  t = 0.5
  # logits = q k^T / t = [[1.6, 0], [1.92, 1.6]]
  expected = 0.5 * ((np.log(np.exp(1.6) + 1.0) - 1.6)
                    + (np.log(np.exp(1.92) + np.exp(1.6)) - 1.6))
  assert float(C.info_nce(q, k, t)) == pytest.approx(expected, rel=1e-6)
  assert float(C.info_nce(q, k, t)) == pytest.approx(_log_softmax_loss(q @ k.T / t), rel=1e-6)


def test_false_negative_masking_removes_only_masked_terms():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(4, 3)).astype(np.float32)
  k = rng.normal(size=(4, 3)).astype(np.float32)
  # Batch: queries 0,0,1,2 over items 5,6,5,7 (the hand-made batch of test_pairs).
  ps = pairs_lib.make_pair_set(["a", "b", "c"], np.array([0, 0, 1, 2, 2]),
                               np.array([5, 6, 5, 7, 6]), num_items=10)
  mask = pairs_lib.false_negative_mask(np.array([0, 0, 1, 2]), np.array([5, 6, 5, 7]),
                                       ps.positive_keys, 10)
  logits = q @ k.T
  expected = np.mean([np.log(np.exp(logits[i][~mask[i]]).sum()) - logits[i, i]
                      for i in range(4)])
  assert float(C.info_nce(q, k, 1.0, mask)) == pytest.approx(expected, rel=1e-5)
  assert float(C.info_nce(q, k, 1.0, mask)) < float(C.info_nce(q, k, 1.0))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
  base = write_tiny_bert(tmp_path_factory.mktemp("bert") / "tiny", seed=1)
  world = make_world(WorldConfig(branching=(2, 2), num_items=40, num_users=20))
  ps = pairs_lib.topic_queries(world)
  texts = world.catalog.text()
  cfg = C.ContrastiveConfig(dim=8, batch_size=8, max_seq_length=16, align_steps=3,
                            joint_steps=3, align_learning_rate=1e-2, joint_learning_rate=1e-2)
  return base, ps, texts, cfg


def test_align_stage_freezes_the_encoder_and_joint_stage_moves_it(setup):
  base, ps, texts, cfg = setup
  model, tok = C.build(base, cfg)
  tokens = C.tokenize_pairs(tok, ps, texts, cfg.max_seq_length)
  bert0 = C.param_arrays(model.bert)
  proj0 = C.param_arrays(model.projection)
  losses = C.train_stage(model, ps, tokens, cfg, "align")
  assert losses.shape == (3,) and np.isfinite(losses).all()
  for name, value in C.param_arrays(model.bert).items():
    np.testing.assert_array_equal(value, bert0[name], err_msg=name)
  assert not np.allclose(C.param_arrays(model.projection)["kernel"], proj0["kernel"])
  C.train_stage(model, ps, tokens, cfg, "joint")
  moved = [n for n, v in C.param_arrays(model.bert).items() if not np.array_equal(v, bert0[n])]
  assert len(moved) > len(bert0) // 2
  with pytest.raises(ConfigError, match="stage"):
    C.train_stage(model, ps, tokens, cfg, "both")


def test_finetuned_encoder_reloads_and_embeds_identically(setup, tmp_path):
  base, ps, texts, cfg = setup
  model, tok = C.build(base, cfg)
  tokens = C.tokenize_pairs(tok, ps, texts, cfg.max_seq_length)
  C.train_stage(model, ps, tokens, cfg, "align")
  C.train_stage(model, ps, tokens, cfg, "joint")
  want = C.embed_tokens(model, tokens.item_ids, tokens.item_mask)
  assert want.shape == (40, 8)
  np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1.0, rtol=1e-5)
  C.save_finetuned(model, base, tmp_path / "ft", cfg=cfg)
  loaded = C.load_finetuned(tmp_path / "ft")
  np.testing.assert_array_equal(loaded.encode(texts), want)
  # The Orbax checkpoint of the same state restores to the same embeddings.
  from lrm.train.checkpoint import Checkpointer
  with Checkpointer(tmp_path / "ckpt") as ckpt:
    ckpt.save(1, nnx.state(model))
    ckpt.wait()
    fresh, _ = C.build(base, cfg)
    graphdef, abstract = nnx.split(nnx.eval_shape(lambda: C.build(base, cfg)[0]))
    restored, _ = ckpt.restore(abstract)
  again = nnx.merge(graphdef, restored)
  np.testing.assert_array_equal(C.embed_tokens(again, tokens.item_ids, tokens.item_mask), want)
  assert not np.array_equal(C.embed_tokens(fresh, tokens.item_ids, tokens.item_mask), want)


def test_config_errors_name_the_field():
  with pytest.raises(ConfigError, match="temperature"):
    C.ContrastiveConfig(temperature=0)
  with pytest.raises(ConfigError, match="batch_size"):
    C.ContrastiveConfig(batch_size=1)
  with pytest.raises(ConfigError, match="finetune.bogus"):
    C.ContrastiveConfig.from_dict({"bogus": 1})
