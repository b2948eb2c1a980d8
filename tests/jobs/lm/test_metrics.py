"""The LM's decoding helpers behind its metrics."""

import types

import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.jobs.lm.metrics import greedy_text, text_token_mask
from lrm.models.lm import LM, LMConfig, greedy_generate


def test_greedy_text_batches_equal_one_generate_call():
  """SID -> text generation in padded batches gives what one call over every prompt gives, and
  only the allowed tokens (the full-forward check of the generator is tests/models/test_lm)."""
  vocab = types.SimpleNamespace(tokenizer_size=90, pad=0, eos=2, fields=("title",),
                                field=lambda name: 95)
  allowed = text_token_mask(vocab, 128)
  assert allowed[[1, 2, 89, 95]].all() and not allowed[[0, 90, 100, 127]].any()
  model = LM(LMConfig(vocab_size=128, d_model=32, num_layers=2, num_heads=2, num_kv_heads=1,
                      head_dim=16, mlp_dim=64, init_std=0.3), rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 7, 7)
  segment_ids = (np.arange(6)[None] >= 6 - lengths[:, None]).astype(np.int32)  # left-padded
  tokens = np.where(segment_ids > 0, rng.integers(3, 128, (7, 6)), 0).astype(np.int32)
  prompts = types.SimpleNamespace(tokens=tokens, segment_ids=segment_ids,
                                  prefix=np.zeros((7, 6), bool))
  out = greedy_text(model, prompts, allowed, num_tokens=4, batch_size=3)
  whole = nnx.jit(lambda m, p, v, a: greedy_generate(m, p, v, 4, allowed=a))(
      model, jnp.asarray(tokens), jnp.asarray(segment_ids > 0), jnp.asarray(allowed))
  np.testing.assert_array_equal(out, np.asarray(whole))
  assert out.shape == (7, 4) and allowed[out].all()
  empty = types.SimpleNamespace(tokens=tokens[:0], segment_ids=segment_ids[:0],
                                prefix=np.zeros((0, 6), bool))
  assert greedy_text(model, empty, allowed, num_tokens=4, batch_size=3).shape == (0, 4)
