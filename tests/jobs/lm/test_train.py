"""The LM stage end to end on a small synthetic world: train, evaluate, after-item table,
resume, continued pretraining on a grown catalog."""

import json

import numpy as np
import pytest

from lrm.data.synthetic import WorldConfig, make_world, snapshots
from lrm.encoders.hashing import HashingEncoder
from lrm.jobs.lm.after_item import AfterItemTable
from lrm.jobs.lm.config import validate
from lrm.jobs.lm.continued import continue_pretraining
from lrm.jobs.lm.prepare import prepare
from lrm.jobs.lm.train import lm_stage, load_trained, restore
from lrm.jobs.sid import SIDSpec, fit_sids, load_tokenizer, write_sids
from lrm.sid.table import SIDTable
from lrm.tasks.lm_tasks import next_prompts
from lrm.tokens.joint_vocab import JointVocab

SEED = 0   # tiny_config's seed (conftest.py)


def embed(catalog):
  return HashingEncoder(dim=128).encode(catalog.text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory, lm_config):
  """A stage trained on the world's first snapshot (its SIDs from hashed titles)."""
  world = make_world(WorldConfig(num_items=240, num_users=500, branching=(4, 3),
                                 mean_length=12, modalities=(), initial_item_fraction=0.6))
  times = np.quantile(world.dataset.sequences.timestamps, [0.7, 1.0]) + [0.0, 1.0]
  old, new = snapshots(world, times)
  run_dir = tmp_path_factory.mktemp("lm_run")
  result = fit_sids(embed(old.catalog), SIDSpec(levels=2, codebook_size=8, iters=10),
                    item_ids=old.catalog.item_ids, show_progress=False)
  write_sids(run_dir / "sid", result, SIDSpec(levels=2, codebook_size=8, iters=10))
  config = lm_config(run_dir)
  out = lm_stage(config, run_dir, old)
  return config, run_dir, old, new, out


def test_stage_trains_beats_popularity_and_links_text(trained):
  config, run_dir, old, _, out = trained
  record = out["evaluated"]
  # 128 users per split: pooled over both splits, NDCG@10 well above popularity's (measured
  # at 300 steps: 0.192 vs 0.128).
  ours = np.mean([record[s]["ndcg@10"] for s in ("valid", "test")])
  pop = np.mean([record[s]["popularity"]["ndcg@10"] for s in ("valid", "test")])
  assert ours > 1.2 * pop, (ours, pop)
  chance = 10 / len(old.catalog)
  assert record["text2sid_trained"]["text2sid_acc@10"] > 4 * chance, record["text2sid_trained"]
  assert record["text2sid_heldout"]["items"] == 20
  assert 0.0 <= record["sid2text_heldout"]["sid2text_f1"] <= 1.0
  assert record["sid2text_trained"]["sid2text_f1"] > 0.1, record["sid2text_trained"]
  saved = json.loads((run_dir / "lm" / "results.json").read_text())
  assert saved["evaluated"]["test"]["recall@10"] == record["test"]["recall@10"]
  assert (run_dir / "lm" / "vocab" / "joint_vocab.json").is_file()
  lines = (run_dir / "lm" / "predictions_test.jsonl").read_text().splitlines()
  assert len(lines) == record["test"]["users"]


def test_after_item_table_round_trips(trained):
  _, run_dir, old, _, _ = trained
  table = AfterItemTable.load(run_dir / "lm" / "after_item")
  assert table.recommended.shape == (20, 5)
  head = int(table.item_ids[0])
  recs = table.lookup(head)
  assert 0 < len(recs) <= 5 and head not in [i for i, _ in recs]
  assert set(i for i, _ in recs) <= set(old.catalog.item_ids.tolist())
  scores = [s for _, s in recs]
  assert scores == sorted(scores, reverse=True)
  unknown = int(old.catalog.item_ids.max()) + 1000
  with pytest.raises(KeyError, match=f"item {unknown} is not in the after-item table"):
    table.lookup(unknown)


def test_resume_continues_from_the_checkpoint(trained, lm_config):
  config, run_dir, old, _, out = trained
  config = lm_config(run_dir, num_steps=260)
  again = lm_stage(config, run_dir, old, evaluate=False)
  assert again["train"]["steps"] == 260
  steps = [json.loads(line)["step"]
           for line in (run_dir / "lm" / "metrics.jsonl").read_text().splitlines()]
  assert max(steps) == 260 and 240 in steps
  # The finished stage is reused, not retrained.
  assert lm_stage(config, run_dir, old, evaluate=False)["train"] == again["train"]


@pytest.mark.slow   # ~40 s on the 2-core machine
def test_continued_pretraining_grows_and_learns_new_items(trained, tmp_path):
  config, run_dir, old, new, _ = trained
  spec = validate(config.lm)
  table = SIDTable.load(run_dir / "sid")
  vocab = JointVocab.load(run_dir / "lm" / "vocab")
  prep = prepare(spec, old, table, vocab, seed=SEED)
  old_model = load_trained(spec, run_dir / "lm", prep, seed=SEED)
  report = continue_pretraining(
      spec, old_dir=run_dir / "lm", old_prep=prep, new_dataset=new,
      new_embeddings=embed(new.catalog), sid_tokenizer=load_tokenizer(run_dir / "sid"),
      out_dir=tmp_path / "cpt", seed=SEED)
  assert report["new_items"] == len(new.catalog) - len(old.catalog) > 0
  assert report["new_vocab_size"] >= report["old_vocab_size"]
  grown = JointVocab.load(tmp_path / "cpt" / "vocab")
  history = report["history"]
  steps = [h["step"] for h in history]
  assert steps[0] == report["start_step"] and steps[-1] == report["start_step"] + 40
  assert len(steps) >= 3
  first, last = history[0], history[-1]
  # New items become retrievable by their titles within the continued steps.
  assert last["fresh/text2sid_acc@10"] > max(0.3, first["fresh/text2sid_acc@10"] + 0.2), history
  assert report["steps_to_half_final_text2sid"] is not None
  assert json.loads((tmp_path / "cpt" / "freshness.json").read_text())["history"] == history
  # Old rows were carried bit for bit into the grown model (before any continued step).
  _, old_to_new = vocab.extend_sid_levels(grown.codebook_sizes)
  cpt = restore(spec, tmp_path / "cpt", grown, seed=SEED, step=report["start_step"])[0]
  kept = np.flatnonzero(old_to_new >= 0)
  np.testing.assert_array_equal(np.asarray(cpt.embed.embedding[...])[old_to_new[kept]],
                                np.asarray(old_model.embed.embedding[...])[kept])


def history_only(config):
  """The config trained on the history task alone (its weights set, every other task's 0)."""
  for task in list(config.lm.tasks.weights.keys()):
    config.lm.tasks.weights[task] = 0.0
  config.lm.tasks.weights.history = 1.0
  return config


def test_history_task_trains_and_evaluates_end_to_end(tmp_path, lm_config):
  """A few steps of watch histories as documents, then the stage's evaluation, which prompts
  in the history format."""
  world = make_world(WorldConfig(num_items=120, num_users=200, branching=(4, 3),
                                 mean_length=10, modalities=()))
  dataset = world.dataset
  sid_spec = SIDSpec(levels=2, codebook_size=8, iters=10)
  write_sids(tmp_path / "sid", fit_sids(embed(dataset.catalog), sid_spec,
                                        item_ids=dataset.catalog.item_ids, show_progress=False),
             sid_spec)
  config = history_only(lm_config(tmp_path, num_steps=30, warmup_steps=5, eval_every=30,
                                    checkpoint_every=30, log_every=10))
  config.lm.variant = "history"
  config.lm.eval.update(valid_users=32, max_users=32, text_holdout=10)
  config.lm.after_item.update(num_items=5, top_k=5)
  out = lm_stage(config, tmp_path, dataset)
  assert out["weights"] == {"sid2text": 0.0, "text2sid": 0.0, "next": 0.0, "masked": 0.0,
                            "history": 1.0}
  assert out["train"]["steps"] == 30 and out["train"]["truncated"] == 0
  logged = [json.loads(line) for line in
            (tmp_path / "lm" / "history" / "metrics.jsonl").read_text().splitlines()]
  losses = [h["train/loss"] for h in logged if "train/loss" in h]
  assert len(losses) >= 2 and losses[-1] < losses[0], losses
  record = out["evaluated"]
  items = set(dataset.catalog.item_ids.tolist())
  for split in ("valid", "test"):
    assert record[split]["users"] == 32 and 0.0 <= record[split]["recall@10"] <= 1.0
    lines = (tmp_path / "lm" / "history" / f"predictions_{split}.jsonl").read_text().splitlines()
    assert all(set(json.loads(line)["items"]) <= items for line in lines)
  assert (tmp_path / "lm" / "history" / "after_item" / "after_item.npz").is_file()
  # The stage evaluated with history-format prompts (what `next_item_ranking` builds).
  spec = validate(config.lm)
  prep = prepare(spec, dataset, SIDTable.load(tmp_path / "sid"),
                    JointVocab.load(tmp_path / "lm" / "vocab"), seed=SEED)
  prompts = next_prompts(prep.split.test, dataset.catalog, prep.table, prep.vocab, prep.tasks)
  assert prompts.task == "history"
  assert (prompts.tokens[:, -1] != prep.vocab.sep).all()
