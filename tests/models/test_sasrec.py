import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.models.sasrec import SASRec, SASRecConfig, sasrec_loss, score_items
from lrm.models.windowed import attention_mask

TINY = dict(num_items=20, max_length=8, d_model=16, num_heads=2, head_dim=8, mlp_dim=32,
            num_layers=2)


def _model(seed: int = 0, **kw) -> SASRec:
  return SASRec(SASRecConfig(**{**TINY, **kw}), rngs=nnx.Rngs(seed))


def test_shapes_and_dtypes():
  model = _model()
  model.eval()                                       # dropout off: the two paths must agree
  inputs = jnp.array([[0, 0, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6, 7, 20]], jnp.int32)
  hidden = model(inputs)
  assert hidden.shape == (2, 8, 16)
  logits = model.logits(hidden)
  assert logits.shape == (2, 8, 20) and logits.dtype == jnp.float32
  scores = score_items(model, inputs)
  assert scores.shape == (2, 20)
  np.testing.assert_allclose(scores, logits[:, -1], rtol=1e-6)
  assert model.item_embed.embedding[...].shape == (128, 16)   # 21 rows, padded for sharding


def test_bfloat16_logits_are_float32():
  model = _model(dtype="bfloat16")
  scores = score_items(model, jnp.array([[0, 1, 2]], jnp.int32))
  assert scores.dtype == jnp.float32 and bool(jnp.isfinite(scores).all())


def test_causal():
  model = _model()
  model.eval()
  a = jnp.array([[0, 0, 3, 4, 5, 6, 7, 8]], jnp.int32)
  b = a.at[0, 5].set(11)
  ha, hb = model(a), model(b)
  np.testing.assert_allclose(ha[:, :5], hb[:, :5], rtol=1e-5, atol=1e-6)
  assert not np.allclose(ha[:, 5:], hb[:, 5:])


def test_left_padding_invariance():
  model = _model()
  model.eval()
  short = jnp.array([[0, 3, 4, 5]], jnp.int32)
  long = jnp.array([[0, 0, 0, 0, 0, 3, 4, 5]], jnp.int32)
  same_len = jnp.array([[0, 0, 0, 0, 0, 3, 4, 5]], jnp.int32)
  np.testing.assert_allclose(score_items(model, short), score_items(model, long),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(score_items(model, long), score_items(model, same_len),
                             rtol=1e-6)


def test_padding_gives_no_nan_even_with_gradients():
  model = _model()
  batch = {"inputs": jnp.array([[0, 0, 0, 0, 0, 0, 0, 1], [0] * 8], jnp.int32),
           "targets": jnp.array([[0, 0, 0, 0, 0, 0, 0, 2], [0] * 8], jnp.int32)}
  hidden = model(batch["inputs"])
  assert bool(jnp.isfinite(hidden).all())
  grads = nnx.jit(nnx.grad(lambda m, b: sasrec_loss(m, b)[0]))(model, batch)
  assert all(bool(jnp.isfinite(g).all()) for g in jax.tree.leaves(grads))
  # Padded queries see padded keys only; real queries never see padding.
  mask = attention_mask(jnp.array([[False, False, True, True]]))[0, 0]
  np.testing.assert_array_equal(mask, [[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]])


def test_loss_counts_only_target_positions():
  model = _model()
  model.eval()
  inputs = jnp.array([[0, 0, 0, 0, 0, 1, 2, 3]], jnp.int32)
  targets = jnp.array([[0, 0, 0, 0, 0, 2, 3, 4]], jnp.int32)
  loss, aux = sasrec_loss(model, {"inputs": inputs, "targets": targets})
  assert float(aux["num_targets"]) == 3
  logits = model.logits(model(inputs))[0, 5:]
  want = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(3), jnp.array([1, 2, 3])])
  np.testing.assert_allclose(loss, want, rtol=1e-5)


def test_max_targets_gathers_the_same_loss():
  model = _model()
  model.eval()
  batch = {"inputs": jnp.array([[0, 0, 0, 0, 0, 1, 2, 3], [0, 0, 0, 0, 0, 0, 4, 5]], jnp.int32),
           "targets": jnp.array([[0, 0, 0, 0, 0, 2, 3, 4], [0, 0, 0, 0, 0, 0, 5, 6]], jnp.int32)}
  full, aux = sasrec_loss(model, batch)
  for cap in (5, 7):
    loss, aux_cap = sasrec_loss(model, batch, max_targets=cap)
    np.testing.assert_allclose(loss, full, rtol=1e-5)
    assert float(aux_cap["num_targets"]) == 5 and float(aux_cap["dropped_targets"]) == 0
  _, aux_small = nnx.jit(sasrec_loss, static_argnames="max_targets")(model, batch, max_targets=3)
  assert float(aux_small["num_targets"]) == 3 and float(aux_small["dropped_targets"]) == 2


def test_learns_deterministic_transitions():
  num_items, length = 20, 8
  rng = np.random.default_rng(0)
  nxt = rng.permutation(num_items)                   # next row = nxt[row]

  def batch(size):
    start = rng.integers(0, num_items, size)
    rows = [start]
    for _ in range(length):
      rows.append(nxt[rows[-1]])
    seq = np.stack(rows, axis=1) + 1                   # [size, length + 1], row + 1
    cut = rng.integers(0, length - 1, size)            # some left padding
    pad = np.arange(length)[None] < cut[:, None]
    return {"inputs": jnp.asarray(np.where(pad, 0, seq[:, :-1]), jnp.int32),
            "targets": jnp.asarray(np.where(pad, 0, seq[:, 1:]), jnp.int32)}

  model = _model(num_items=num_items, max_length=length, dropout=0.0)
  # 1e-2: at 1e-3 this tiny model needs a few hundred steps, too slow for a unit test.
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, batch):
    (loss, aux), grads = nnx.value_and_grad(sasrec_loss, has_aux=True)(model, batch)
    opt.update(model, grads)
    return aux

  losses, accs = [], []
  for _ in range(50):
    aux = step(model, opt, batch(64))
    losses.append(float(aux["loss"]))
    accs.append(float(aux["accuracy"]))
  assert all(np.isfinite(losses))
  assert np.mean(losses[-5:]) < 0.5 * losses[0]
  assert np.mean(accs[-5:]) > 0.9


@pytest.mark.parametrize("field,value", [
    ("num_items", 0), ("max_length", -1), ("d_model", 1.5), ("num_layers", True),
    ("dropout", 1.0), ("activation", "swish"), ("dtype", "float16"), ("attention_impl", "x")])
def test_config_errors_name_the_field(field, value):
  with pytest.raises(ConfigError) as e:
    SASRecConfig(**{**TINY, field: value})
  assert e.value.field == field and field in str(e.value)


def test_from_dict():
  cfg = SASRecConfig.from_dict({"num_items": 5, "d_model": 32})
  assert cfg.num_items == 5 and cfg.d_model == 32 and cfg.num_layers == 2
  with pytest.raises(ConfigError) as e:
    SASRecConfig.from_dict({"num_items": 5, "hiden": 3}, where="baseline")
  assert e.value.field == "baseline.hiden" and "hiden" in str(e.value)
  with pytest.raises(ConfigError) as e:
    SASRecConfig.from_dict({"num_items": 5, "dropout": -0.1})
  assert e.value.field == "model.dropout"
  with pytest.raises(ConfigError) as e:
    SASRecConfig.from_dict({})
  assert e.value.field == "model.num_items"


def test_built_under_a_mesh_is_sharded():
  from lrm.parallel import LOGICAL_AXIS_RULES, make_mesh
  mesh = make_mesh((2, 2, 2))
  with jax.set_mesh(mesh), nnx.logical_axis_rules(LOGICAL_AXIS_RULES):
    model = _model()
    sharding = model.item_embed.embedding[...].sharding
    scores = nnx.jit(score_items)(model, jnp.ones((4, 8), jnp.int32))
  assert sharding.is_equivalent_to(
      jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec("tensor", "fsdp")), 2)
  assert scores.shape == (4, 20) and bool(jnp.isfinite(scores).all())
