"""RPG through the retrieval stage on MovieLens 100k: a tiny model beats popularity, both
decoders return real distinct items, and a resumed training repeats the uninterrupted losses."""

import json

import numpy as np
import pytest
from flax import nnx

from lrm.core.config import load_config
from lrm.data import read_dataset
from lrm.data.splits import leave_one_out
from lrm.encoders.hashing import HashingEncoder
from lrm.jobs import retrieval
from lrm.jobs.sid import SIDSpec, fit_sids
from lrm.sid.trie import trie_from_table
from lrm.tokens.sid_vocab import SIDVocab
from lrm.train import trainer

from tests.conftest import REPO


def tiny_config(run_dir, **train):
  config = load_config(REPO / "configs" / "base.py")
  config.run_dir = str(run_dir)
  config.model.name = "rpg"
  config.model.rpg.update(max_length=50, d_model=64, num_heads=2, head_dim=32, mlp_dim=64,
                          num_layers=1, dropout=0.1, temperature=0.1)
  config.train.update({**dict(batch_size=128, num_steps=600, learning_rate=5e-3,
                             warmup_steps=30, eval_every=300, checkpoint_every=300,
                             log_every=50, weight_decay=0.0), **train})
  config.eval.update(valid_users=0, batch_size=256, beam_size=20)
  return config


@pytest.fixture(scope="module")
def movielens(shared_data):
  """MovieLens 100k with 8 x 32 OPQ codes of hashed titles, fitted on the training items."""
  dataset = read_dataset(shared_data / "movielens_100k")
  emb = HashingEncoder(dim=256).encode(dataset.catalog.text())
  split = leave_one_out(dataset.sequences)
  spec = SIDSpec(method="opq", num_codebooks=8, codebook_size=32, iters=10)
  table = fit_sids(emb, spec, item_ids=dataset.catalog.item_ids, show_progress=False,
                   fit_rows=dataset.catalog.rows(np.unique(split.train.items))).table
  return dataset, split, table


def prepared(config, dataset, split, table):
  return retrieval.Prepared(
      dataset=dataset, split=split, table=table,
      vocab=SIDVocab(table.full_codebook_sizes, num_user_tokens=2000),
      trie=trie_from_table(table), sid_id="test", max_history=config.task.max_history,
      sasrec_length=config.model.sasrec.max_length, rpg_length=config.model.rpg.max_length)


def test_tiny_rpg_beats_popularity_with_every_decoder(movielens, tmp_path):
  """600 steps (~20 epochs of the 943 users' windows): measured recall@10 0.072 against
  popularity's 0.038 on all validation users."""
  dataset, split, table = movielens
  config = tiny_config(tmp_path)
  prep = prepared(config, dataset, split, table)
  summary = retrieval.train_model(config, tmp_path, prep, "rpg")
  ours = summary["best_valid"]["valid/recall@10"]
  pop = retrieval.popularity(prep, (10,))["valid"]["recall@10"]
  assert ours > 1.25 * pop, (ours, pop)
  assert summary["history"][-1]["train_s"] > 0
  record = retrieval.evaluate_model(config, tmp_path, prep, "rpg")
  assert record["valid"]["recall@10"] == pytest.approx(ours)      # exact, every user
  assert record["test"]["decoder"] == "exact"
  assert set(record["test"]["history_excluded"]) == set(record["test"]) & {
      f"{m}@{k}" for m in ("recall", "ndcg") for k in (5, 10, 20)}
  rows = [json.loads(l) for l in
          (retrieval.model_dir(tmp_path, "rpg") / "predictions_test.jsonl").read_text().splitlines()]
  assert len(rows) == len(split.test.targets)
  # The catalog-independent decoders rank the same users into real, distinct items.
  model = retrieval.load_trained(config, tmp_path, prep, "rpg")
  inputs, targets = retrieval.eval_inputs(prep, "rpg", "test")
  for decoder in ("graph", "beam"):
    ranked, _ = retrieval.rank(model, "rpg", prep, inputs, k=10, beam_size=20,
                               batch_size=256, decoder=decoder)
    assert np.isin(ranked, dataset.catalog.item_ids).all()
    assert all(len(set(r)) == 10 for r in ranked)


def test_resumed_training_repeats_the_uninterrupted_losses(movielens, tmp_path):
  dataset, split, table = movielens
  config = tiny_config(tmp_path, num_steps=30, eval_every=10, checkpoint_every=10, log_every=5,
                       warmup_steps=5)
  config.eval.valid_users = 100
  prep = prepared(config, dataset, split, table)
  arrays = retrieval.training_arrays(prep, "rpg")
  evaluate = retrieval.make_evaluate_fn(config, prep, "rpg")

  def run(workdir, evaluate_fn):
    model, loss_fn = retrieval.build_model(config, prep, "rpg",
                                           rngs=nnx.Rngs(params=0, dropout=1))
    return trainer.train(model, loss_fn, arrays, config=config.train, workdir=workdir,
                         evaluate_fn=evaluate_fn, progress=False)

  run(tmp_path / "a", evaluate)
  calls = []

  def crash_at_second_eval(model):
    calls.append(1)
    if len(calls) == 2:
      raise KeyboardInterrupt
    return evaluate(model)

  with pytest.raises(KeyboardInterrupt):
    run(tmp_path / "b", crash_at_second_eval)
  assert run(tmp_path / "b", evaluate).step == 30
  read = lambda d: [l["train/loss"] for l in map(json.loads,
                                                  (d / "metrics.jsonl").read_text().splitlines())
                    if "train/loss" in l and l["step"] > 20]
  np.testing.assert_allclose(read(tmp_path / "b"), read(tmp_path / "a"), rtol=1e-5)
