import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lrm.models.layers import Attention, attention_with_dropout, sharding_scope
from lrm.models.windowed import attention_mask


def test_written_out_attention_equals_the_fused_one_without_dropout():
  q, k, v = (jax.random.normal(jax.random.key(i), (2, 5, 3, 4)) for i in range(3))
  mask = attention_mask(jnp.array([[False, True, True, True, True], [True] * 5]))
  for is_causal in (False, True):
    want = jax.nn.dot_product_attention(q, k, v, mask=mask, is_causal=is_causal)
    got = attention_with_dropout(q, k, v, mask, is_causal, nnx.Dropout(0.0))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_attention_dropout_acts_in_training_only():
  with sharding_scope():
    layer = Attention(8, 2, 4, dtype=jnp.float32, attention_impl=None, dropout=0.5,
                      rngs=nnx.Rngs(params=0, dropout=1))
    plain = Attention(8, 2, 4, dtype=jnp.float32, attention_impl=None,
                      rngs=nnx.Rngs(params=0, dropout=1))
  x = jax.random.normal(jax.random.key(3), (2, 6, 8))
  train = layer(x, is_causal=True)
  assert np.isfinite(np.asarray(train)).all()
  assert not np.allclose(train, plain(x, is_causal=True))
  layer.eval()
  np.testing.assert_allclose(layer(x, is_causal=True), plain(x, is_causal=True), rtol=1e-6)
