"""Windows streamed from user records (data.stream): the in-memory examples, per-process shards,
exact resume, and the same training from TFDS ArrayRecord as from memory on MovieLens 100k."""

import collections
import json

import numpy as np
import pytest

from lrm.core.config import load_config
from lrm.core.errors import ConfigError
from lrm.data import read_dataset
from lrm.data.splits import leave_one_out
from lrm.data.tfds import SequenceRecords, build_tfds
from lrm.encoders.hashing import HashingEncoder
from lrm.jobs import retrieval
from lrm.jobs.sid import SIDSpec, fit_sids
from lrm.sid.trie import trie_from_table
from lrm.tasks.id_sequences import WindowStream, sequence_examples
from lrm.tokens.sid_vocab import SIDVocab

from tests.conftest import REPO


@pytest.fixture(scope="module")
def movielens(shared_data, tmp_path_factory):
  """MovieLens 100k in memory, as TFDS ArrayRecord, and 4 x 32 OPQ codes of hashed titles."""
  dataset = read_dataset(shared_data / "movielens_100k")
  out = tmp_path_factory.mktemp("tfds")
  name, _ = build_tfds(out, "layout", path=shared_data / "movielens_100k")
  emb = HashingEncoder(dim=128).encode(dataset.catalog.text())
  spec = SIDSpec(method="opq", num_codebooks=4, codebook_size=32, iters=5)
  table = fit_sids(emb, spec, item_ids=dataset.catalog.item_ids, show_progress=False).table
  return dataset, name, out, table


def rows(batches) -> list[bytes]:
  return [bytes(np.concatenate([i, t])) for b in batches
          for i, t in zip(b["inputs"], b["targets"])]


def test_one_epoch_streams_exactly_the_in_memory_windows(movielens):
  dataset = movielens[0]
  stream = WindowStream(SequenceRecords(dataset.sequences), dataset.catalog, max_length=20)
  got = rows(stream.iterator(batch_size=1, seed=3, num_epochs=1))
  ex = sequence_examples(leave_one_out(dataset.sequences).train, dataset.catalog, max_length=20)
  assert sorted(got) == sorted(rows([ex]))


def test_two_processes_stream_disjoint_users_and_a_resumed_stream_continues(movielens):
  dataset = movielens[0]
  stream = WindowStream(SequenceRecords(dataset.sequences), dataset.catalog, max_length=20)
  halves = [rows(stream.iterator(batch_size=2, seed=0, num_epochs=1, process_index=p,
                                 process_count=2)) for p in (0, 1)]
  whole = collections.Counter(rows(stream.iterator(batch_size=1, seed=0, num_epochs=1)))
  both = collections.Counter(halves[0]) + collections.Counter(halves[1])
  # No window read twice (windows of different users may coincide: counted as multisets),
  # none lost but the shards' remainders.
  assert not both - whole and both.total() >= 0.99 * whole.total()
  it = stream.iterator(batch_size=16, seed=5)
  for _ in range(7):
    next(it)
  state = it.get_state()
  want = [next(it) for _ in range(200)]     # crosses an epoch boundary (2,400 windows)
  resumed = stream.iterator(batch_size=16, seed=5)
  resumed.set_state(state)
  for w in want:
    g = next(resumed)
    np.testing.assert_array_equal(g["inputs"], w["inputs"])
    np.testing.assert_array_equal(g["targets"], w["targets"])
  with pytest.raises(ConfigError, match="train.batch_size"):
    stream.iterator(batch_size=3, seed=0, process_count=2)


def tiny_config(run_dir, tfds_name, data_dir, source):
  config = load_config(REPO / "configs" / "base.py")
  config.run_dir = str(run_dir)
  config.data.stream = True
  if source == "tfds":
    config.data.update(source="tfds", tfds=tfds_name, data_dir=str(data_dir))
  config.model.name = "rpg"
  config.model.rpg.update(max_length=30, d_model=32, num_heads=2, head_dim=16, mlp_dim=32,
                          num_layers=1, dropout=0.1, temperature=0.1)
  config.train.update(batch_size=64, num_steps=20, learning_rate=5e-3, warmup_steps=5,
                      eval_every=10, checkpoint_every=10, log_every=5, weight_decay=0.0)
  config.eval.update(valid_users=300, batch_size=256)
  return config


@pytest.mark.parametrize("model", ["rpg", "tiger"])
def test_arrayrecord_and_memory_train_to_the_same_metrics(movielens, tmp_path, model):
  dataset, name, data_dir, table = movielens
  summaries = {}
  for source in ("tfds", "memory"):
    config = tiny_config(tmp_path / source, name, data_dir, source)
    users = retrieval.user_records(config, dataset)
    assert isinstance(users, SequenceRecords) == (source == "memory")
    prep = retrieval.Prepared(
        dataset=dataset, split=leave_one_out(dataset.sequences), table=table,
        vocab=SIDVocab(table.full_codebook_sizes, num_user_tokens=100),
        trie=trie_from_table(table), sid_id="test", max_history=config.task.max_history,
        sasrec_length=config.model.sasrec.max_length, rpg_length=30, users=users)
    if model == "tiger":   # TIGER's examples are built in memory: streaming names the field
      with pytest.raises(ConfigError, match="data.stream"):
        retrieval.training_arrays(prep, "tiger")
      return
    summaries[source] = retrieval.train_model(config, tmp_path / source, prep, "rpg")
  tfds_run, memory_run = summaries["tfds"], summaries["memory"]
  assert tfds_run["streamed_users"] == memory_run["streamed_users"] == len(dataset.sequences)
  assert tfds_run["best_valid"] == memory_run["best_valid"]
  evals = lambda s: [{k: v for k, v in h.items() if k.startswith("valid/")} for h in s["history"]]
  assert evals(tfds_run) == evals(memory_run) and len(evals(tfds_run)) == 2
  losses = lambda run: [l["train/loss"] for l in map(json.loads, (
      retrieval.model_dir(tmp_path / run, "rpg") / "metrics.jsonl").read_text().splitlines())
                        if "train/loss" in l]
  assert losses("tfds") == losses("memory") and len(losses("tfds")) == 4
