import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.decode.beam import beam_search
from lrm.decode.generative import recommend
from lrm.models.decoder_only import (
  DecoderOnly,
  DecoderOnlyConfig,
  decoder_only_loss,
  prefix_lm_mask,
)
from lrm.sid.trie import build_trie
from lrm.tokens.sid_vocab import BOS, PAD, SIDVocab

SIZES = (8, 8, 4)
H = 3                                      # max history: prompt length 1 + 3 * 3 = 10
TINY = {"d_model": 32, "num_heads": 2, "head_dim": 16, "mlp_dim": 64, "num_layers": 2}
VOCAB = SIDVocab(SIZES, num_user_tokens=10)


# Jitted forward and decode step: eager op-by-op dispatch is the slow part of these tests.
_logits = nnx.jit(lambda model, tok, msk, tgt: model(tok, msk, tgt))
_init_decode = nnx.jit(lambda model, tok, msk: model.init_decode(tok, msk))
_decode_step = nnx.jit(lambda model, st, prev, ctx: model.decode_step(st, prev, 0, ctx))


def _model(seed: int = 0, **kw) -> DecoderOnly:
  cfg = DecoderOnlyConfig.from_vocab(VOCAB, max_history=H, hyper={**TINY, **kw})
  return DecoderOnly(cfg, rngs=nnx.Rngs(seed))


def _catalog(n: int = 60, seed: int = 0) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return np.unique(rng.integers(0, SIZES, size=(n, len(SIZES))), axis=0)


def _batch(codes: np.ndarray, b: int, seed: int = 0) -> dict[str, jax.Array]:
  """Users with 1..H history items (left-padded, as lrm/tasks/next_item.py `tokenize`)."""
  rng = np.random.default_rng(seed)
  L = len(SIZES)
  hist = VOCAB.encode_codes(codes[rng.integers(0, len(codes), (b, H))])      # [b, H, L]
  lengths = rng.integers(1, H + 1, b)
  hist = np.where((np.arange(H)[None] >= H - lengths[:, None])[..., None], hist, PAD)
  tokens = np.concatenate([VOCAB.user_tokens(np.arange(b))[:, None], hist.reshape(b, H * L)], 1)
  targets = VOCAB.encode_codes(codes[rng.integers(0, len(codes), b)])
  return {"encoder_tokens": jnp.asarray(tokens, jnp.int32),
          "encoder_mask": jnp.asarray(tokens != PAD),
          "targets": jnp.asarray(targets, jnp.int32)}


@pytest.fixture(scope="module")
def setup():
  model = _model()
  model.eval()                                       # dropout off: the paths must agree
  codes = _catalog()
  return model, codes, _batch(codes, 5)


def _teacher_forced_logp(model, batch, codes):
  """Sum over levels of the teacher-forced log-softmax of `codes` [b, K, L] -> [b, K]."""
  b, K, L = codes.shape
  rep = lambda x: jnp.repeat(x, K, axis=0)
  logits = _logits(model, rep(batch["encoder_tokens"]), rep(batch["encoder_mask"]),
                 jnp.asarray(VOCAB.encode_codes(codes.reshape(b * K, L))))
  flat = codes.reshape(b * K, L)
  total = sum(np.take_along_axis(np.asarray(jax.nn.log_softmax(lg)), flat[:, c:c + 1], 1)[:, 0]
              for c, lg in enumerate(logits))
  return total.reshape(b, K)


def test_shapes_and_context(setup):
  model, _, batch = setup
  logits = _logits(model, batch["encoder_tokens"], batch["encoder_mask"], batch["targets"])
  assert [lg.shape for lg in logits] == [(5, 8), (5, 8), (5, 4)]
  assert all(lg.dtype == jnp.float32 for lg in logits)
  tok, msk = batch["encoder_tokens"], batch["encoder_mask"]
  state, (keys, values, mask) = _init_decode(model, tok, msk)
  assert state.shape == (5, 3) and (np.asarray(state[:, 0]) == BOS).all()
  assert len(keys) == len(values) == 2
  assert keys[0].shape == values[1].shape == (5, 10, 2, 16) and mask.shape == (5, 10)
  with pytest.raises(ValueError, match="length 9"):
    model(tok[:, 1:], msk[:, 1:], batch["targets"])


def test_bfloat16_logits_are_float32(setup):
  _, _, batch = setup
  model = _model(dtype="bfloat16")
  logits = _logits(model, batch["encoder_tokens"], batch["encoder_mask"], batch["targets"])
  assert all(lg.dtype == jnp.float32 and bool(jnp.isfinite(lg).all()) for lg in logits)


def test_prefix_lm_mask_structure():
  # Prompt [pad, a, b] then 2 SID tokens: prompt is bidirectional over real tokens, the SID part
  # causal, padded keys hidden (a padded query sees itself only besides the real prompt).
  mask = np.asarray(prefix_lm_mask(jnp.array([[False, True, True]]), 2)[0, 0])
  np.testing.assert_array_equal(mask, [[1, 1, 1, 0, 0],
                                       [0, 1, 1, 0, 0],
                                       [0, 1, 1, 0, 0],
                                       [0, 1, 1, 1, 0],
                                       [0, 1, 1, 1, 1]])


def test_later_sid_tokens_do_not_change_earlier_levels(setup):
  model, _, batch = setup
  tok, msk, tgt = batch["encoder_tokens"], batch["encoder_mask"], batch["targets"]
  base = _logits(model, tok, msk, tgt)
  # targets[:, 1] is the input of SID position 2 only: levels 0 and 1 must not move.
  other = tgt.at[:, 1].set(VOCAB.level_offsets[1] + (tgt[:, 1] - VOCAB.level_offsets[1] + 1) % 8)
  changed = _logits(model, tok, msk, other)
  for c in (0, 1):
    np.testing.assert_allclose(base[c], changed[c], rtol=1e-5, atol=1e-6)
  assert not np.allclose(base[2], changed[2], atol=1e-4)
  # The last target token is never an input.
  last = _logits(model, tok, msk, tgt.at[:, 2].set(VOCAB.level_offsets[2]))
  np.testing.assert_allclose(last[2], base[2], rtol=1e-5, atol=1e-6)
  # A real prompt token (the last history token) reaches every level.
  prompt = tok.at[:, -1].set(VOCAB.level_offsets[2] + (tok[:, -1] - VOCAB.level_offsets[2] + 1) % 4)
  moved = _logits(model, prompt, msk, tgt)
  for c in range(3):
    assert not np.allclose(base[c], moved[c], atol=1e-4)


def test_padded_prompt_tokens_do_not_matter(setup):
  model, _, batch = setup
  tok, msk, tgt = batch["encoder_tokens"], batch["encoder_mask"], batch["targets"]
  assert not bool(msk.all())                         # some rows are padded
  garbage = jnp.where(msk, tok, VOCAB.level_offsets[0] + 3)
  for a, b in zip(_logits(model, tok, msk, tgt), _logits(model, garbage, msk, tgt)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
  # The same holds for decoding's prompt context: the masked keys are never read.
  st_a, ctx_a = _init_decode(model, tok, msk)
  st_b, ctx_b = _init_decode(model, garbage, msk)
  la, _ = _decode_step(model, st_a, jnp.zeros(5, jnp.int32), ctx_a)
  lb, _ = _decode_step(model, st_b, jnp.zeros(5, jnp.int32), ctx_b)
  np.testing.assert_allclose(la, lb, rtol=1e-5, atol=1e-6)


def test_beam_scores_equal_teacher_forcing(setup):
  # Unconstrained here (recommend's test below covers the trie): every beam's score is the sum
  # of its codes' log-probs, so the cached-prompt decode path must match the full forward.
  model, _, batch = setup
  state, ctx = _init_decode(model, batch["encoder_tokens"], batch["encoder_mask"])
  graphdef, params = nnx.split(model)

  def step(state, prev, level, context):
    return nnx.merge(graphdef, context[0]).decode_step(state, prev, level, context[1])

  res = beam_search(step, state, None, batch_size=5, beam_size=6, num_levels=3,
                    codebook_sizes=SIZES, top_k=6, constrained=False, context=(params, ctx))
  assert bool(jnp.isfinite(res.scores).all())
  np.testing.assert_allclose(res.scores, _teacher_forced_logp(model, batch, np.asarray(res.codes)),
                             rtol=1e-4, atol=1e-4)


def test_recommend_returns_valid_items_with_teacher_forced_scores(setup):
  model, codes, batch = setup
  trie = build_trie(codes, SIZES)
  # batch_size 2 over 5 users: the last batch is padded inside `recommend`.
  recs = recommend(model, np.asarray(batch["encoder_tokens"]), np.asarray(batch["encoder_mask"]),
                   trie, beam_size=8, top_k=5, batch_size=2)
  assert recs.items.shape == (5, 5) and recs.invalid_rate == 0.0
  assert ((recs.items >= 0) & (recs.items < len(codes))).all()
  np.testing.assert_array_equal(codes[recs.items], recs.codes)   # item ids are catalog rows
  assert all(len(set(row)) == len(row) for row in recs.items.tolist())
  assert (np.diff(recs.scores, axis=1) <= 1e-6).all()
  np.testing.assert_allclose(recs.scores, _teacher_forced_logp(model, batch, recs.codes),
                             rtol=1e-4, atol=1e-4)


def test_training_reduces_loss():
  # Synthetic task: the next item is a fixed function of the last history item.
  codes = _catalog(40, seed=1)
  batch = _batch(codes, 16, seed=1)
  last = np.asarray(batch["encoder_tokens"][:, -3:]) - np.asarray(VOCAB.level_offsets)
  row = {tuple(c): i for i, c in enumerate(codes.tolist())}
  nxt = np.array([(row[tuple(c)] * 7 + 3) % len(codes) for c in last.tolist()])
  batch["targets"] = jnp.asarray(VOCAB.encode_codes(codes[nxt]), jnp.int32)

  model = _model(seed=1, dropout=0.0, num_layers=1)
  opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)

  @nnx.jit
  def train_step(model, opt, batch):
    (loss, aux), grads = nnx.value_and_grad(decoder_only_loss, has_aux=True)(model, batch)
    opt.update(model, grads)
    return loss, aux

  losses, aux = [], {}
  for _ in range(30):
    loss, aux = train_step(model, opt, batch)
    losses.append(float(loss))
  assert set(aux) == {"loss", "sid_accuracy", "accuracy_level0", "accuracy_level1",
                      "accuracy_level2"}
  assert np.isfinite(losses).all()
  assert losses[-1] < 0.5 * losses[0], losses


@pytest.mark.parametrize("hyper,field", [
    ({"num_layers": 0}, "model.num_layers"),
    ({"head_dim": 2.5}, "model.head_dim"),
    ({"dropout": 1.0}, "model.dropout"),
    ({"activation": "tanh"}, "model.activation"),
    ({"dtype": "float16"}, "model.dtype"),
    ({"encoder_layers": 4}, "model.encoder_layers"),     # a Seq2Seq field, unknown here
    ({"prompt_length": 4}, "model.prompt_length"),       # data-derived, not a hyperparameter
])
def test_config_errors_name_fields(hyper, field):
  with pytest.raises(ConfigError) as err:
    DecoderOnlyConfig.from_vocab(VOCAB, max_history=H, hyper=hyper)
  assert err.value.field == field


def test_config_checks_vocab_and_levels():
  with pytest.raises(ConfigError) as err:
    DecoderOnlyConfig(vocab_size=10, codebook_sizes=(8,), level_offsets=(5,), prompt_length=3)
  assert err.value.field == "model.vocab_size"
  with pytest.raises(ConfigError) as err:
    DecoderOnlyConfig(vocab_size=30, codebook_sizes=(8, 8), level_offsets=(5,), prompt_length=3)
  assert err.value.field == "model.codebook_sizes"
  cfg = DecoderOnlyConfig.from_vocab(VOCAB, max_history=H, where="cfg.model")
  assert (cfg.prompt_length, cfg.num_levels, cfg.vocab_size) == (10, 3, VOCAB.size)
  assert (cfg.num_layers, cfg.d_model, cfg.num_heads, cfg.head_dim) == (8, 128, 6, 64)
  with pytest.raises(ConfigError, match="cfg.model.bogus"):
    DecoderOnlyConfig.from_vocab(VOCAB, max_history=H, hyper={"bogus": 1}, where="cfg.model")
