"""A small real training job for the tests that run training in other processes.

    python tests/train/training_job.py --workdir=W [--steps=30] [--mesh=2,1,1] [--step_delay=0.05]

Trains a tiny TIGER seq2seq on fixed random SID sequences with `lrm.train.trainer.train`
(checkpoints, resume, validation), logging every step. Each step's loss and a fingerprint of
its batch land in W/metrics.jsonl (process 0); each process also writes
W/process_<i>.json with its own view of the result (validation history, a checksum of the
final weights), so a multi-process run can be checked for agreement. Joins a multi-process
job from the LRM_* variables that launch/local.py sets.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")


def parse(argv):
  p = argparse.ArgumentParser()
  p.add_argument("--workdir", required=True)
  p.add_argument("--steps", type=int, default=30)
  p.add_argument("--checkpoint_every", type=int, default=5)
  p.add_argument("--eval_every", type=int, default=10)
  p.add_argument("--batch_size", type=int, default=16)
  p.add_argument("--mesh", default="-1,1,1", help="data,fsdp,tensor sizes")
  p.add_argument("--step_delay", type=float, default=0.0,
                 help="seconds each step sleeps (so a test can kill it mid-run)")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = parse(sys.argv[1:] if argv is None else argv)
  from lrm.parallel import distributed
  distributed.initialize(distributed.process_spec())

  import jax
  import jax.numpy as jnp
  import ml_collections
  import numpy as np
  from flax import nnx

  from lrm.core.errors import PREEMPTED_EXIT_STATUS, Preempted
  from lrm.models.tiger import Seq2Seq, Seq2SeqConfig, seq2seq_loss
  from lrm.parallel.mesh import make_mesh
  from lrm.parallel.rules import sharding_context
  from lrm.tokens.sid_vocab import SIDVocab
  from lrm.train import trainer

  vocab = SIDVocab((16, 16, 8), num_user_tokens=100)
  rng = np.random.default_rng(0)
  n, hist = 512, 5
  codes = rng.integers(0, vocab.codebook_sizes, size=(n, hist + 1, 3))
  tokens = np.concatenate([vocab.user_tokens(rng.integers(0, 99, n))[:, None],
                           vocab.encode_codes(codes[:, :hist]).reshape(n, hist * 3)], 1)
  arrays = {"encoder_tokens": tokens.astype(np.int32), "encoder_mask": tokens != 0,
            "targets": vocab.encode_codes(codes[:, hist]).astype(np.int32),
            "row": np.arange(n, dtype=np.int32)}
  valid = {k: v[:64] for k, v in arrays.items()}

  def loss_fn(model, batch):
    loss, aux = seq2seq_loss(model, batch)
    aux = dict(aux)
    # Which rows the step saw: equal fingerprints mean equal batches.
    aux["batch_fingerprint"] = jnp.sum(batch["row"].astype(jnp.float32) ** 2)
    if args.step_delay:
      jax.debug.callback(lambda: time.sleep(args.step_delay))
    return loss, aux

  valid_loss = jax.jit(lambda g, s, b: seq2seq_loss(nnx.merge(g, s), b)[0])

  def evaluate_fn(model):
    graphdef, state = nnx.split(model)
    return {"valid/loss": float(valid_loss(graphdef, state, valid))}

  mesh = make_mesh(tuple(int(s) for s in args.mesh.split(",")))
  hyper = dict(d_model=32, num_heads=4, head_dim=8, mlp_dim=64, encoder_layers=1,
               decoder_layers=1, dropout=0.1)
  with sharding_context(mesh):
    model = Seq2Seq(Seq2SeqConfig.from_vocab(vocab, max_history=hist, hyper=hyper),
                    rngs=nnx.Rngs(params=0, dropout=1))
  config = ml_collections.ConfigDict(dict(
      batch_size=args.batch_size, num_steps=args.steps, learning_rate=3e-3, warmup_steps=5,
      decay="cosine", end_fraction=0.1, weight_decay=0.01, b1=0.9, b2=0.98, clip_norm=1.0,
      eval_every=args.eval_every, log_every=1, checkpoint_every=args.checkpoint_every,
      patience=0, best_metric="valid/loss", best_mode="min", keep_last=2, seed=0))
  workdir = pathlib.Path(args.workdir)
  try:
    result = trainer.train(model, loss_fn, arrays, config=config, workdir=workdir,
                           evaluate_fn=evaluate_fn, mesh=mesh, progress=False)
  except Preempted as e:
    print(e, file=sys.stderr)
    return PREEMPTED_EXIT_STATUS
  params = nnx.state(model, nnx.Param)
  checksum = float(sum(jnp.sum(jnp.abs(x)) for x in jax.tree_util.tree_leaves(
      trainer._host_copy(params))))
  (workdir / f"process_{jax.process_index()}.json").write_text(json.dumps({
      "process": jax.process_index(), "processes": jax.process_count(),
      "devices": jax.device_count(), "step": result.step, "history": result.history,
      "weights_checksum": checksum}))
  return 0


if __name__ == "__main__":
  sys.exit(main())
