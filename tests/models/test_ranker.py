"""Ranker: variants, multi-task loss masking, the staged-warmup schedule and loop."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from lrm.core.errors import ConfigError
from lrm.jobs.ranking import train_ranker, warmup_train
from lrm.models.ranker import (Ranker, RankerConfig, id_keep_probability, predict, ranker_arrays,
                               ranker_loss, task_losses)
from lrm.tasks.ranking import RankingData

SIZES = (4, 4)


def _data(n=64, items=20, seed=0):
  rng = np.random.default_rng(seed)
  hist = rng.integers(0, items, (n, 5)).astype(np.int32)
  hist[:, :2] = -1
  cand = rng.integers(0, items, n).astype(np.int32)
  click = (cand % 2).astype(np.float32)        # a learnable rule of the candidate
  return RankingData(user=np.arange(n, dtype=np.int32), history=hist, candidate=cand,
                     labels={"click": click, "watch_time": click * 0.5},
                     masks={"click": np.ones(n, np.float32), "watch_time": click.copy()},
                     cold=np.zeros(n, bool))


def _codes(items=20):
  return np.stack([np.arange(items) % 2, np.arange(items) % 4], 1)


def _cfg(variant, **kw):
  return RankerConfig(variant=variant, num_items=20, item_codebook_sizes=SIZES,
                      tasks=("click", "watch_time"), max_history=5, d=16, num_layers=1,
                      num_heads=2, mlp_dim=32, dropout=0.0, **kw)


def test_task_losses_mask_missing_labels():
  out = jnp.array([[0.0, 1.0], [0.0, 3.0], [0.0, 100.0]])
  batch = {"label/click": jnp.array([1.0, 0.0, 1.0]), "mask/click": jnp.array([1.0, 1.0, 0.0]),
           "label/watch_time": jnp.array([0.0, 1.0, 0.0]),
           "mask/watch_time": jnp.array([1.0, 1.0, 0.0])}
  losses = task_losses(out, batch, ("click", "watch_time"))
  assert float(losses["click"]) == pytest.approx(np.log(2), rel=1e-5)
  assert float(losses["watch_time"]) == pytest.approx((1.0 + 4.0) / 2)  # row 2 is masked
  none = task_losses(out, {**batch, "mask/watch_time": jnp.zeros(3)}, ("watch_time",))
  assert float(none["watch_time"]) == 0.0


def test_every_variant_scores_every_row():
  arrays = ranker_arrays(_data(), _codes(), ("click", "watch_time"))
  for variant in ("id", "replace", "concat", "gate", "late"):
    out = predict(Ranker(_cfg(variant), rngs=nnx.Rngs(0)), arrays, batch_size=64)
    assert out.shape == (64, 2) and np.isfinite(out).all()


@pytest.mark.parametrize("variant", ["id", "gate", "late"])
def test_variants_learn(variant):
  data = _data()
  model = Ranker(_cfg(variant), rngs=nnx.Rngs(0))
  arrays = ranker_arrays(data, _codes(), model.cfg.tasks)
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, batch):
    (loss, aux), grads = nnx.value_and_grad(ranker_loss, has_aux=True)(model, batch)
    opt.update(model, grads)
    return loss, aux

  first, aux = step(model, opt, batch)
  assert set(aux) == {"loss", "loss/click", "loss/watch_time"}
  for _ in range(30):
    last, _ = step(model, opt, batch)
  assert float(last) < 0.7 * float(first)


def test_late_variant_ignores_the_candidate_id():
  data = _data()
  model = Ranker(_cfg("late"), rngs=nnx.Rngs(0))
  arrays = ranker_arrays(data, _codes(), model.cfg.tasks)
  other = dict(arrays, cand_id=(arrays["cand_id"] + 1) % 20)
  np.testing.assert_allclose(predict(model, arrays), predict(model, other))
  with_id = Ranker(_cfg("late", candidate_id=True), rngs=nnx.Rngs(0))
  assert not np.allclose(predict(with_id, arrays, id_keep=1.0),
                         predict(with_id, other, id_keep=1.0))
  np.testing.assert_allclose(predict(with_id, arrays, id_keep=0.0),
                             predict(with_id, other, id_keep=0.0), rtol=1e-5, atol=1e-6)


def test_id_keep_schedule():
  p = lambda s: id_keep_probability(s, hold_steps=10, decay_steps=20)
  assert [p(0), p(10), p(20), p(30), p(50)] == [1.0, 1.0, 0.5, 0.0, 0.0]
  assert float(p(jnp.int32(25))) == pytest.approx(0.25)
  with pytest.raises(ConfigError, match="warmup"):
    id_keep_probability(0, hold_steps=0, decay_steps=0)


def test_warmup_retires_the_id_and_records_curves():
  data = _data()
  model = Ranker(_cfg("late", candidate_id=True), rngs=nnx.Rngs(0))
  arrays = ranker_arrays(data, _codes(), model.cfg.tasks)
  records = warmup_train(model, arrays, num_steps=12, hold_steps=4, decay_steps=4,
                         batch_size=16, learning_rate=1e-2, seed=0, eval_every=4,
                         evaluate_fn=lambda m: {"mean": float(predict(m, arrays, id_keep=0.0)
                                                               .mean())})
  assert [r["step"] for r in records] == [4, 8, 12]
  assert [r["keep_prob"] for r in records] == [1.0, 0.0, 0.0]
  assert all(np.isfinite(r["loss"]) and "mean" in r for r in records)
  with pytest.raises(ConfigError, match="candidate_id"):
    warmup_train(Ranker(_cfg("late"), rngs=nnx.Rngs(0)), arrays, num_steps=1, hold_steps=0,
                 decay_steps=1, batch_size=8, learning_rate=1e-3, seed=0)


def test_config_errors():
  with pytest.raises(ConfigError, match="variant"):
    _cfg("other")
  with pytest.raises(ConfigError, match="candidate_id"):
    _cfg("gate", candidate_id=True)
  with pytest.raises(ConfigError, match="tasks"):
    RankerConfig(variant="id", num_items=3, tasks=("clicks",))


def test_candidate_families_share_or_own_tables():
  families = (("room", SIZES), ("slice", SIZES))
  shared = Ranker(_cfg("late", candidate_families=families), rngs=nnx.Rngs(0))
  own = Ranker(_cfg("late", candidate_families=families, shared_tables=False),
               rngs=nnx.Rngs(0))
  assert shared.candidate_sid is None and own.candidate_sid is not None
  data = _data()
  slices = np.stack([_codes()] * 3, axis=1)          # [items, slices, c]
  data = RankingData(**{**{f: getattr(data, f) for f in ("user", "history", "candidate",
                                                          "labels", "masks", "cold")},
                        "slice": np.zeros(len(data), np.int32)})
  arrays = ranker_arrays(data, _codes(), shared.cfg.tasks,
                         candidate_codes={"room": _codes(), "slice": slices})
  assert predict(shared, arrays).shape == predict(own, arrays).shape == (64, 2)
  with pytest.raises(ConfigError, match="cand_sid/slice"):
    predict(shared, {k: v for k, v in arrays.items() if k != "cand_sid/slice"})


# ------------------------------------------------------------------------------------------
# User-feature and interaction-count tokens


def _user_side_data(n=64, seed=0):
  data = _data(n, seed=seed)
  rng = np.random.default_rng(seed + 1)
  feats = np.stack([rng.integers(0, 3, n), rng.integers(0, 5, n)], 1).astype(np.int32)
  counts = rng.integers(0, 40, (n, len(SIZES) + 1)).astype(np.int32)
  click = (feats[:, 0] == 1).astype(np.float32)         # a rule of the user's attribute
  return RankingData(user=data.user, history=data.history, candidate=data.candidate,
                     labels={"click": click, "watch_time": click * 0.5},
                     masks={"click": np.ones(n, np.float32), "watch_time": click.copy()},
                     cold=data.cold, user_features=feats, counts=counts)


def _side_cfg(variant, **kw):
  return _cfg(variant, user_feature_sizes=(3, 5), interaction_counts=True, count_buckets=4, **kw)


def test_user_side_tokens_are_off_by_default_and_leave_the_init_unchanged():
  plain = nnx.state(Ranker(_cfg("late"), rngs=nnx.Rngs(0)), nnx.Param)
  side = nnx.state(Ranker(_side_cfg("late"), rngs=nnx.Rngs(0)), nnx.Param)
  plain_leaves = dict(nnx.to_flat_state(plain))
  side_leaves = dict(nnx.to_flat_state(side))
  assert set(plain_leaves) < set(side_leaves)
  for path, value in plain_leaves.items():
    np.testing.assert_array_equal(value[...], side_leaves[path][...])
  arrays = ranker_arrays(_data(), _codes(), ("click",))
  assert "user_feat" not in arrays and "count_bucket" not in arrays


def test_ranker_arrays_emit_user_features_and_count_buckets():
  data = _user_side_data()
  arrays = ranker_arrays(data, _codes(), ("click",))
  np.testing.assert_array_equal(arrays["user_feat"], data.user_features)
  assert arrays["count_bucket"].shape == (64, 3)
  assert arrays["count_bucket"].max() == 6 and (arrays["count_bucket"][data.counts == 0] == 0).all()


def test_user_feature_tokens_learn():
  model = Ranker(_side_cfg("late"), rngs=nnx.Rngs(0))
  arrays = ranker_arrays(_user_side_data(), _codes(), model.cfg.tasks)
  batch = {k: jnp.asarray(v) for k, v in arrays.items()}
  opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  @nnx.jit
  def step(model, opt, batch):
    (loss, aux), grads = nnx.value_and_grad(ranker_loss, has_aux=True)(model, batch)
    opt.update(model, grads)
    return aux["loss/click"]

  first = step(model, opt, batch)
  for _ in range(30):
    last = step(model, opt, batch)
  assert float(last) < 0.3 * float(first)


def test_id_variant_sees_only_the_same_item_count():
  data = _user_side_data()
  arrays = ranker_arrays(data, _codes(), ("click", "watch_time"))
  sid_cols = dict(arrays, count_bucket=arrays["count_bucket"].copy())
  sid_cols["count_bucket"][:, :-1] = (sid_cols["count_bucket"][:, :-1] + 2) % 4
  item_col = dict(arrays, count_bucket=arrays["count_bucket"].copy())
  item_col["count_bucket"][:, -1] = (item_col["count_bucket"][:, -1] + 2) % 4
  id_model = Ranker(_side_cfg("id"), rngs=nnx.Rngs(0))
  assert id_model.cfg.count_columns == 1
  np.testing.assert_allclose(predict(id_model, arrays), predict(id_model, sid_cols))
  assert not np.allclose(predict(id_model, arrays), predict(id_model, item_col))
  late = Ranker(_side_cfg("late"), rngs=nnx.Rngs(0))
  assert late.cfg.count_columns == 3
  assert not np.allclose(predict(late, arrays), predict(late, sid_cols))
  other_user = dict(arrays, user_feat=(arrays["user_feat"] + 1) % 3)
  assert not np.allclose(predict(late, arrays), predict(late, other_user))


def test_user_side_config_and_batch_errors():
  with pytest.raises(ConfigError, match="user_feature_sizes"):
    _cfg("id", user_feature_sizes=(3, 0))
  with pytest.raises(ConfigError, match="count_buckets"):
    _cfg("late", interaction_counts=True, count_buckets=1)
  arrays = ranker_arrays(_user_side_data(), _codes(), ("click",))
  model = Ranker(_side_cfg("late"), rngs=nnx.Rngs(0))
  with pytest.raises(ConfigError, match="user_feat"):
    predict(model, {k: v for k, v in arrays.items() if k != "user_feat"})
  with pytest.raises(ConfigError, match="count_bucket"):
    predict(model, {k: v for k, v in arrays.items() if k != "count_bucket"})
  with pytest.raises(ConfigError, match="count_bucket"):
    predict(model, dict(arrays, count_bucket=arrays["count_bucket"][:, :2]))
  with pytest.raises(ConfigError, match="user_feat"):
    predict(model, dict(arrays, user_feat=arrays["user_feat"][:, :1]))


def test_late_tokens_one_per_family_or_per_level():
  fams = (("room", SIZES), ("slice", SIZES))
  family = Ranker(_cfg("late", candidate_families=fams), rngs=nnx.Rngs(0))
  level = Ranker(_cfg("late", candidate_families=fams, late_tokens="level"), rngs=nnx.Rngs(0))
  assert family.token_type.embedding.shape[0] == 2
  assert level.token_type.embedding.shape[0] == 4
  data = _data()
  data = RankingData(user=data.user, history=data.history, candidate=data.candidate % 3,
                     labels=data.labels, masks=data.masks, cold=data.cold,
                     slice=np.zeros(len(data), np.int32) + 1)
  cand = {"room": _codes()[:3], "slice": np.stack([_codes()[:2]] * 3)}   # slice: [3, 2, c]
  arrays = ranker_arrays(data, _codes(), ("click", "watch_time"), candidate_codes=cand)
  for model in (family, level):
    out = predict(model, arrays, batch_size=64)
    assert out.shape == (64, 2) and np.isfinite(out).all()


def test_unseen_sid_prefixes_stay_zero_after_training():
  model = Ranker(_cfg("replace"), rngs=nnx.Rngs(0))
  for table in model.item_sid.tables[0]:
    assert not np.asarray(table.embedding[...]).any()
  codes = _codes()
  codes[-1] = (0, 3)          # item 19's level-2 prefix (0, 3) is ...
  data = _data()
  keep = (data.candidate != 19) & (data.history != 19).all(1)    # ... never seen in training
  arrays = ranker_arrays(data.take(np.flatnonzero(keep)), codes, ("click", "watch_time"))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
  model.train()

  @nnx.jit
  def step(model, optimizer, batch):
    (_, _), grads = nnx.value_and_grad(ranker_loss, has_aux=True)(model, batch)
    optimizer.update(model, grads)

  step(model, optimizer, arrays)
  level2 = np.asarray(model.item_sid.tables[0][1].embedding[...])
  rows = np.r_[arrays["cand_id"], arrays["hist_id"][arrays["hist_id"] >= 0]]
  seen = {tuple(c) for c in codes[rows].tolist()}
  assert (0, 3) not in seen
  assert np.abs(level2).sum() > 0            # seen prefixes moved
  row = 0 * SIZES[1] + 3                     # exact mixed-radix key of (0, 3)
  assert not level2[row].any()


def test_level_dropout_rates_per_level_in_training_only():
  from lrm.models.ranker import LevelDropout
  drop = LevelDropout((0.0, 0.5), rngs=nnx.Rngs(0))
  tokens = jnp.ones((4000, 4, 3))
  levels = np.array([0, 1, 0, 1])            # two families of two levels
  out = np.asarray(drop(tokens, levels))
  zeroed = (out == 0).all(-1).mean(0)
  assert zeroed[0] == 0 and zeroed[2] == 0
  assert 0.45 < zeroed[1] < 0.55 and 0.45 < zeroed[3] < 0.55
  assert set(np.unique(out)) <= {0.0, 1.0}   # no rescaling: a dropped level reads as unseen
  drop.deterministic = True
  assert np.array_equal(np.asarray(drop(tokens, levels)), np.asarray(tokens))


def test_level_dropout_history_rates_apply_to_history_tokens_only():
  from lrm.models.ranker import LevelDropout
  drop = LevelDropout((0.0, 0.9), (0.0, 0.0), rngs=nnx.Rngs(0))
  tokens = jnp.ones((2000, 2, 3))
  levels = np.array([0, 1])
  assert np.array_equal(np.asarray(drop(tokens, levels, history=True)), np.asarray(tokens))
  zeroed = (np.asarray(drop(tokens, levels)) == 0).all(-1).mean(0)
  assert zeroed[0] == 0 and 0.85 < zeroed[1] < 0.95
  same = LevelDropout((0.0, 0.9), rngs=nnx.Rngs(0))      # no history rates: the candidate's
  assert 0.85 < (np.asarray(same(tokens, levels, history=True)) == 0).all(-1).mean(0)[1] < 0.95


@pytest.mark.parametrize("variant", ["replace", "late"])
def test_ranker_reads_history_rates_for_history_items(variant, monkeypatch):
  from lrm.models import ranker as ranker_module
  calls = []
  original = ranker_module.LevelDropout.__call__

  def spy(self, tokens, levels, *, history=False):
    calls.append((history, self.history_rates if history else self.rates))
    return original(self, tokens, levels, history=history)

  monkeypatch.setattr(ranker_module.LevelDropout, "__call__", spy)
  model = Ranker(_cfg(variant, sid_level_dropout=(0.0, 0.5), history_level_dropout=(0.1, 0.0)),
                 rngs=nnx.Rngs(0))
  arrays = ranker_arrays(_data(), _codes(), model.cfg.tasks)
  model(jax.tree.map(jnp.asarray, arrays))
  assert sorted(calls) == [(False, (0.0, 0.5)), (True, (0.1, 0.0))]


@pytest.mark.parametrize("kw, field", [({"late_tokens": "both"}, "late_tokens"),
                                       ({"sid_level_dropout": (0.0, 1.0)}, "sid_level_dropout"),
                                       ({"history_level_dropout": (-0.1,)},
                                        "history_level_dropout")])
def test_late_token_and_level_dropout_config_errors(kw, field):
  with pytest.raises(ConfigError, match=field):
    _cfg("late", **kw)
  with pytest.raises(ConfigError, match="sid_level_dropout"):
    _cfg("id", sid_level_dropout=(0.1,))
  with pytest.raises(ConfigError, match="history_level_dropout"):
    _cfg("id", history_level_dropout=(0.1,))


# ------------------------------------------------------------------------------------------
# The long-term user token (compression transformer over the long history)

_ENC = dict(d_model=16, num_heads=2, head_dim=8, mlp_dim=32, num_layers=1, dropout=0.0,
            fold=8, summaries=4, num_globals=2)


def _long_data(n=64, T=16, seed=0):
  data = _data(n, seed=seed)
  rng = np.random.default_rng(seed + 1)
  long = rng.integers(0, 20, (n, T)).astype(np.int32)
  long[:, :rng.integers(0, T)] = -1
  return RankingData(user=data.user, history=data.history, candidate=data.candidate,
                     labels=data.labels, masks=data.masks, cold=data.cold, long_history=long)


def _long_model(variant, mixer="compress", seed=0, **kw):
  cfg = _cfg(variant, long_encoder={**_ENC, "mixer": mixer}, **kw)
  return Ranker(cfg, rngs=nnx.Rngs(seed), item_codes=_codes())


@pytest.mark.parametrize("variant", ["id", "late"])
def test_long_encoder_runs_and_trains(variant):
  arrays = ranker_arrays(_long_data(), _codes(), ("click", "watch_time"))
  assert arrays["long_hist"].shape == (64, 16)
  model = _long_model(variant)
  before = nnx.state(model.long_encoder, nnx.Param)
  before = [np.asarray(x) for x in jax.tree_util.tree_leaves(before)]
  out = predict(model, arrays, batch_size=64)
  assert out.shape == (64, 2) and np.isfinite(out).all()
  if variant == "id":
    return   # training is the same code path; one variant keeps the test fast
  model.train()
  train_ranker(model, arrays, num_steps=2, batch_size=16, learning_rate=1e-2, seed=0)
  after = jax.tree_util.tree_leaves(nnx.state(model.long_encoder, nnx.Param))
  assert any(not np.allclose(a, np.asarray(b)) for a, b in zip(before, after))  # it trains


def _batch(arrays, rows):
  return {k: jnp.asarray(v[rows]) for k, v in arrays.items() if not k.startswith(("label/",
                                                                                "mask/"))}


@pytest.mark.parametrize("variant", ["id", "late"])
def test_long_token_depends_on_the_candidate_and_the_history(variant):
  model = _long_model(variant)
  _randomise(model)   # SID tables start at zero: give every item its own vector
  model.eval()
  arrays = ranker_arrays(_long_data(), _codes(), ("click",))
  batch = _batch(arrays, np.arange(8))
  token = nnx.jit(lambda m, b: m.long_token(b))
  base = np.asarray(token(model, batch))
  moved = (np.asarray(batch["cand_id"]) + 1) % 20
  other = dict(batch, cand_id=jnp.asarray(moved), **{"cand_sid/item": jnp.asarray(_codes()[moved])})
  assert not np.allclose(base, np.asarray(token(model, other)), atol=1e-5)
  shuffled = dict(batch, long_hist=jnp.where(batch["long_hist"] >= 0,
                                             (batch["long_hist"] + 3) % 20, -1))
  assert not np.allclose(base, np.asarray(token(model, shuffled)), atol=1e-5)


def _randomise(model, seed=0):
  rng = np.random.default_rng(seed)
  for path, var in nnx.iter_graph(model):
    if isinstance(var, nnx.Param):
      var[...] = jnp.asarray(rng.normal(0, 0.5, var[...].shape), jnp.float32)


def test_compress_and_full_mixers_share_parameters():
  compress, full = _long_model("late", "compress"), _long_model("late", "full")
  sc, sf = nnx.state(compress, nnx.Param), nnx.state(full, nnx.Param)
  assert jax.tree_util.tree_structure(sc) == jax.tree_util.tree_structure(sf)
  assert all(a.shape == b.shape for a, b in zip(jax.tree_util.tree_leaves(sc),
                                                jax.tree_util.tree_leaves(sf)))
  _randomise(compress)
  nnx.update(full, nnx.state(compress, nnx.Param))
  arrays = ranker_arrays(_long_data(), _codes(), ("click", "watch_time"))
  a, b = predict(compress, arrays, batch_size=64), predict(full, arrays, batch_size=64)
  assert np.isfinite(b).all() and not np.allclose(a, b)   # same weights, another mixer


def test_long_encoder_off_by_default_and_config_errors():
  plain = Ranker(_cfg("late"), rngs=nnx.Rngs(0))
  assert plain.cfg.long_encoder is None and plain.long_encoder is None
  # The token's parameters come last: the shared ones initialise exactly as without it.
  w = dict(nnx.state(_long_model("late"), nnx.Param).flat_state())
  for path, value in nnx.state(plain, nnx.Param).flat_state():
    assert np.array_equal(np.asarray(value[...]), np.asarray(w[path][...]))
  with pytest.raises(ConfigError, match="long_encoder.d_model"):
    _cfg("id", long_encoder={**_ENC, "d_model": 32})
  with pytest.raises(ConfigError, match="long_encoder.bogus"):
    _cfg("id", long_encoder={**_ENC, "bogus": 1})
  with pytest.raises(ConfigError, match="long_encoder.summaries"):
    _cfg("id", long_encoder={**_ENC, "summaries": 3})
  with pytest.raises(ConfigError, match="long_encoder"):
    _cfg("late", long_encoder=_ENC, shared_tables=False)
  with pytest.raises(ConfigError, match="item_codes"):
    Ranker(_cfg("replace", long_encoder=_ENC), rngs=nnx.Rngs(0))
  arrays = ranker_arrays(_data(), _codes(), ("click",))     # no long history in the data
  with pytest.raises(ConfigError, match="long_hist"):
    _long_model("id")(_batch(arrays, np.arange(4)))
