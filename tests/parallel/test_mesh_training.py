"""The same training steps give the same losses under every mesh (8 CPU devices)."""

import jax
import numpy as np
import optax
import pytest
from flax import nnx

from lrm.models.decoder_only import DecoderOnly, DecoderOnlyConfig, decoder_only_loss
from lrm.models.sasrec import SASRec, SASRecConfig, sasrec_loss
from lrm.models.tiger import Seq2Seq, Seq2SeqConfig, seq2seq_loss
from lrm.parallel.mesh import batch_sharding, make_mesh
from lrm.parallel.rules import sharding_context
from lrm.tokens.sid_vocab import SIDVocab
from lrm.train.trainer import make_train_step, state_shardings

HYPER = dict(d_model=32, num_heads=4, head_dim=8, mlp_dim=64, encoder_layers=1,
             decoder_layers=1, dropout=0.1)


def batches(vocab, n=3, b=16, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    codes = rng.integers(0, vocab.codebook_sizes, size=(b, 5, 3))
    hist = vocab.encode_codes(codes).reshape(b, 15)
    tokens = np.concatenate([vocab.user_tokens(rng.integers(0, 99, b))[:, None], hist], 1)
    tokens[: b // 2, 1:4] = 0
    out.append({"encoder_tokens": tokens.astype(np.int32), "encoder_mask": tokens != 0,
                "targets": vocab.encode_codes(rng.integers(0, vocab.codebook_sizes,
                                                           size=(b, 3)))})
  return out


def sasrec_batches(n=3, b=16, length=8, num_items=60, seed=0):
  rng = np.random.default_rng(seed)
  out = []
  for _ in range(n):
    rows = rng.integers(1, num_items + 1, size=(b, length + 1)).astype(np.int32)
    rows[: b // 2, :3] = 0   # left padding
    targets = np.where(rows[:, :-1] > 0, rows[:, 1:], 0)
    out.append({"inputs": rows[:, :-1], "targets": targets})
  return out


def build(kind, vocab):
  if kind == "sasrec":
    cfg = SASRecConfig(num_items=60, max_length=8, d_model=32, num_heads=4, head_dim=8,
                       mlp_dim=64, num_layers=1, dropout=0.1)
    return SASRec(cfg, rngs=nnx.Rngs(params=0, dropout=1)), sasrec_loss
  if kind == "tiger":
    cfg = Seq2SeqConfig.from_vocab(vocab, max_history=5, hyper=HYPER)
    return Seq2Seq(cfg, rngs=nnx.Rngs(params=0, dropout=1)), seq2seq_loss
  hyper = {k: v for k, v in HYPER.items() if not k.endswith("coder_layers")}
  cfg = DecoderOnlyConfig.from_vocab(vocab, max_history=5, hyper={**hyper, "num_layers": 2})
  return DecoderOnly(cfg, rngs=nnx.Rngs(params=0, dropout=1)), decoder_only_loss


def losses_under(shape, kind):
  vocab = SIDVocab((16, 16, 8), num_user_tokens=100)
  mesh = make_mesh(shape) if shape else None
  with sharding_context(mesh):
    model, loss_fn = build(kind, vocab)
    optimizer = nnx.Optimizer(model, optax.adamw(1e-2), wrt=nnx.Param)
  graphdef, state = nnx.split((model, optimizer))
  shardings = state_shardings(state, mesh) if mesh else None
  if mesh:
    state = jax.device_put(state, shardings)
  step = make_train_step(graphdef, loss_fn, seed=0, shardings=shardings)
  out = []
  data = sasrec_batches() if kind == "sasrec" else batches(vocab)
  for i, batch in enumerate(data):
    if mesh:
      batch = {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in batch.items()}
    state, aux = step(state, batch, np.int32(i))
    out.append(float(aux["loss"]))
  return out


@pytest.mark.parametrize("kind", ["tiger", "decoder", "sasrec"])
@pytest.mark.parametrize("shape", [(8, 1, 1), (2, 2, 2), (1, 4, 2)])
def test_same_losses_under_every_mesh(shape, kind):
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices (XLA_FLAGS=--xla_force_host_platform_device_count=8)")
  np.testing.assert_allclose(losses_under(shape, kind), losses_under(None, kind), rtol=2e-5)


def test_resume_under_another_mesh_continues_the_same_run(tmp_path):
  """A checkpoint saved under (8,1,1) restores under (1,4,2) (Orbax reshards on restore)
  and training goes on with the same batches and losses as the run that saved it."""
  import shutil

  from lrm.train.metric_writers import read_metrics
  from tests.train import training_job
  if len(jax.devices()) < 8:
    pytest.skip("needs 8 devices")
  args = [f"--workdir={tmp_path}", "--steps=16", "--eval_every=8", "--checkpoint_every=8"]
  assert training_job.main([*args, "--mesh=8,1,1"]) == 0
  first = {r["step"]: r for r in read_metrics(tmp_path) if "train/loss" in r}
  shutil.rmtree(tmp_path / "checkpoints" / "16")    # as if stopped after step 8
  assert training_job.main([*args, "--mesh=1,4,2"]) == 0
  records = [r for r in read_metrics(tmp_path) if "train/loss" in r]
  resumed = {r["step"]: r for r in records[16:]}
  assert sorted(resumed) == list(range(9, 17))
  for s in resumed:
    assert resumed[s]["train/batch_fingerprint"] == first[s]["train/batch_fingerprint"]
  np.testing.assert_allclose([resumed[s]["train/loss"] for s in resumed],
                             [first[s]["train/loss"] for s in resumed], rtol=2e-5)
