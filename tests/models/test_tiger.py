"""TIGER's encoder-decoder: shapes, causality, padding, decode == teacher forcing, config."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.decode.beam import beam_search
from lrm.decode.generative import recommend
from lrm.models.tiger import Seq2Seq, Seq2SeqConfig, seq2seq_loss
from lrm.sid.trie import build_trie
from lrm.tokens.sid_vocab import PAD, SIDVocab

SIZES = (8, 8, 4)
HYPER = dict(d_model=32, num_heads=2, head_dim=16, mlp_dim=64, encoder_layers=2,
             decoder_layers=2)


@pytest.fixture(scope="module")
def setup():
  vocab = SIDVocab(SIZES, num_user_tokens=10)
  cfg = Seq2SeqConfig.from_vocab(vocab, max_history=5, hyper=HYPER)
  model = Seq2Seq(cfg, rngs=nnx.Rngs(params=0, dropout=1))
  model.eval()
  rng = np.random.default_rng(0)
  codes = np.unique(rng.integers(0, SIZES, size=(120, 3)), axis=0)
  b = 6
  hist = vocab.encode_codes(codes[rng.integers(0, len(codes), (b, 5))]).reshape(b, 15)
  tokens = np.concatenate([vocab.user_tokens(np.arange(b))[:, None], hist], 1)
  tokens[:2, 1:7] = PAD                       # two users with shorter histories
  batch = {"encoder_tokens": jnp.asarray(tokens), "encoder_mask": jnp.asarray(tokens != PAD),
           "targets": jnp.asarray(vocab.encode_codes(codes[:b]))}
  return vocab, model, codes, batch


def test_shapes_and_loss(setup):
  vocab, model, _, batch = setup
  logits = model(batch["encoder_tokens"], batch["encoder_mask"], batch["targets"])
  assert [l.shape for l in logits] == [(6, 8), (6, 8), (6, 4)]
  loss, aux = seq2seq_loss(model, batch)
  assert np.isfinite(loss) and set(aux) >= {"loss", "sid_accuracy", "accuracy_level2"}


def test_decoder_is_causal(setup):
  _, model, _, batch = setup
  changed = batch["targets"].at[:, 1].set(batch["targets"][:, 1] + 1 - 2 * (
      batch["targets"][:, 1] % 2))    # another level-1 code
  a = model(batch["encoder_tokens"], batch["encoder_mask"], batch["targets"])
  b = model(batch["encoder_tokens"], batch["encoder_mask"], changed)
  np.testing.assert_allclose(a[0], b[0], atol=1e-6)   # level 0 reads BOS only
  np.testing.assert_allclose(a[1], b[1], atol=1e-6)   # level 1 reads BOS, code 0
  assert not np.allclose(a[2], b[2])                  # level 2 reads code 1


def test_padding_tokens_do_not_matter(setup):
  _, model, _, batch = setup
  tokens = np.asarray(batch["encoder_tokens"]).copy()
  tokens[:2, 1:7] = 5                                 # garbage under the mask
  a = model(batch["encoder_tokens"], batch["encoder_mask"], batch["targets"])
  b = model(jnp.asarray(tokens), batch["encoder_mask"], batch["targets"])
  for x, y in zip(a, b):
    np.testing.assert_allclose(x, y, atol=1e-5)


def test_beam_scores_equal_teacher_forcing(setup):
  vocab, model, codes, batch = setup
  trie = build_trie(codes, SIZES)
  state, context = model.init_decode(batch["encoder_tokens"], batch["encoder_mask"])
  graphdef, params = nnx.split(model)

  def step(state, prev, level, ctx):
    return nnx.merge(graphdef, ctx[0]).decode_step(state, prev, level, ctx[1])

  res = beam_search(step, state, trie.arrays(), batch_size=6, beam_size=8, num_levels=3,
                    codebook_sizes=SIZES, top_k=5, context=(params, context))
  assert bool(res.valid.all())
  got = np.asarray(res.codes)                                        # [6, 5, 3]
  targets = jnp.asarray(vocab.encode_codes(got.reshape(-1, 3)))
  rep = lambda x: jnp.repeat(x, 5, axis=0)
  logits = model(rep(batch["encoder_tokens"]), rep(batch["encoder_mask"]), targets)
  flat = got.reshape(-1, 3)
  teacher = sum(np.asarray(jax.nn.log_softmax(l))[np.arange(len(flat)), flat[:, c]]
                for c, l in enumerate(logits))
  np.testing.assert_allclose(np.asarray(res.scores).reshape(-1), teacher, atol=1e-4)


def test_recommend_returns_distinct_valid_items(setup):
  _, model, codes, batch = setup
  trie = build_trie(codes, SIZES, item_ids=np.arange(100, 100 + len(codes)))
  rec = recommend(model, np.asarray(batch["encoder_tokens"]), np.asarray(batch["encoder_mask"]),
                  trie, beam_size=10, top_k=10, batch_size=4)   # last batch padded
  assert rec.items.shape == (6, 10) and rec.invalid_rate == 0.0
  assert ((rec.items >= 100) & (rec.items < 100 + len(codes))).all()
  assert all(len(set(row)) == 10 for row in rec.items)
  np.testing.assert_array_equal(codes[rec.items - 100], rec.codes)
  assert (np.diff(rec.scores, axis=1) <= 1e-6).all()


def test_bf16_compute(setup):
  vocab, _, _, batch = setup
  cfg = Seq2SeqConfig.from_vocab(vocab, max_history=5, hyper={**HYPER, "dtype": "bfloat16"})
  model = Seq2Seq(cfg, rngs=nnx.Rngs(0))
  loss, _ = seq2seq_loss(model, batch)
  assert loss.dtype == jnp.float32 and np.isfinite(loss)
  assert nnx.state(model, nnx.Param)["token_embedding"]["embedding"][...].dtype == jnp.float32


@pytest.mark.parametrize("field,value", [("d_model", 0), ("dropout", 1.0), ("activation", "tanh"),
                                         ("dtype", "float16"), ("encoder_layers", -1)])
def test_config_errors_name_the_field(field, value):
  vocab = SIDVocab(SIZES, num_user_tokens=10)
  with pytest.raises(ConfigError, match=f"model.{field}"):
    Seq2SeqConfig.from_vocab(vocab, max_history=5, hyper={field: value})
  with pytest.raises(ConfigError, match="model.depth"):
    Seq2SeqConfig.from_vocab(vocab, max_history=5, hyper={"depth": 2})
