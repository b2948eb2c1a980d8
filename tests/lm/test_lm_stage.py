"""The LM stage end to end on a small synthetic world: train, evaluate, after-item table,
resume, continued pretraining on a grown catalog, config errors."""

import json

import numpy as np
import pytest

from lrm import lm
from lrm.core.errors import ConfigError
from lrm.data.synthetic import WorldConfig, make_world, snapshots
from lrm.encoders.hashing import HashingEncoder
from lrm.sid.stage import SIDSpec, fit_sids, load_tokenizer, write_sids

SEED = 0


def tiny_config(run_dir, **train):
  import ml_collections
  config = ml_collections.ConfigDict({"run_dir": str(run_dir), "seed": SEED, "resume": True})
  config.lm = lm.lm_defaults()
  config.lm.size = ""
  config.lm.model.update(d_model=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                         mlp_dim=128)
  config.lm.vocab.update(bpe_vocab_size=400, num_sentinels=4)
  config.lm.tasks.update(max_history=8, max_field_tokens=24, max_prompt_tokens=64,
                         row_length=128, text_fields=("title",))
  config.lm.train.update({**dict(batch_size=16, num_steps=240, learning_rate=4e-3,
                                 warmup_steps=30, eval_every=240, checkpoint_every=120,
                                 log_every=50, keep_last=5), **train})
  config.lm.eval.update(ks=(5, 10), beam_size=10, batch_size=128, valid_users=128,
                        max_users=128, text_holdout=40, sid2text_tokens=16)
  config.lm.after_item.update(num_items=20, top_k=5)
  config.lm.continued.update(steps=40, eval_every=20, eval_items=40, learning_rate=3e-3)
  return config


def embed(catalog):
  return HashingEncoder(dim=128).encode(catalog.text())


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """A stage trained on the world's first snapshot (its SIDs from hashed titles)."""
  world = make_world(WorldConfig(num_items=240, num_users=500, branching=(4, 3),
                                 mean_length=12, modalities=(), initial_item_fraction=0.6))
  times = np.quantile(world.dataset.sequences.timestamps, [0.7, 1.0]) + [0.0, 1.0]
  old, new = snapshots(world, times)
  run_dir = tmp_path_factory.mktemp("lm_run")
  result = fit_sids(embed(old.catalog), SIDSpec(levels=2, codebook_size=8, iters=10),
                    item_ids=old.catalog.item_ids, show_progress=False)
  write_sids(run_dir / "sid", result, SIDSpec(levels=2, codebook_size=8, iters=10))
  config = tiny_config(run_dir)
  out = lm.lm_stage(config, run_dir, old)
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
  table = lm.AfterItemTable.load(run_dir / "lm" / "after_item")
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


def test_resume_continues_from_the_checkpoint(trained):
  config, run_dir, old, _, out = trained
  config = tiny_config(run_dir, num_steps=260)
  again = lm.lm_stage(config, run_dir, old, evaluate=False)
  assert again["train"]["steps"] == 260
  steps = [json.loads(line)["step"]
           for line in (run_dir / "lm" / "metrics.jsonl").read_text().splitlines()]
  assert max(steps) == 260 and 240 in steps
  # The finished stage is reused, not retrained.
  assert lm.lm_stage(config, run_dir, old, evaluate=False)["train"] == again["train"]


@pytest.mark.slow   # ~40 s on the 2-core machine
def test_continued_pretraining_grows_and_learns_new_items(trained, tmp_path):
  config, run_dir, old, new, _ = trained
  spec = lm.validate(config.lm)
  from lrm.sid.table import SIDTable
  from lrm.tokens.joint_vocab import JointVocab
  table = SIDTable.load(run_dir / "sid")
  vocab = JointVocab.load(run_dir / "lm" / "vocab")
  prep = lm.prepare(spec, old, table, vocab, seed=SEED)
  old_model = lm.load_trained(spec, run_dir / "lm", prep, seed=SEED)
  report = lm.continue_pretraining(
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
  cpt = lm.restore(spec, tmp_path / "cpt", grown, seed=SEED, step=report["start_step"])[0]
  kept = np.flatnonzero(old_to_new >= 0)
  np.testing.assert_array_equal(np.asarray(cpt.embed.embedding[...])[old_to_new[kept]],
                                np.asarray(old_model.embed.embedding[...])[kept])


def history_only(config):
  """The config trained on the history task alone (its weights set, every other task's 0)."""
  for task in list(config.lm.tasks.weights.keys()):
    config.lm.tasks.weights[task] = 0.0
  config.lm.tasks.weights.history = 1.0
  return config


def test_history_task_trains_and_evaluates_end_to_end(tmp_path):
  """A few steps of watch histories as documents, then the stage's evaluation, which prompts
  in the history format."""
  from lrm.sid.table import SIDTable
  from lrm.tasks.lm_tasks import next_prompts
  from lrm.tokens.joint_vocab import JointVocab
  world = make_world(WorldConfig(num_items=120, num_users=200, branching=(4, 3),
                                 mean_length=10, modalities=()))
  dataset = world.dataset
  sid_spec = SIDSpec(levels=2, codebook_size=8, iters=10)
  write_sids(tmp_path / "sid", fit_sids(embed(dataset.catalog), sid_spec,
                                        item_ids=dataset.catalog.item_ids, show_progress=False),
             sid_spec)
  config = history_only(tiny_config(tmp_path, num_steps=30, warmup_steps=5, eval_every=30,
                                    checkpoint_every=30, log_every=10))
  config.lm.variant = "history"
  config.lm.eval.update(valid_users=32, max_users=32, text_holdout=10)
  config.lm.after_item.update(num_items=5, top_k=5)
  out = lm.lm_stage(config, tmp_path, dataset)
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
  spec = lm.validate(config.lm)
  prep = lm.prepare(spec, dataset, SIDTable.load(tmp_path / "sid"),
                    JointVocab.load(tmp_path / "lm" / "vocab"), seed=SEED)
  prompts = next_prompts(prep.split.test, dataset.catalog, prep.table, prep.vocab, prep.tasks)
  assert prompts.task == "history"
  assert (prompts.tokens[:, -1] != prep.vocab.sep).all()


def test_history_config_is_lm_beauty_with_history_only():
  import pathlib
  from lrm.core.config import load_config
  configs = pathlib.Path(__file__).resolve().parents[2] / "configs"
  for arg in (None, "cpu"):
    base = load_config(configs / "lm_beauty.py", arg).to_dict()
    history = load_config(configs / "lm_beauty_history.py", arg).to_dict()
    spec = lm.validate(history["lm"])
    assert {k for k, w in spec.tasks.weights.items() if w > 0} == {"history"}
    for section in (base, history):
      section["lm"].pop("variant")
      section["lm"]["tasks"].pop("weights")
    assert history == base                           # the only deltas: variant and weights


@pytest.mark.parametrize("field, value", [
    ("lm.size", "7b"), ("lm.tasks.weights.nxt", 1.0), ("lm.train.best_metric", "valid/mrr"),
    ("lm.tasks.weights.histroy", 1.0), ("lm.tasks.next_item_prompt", "masked"),
    ("lm.tasks.history_overlap", 0), ("lm.tasks.prefix_lm_tasks", ("history",)),
    ("lm.eval.beam_size", 0), ("lm.cold_start.fraction", 1.5), ("lm.model.d_model", -1),
    ("lm.tasks.row_length", 0), ("lm.train.batch_size", 0), ("lm.bogus", 1),
    ("lm.tasks.prefix_lm_tasks", ("next",)), ("lm.continued.replay_fraction", 1.0),
    ("lm.tasks.mix_by", "epochs"), ("lm.tasks.history_text_loss", True)])
def test_bad_config_names_the_field(field, value, tmp_path):
  config = tiny_config(tmp_path)
  section = config.lm.to_dict()
  keys = field.split(".")[1:]
  node = section
  for k in keys[:-1]:
    node = node[k]
  node[keys[-1]] = value
  with pytest.raises(ConfigError, match=field.replace(".", r"\.") if field != "lm.tasks.weights.nxt"
                     else r"lm\.tasks\.weights\.nxt"):
    lm.validate(section)


def test_greedy_text_batches_equal_one_generate_call():
  """SID -> text generation in padded batches gives what one call over every prompt gives, and
  only the allowed tokens (the full-forward check of the generator is tests/models/test_lm)."""
  import types
  import jax.numpy as jnp
  from flax import nnx
  from lrm.models.lm import LM, LMConfig, greedy_generate
  vocab = types.SimpleNamespace(tokenizer_size=90, pad=0, eos=2, fields=("title",),
                                field=lambda name: 95)
  allowed = lm.text_token_mask(vocab, 128)
  assert allowed[[1, 2, 89, 95]].all() and not allowed[[0, 90, 100, 127]].any()
  model = LM(LMConfig(vocab_size=128, d_model=32, num_layers=2, num_heads=2, num_kv_heads=1,
                      head_dim=16, mlp_dim=64, init_std=0.3), rngs=nnx.Rngs(0))
  rng = np.random.default_rng(0)
  lengths = rng.integers(1, 7, 7)
  segment_ids = (np.arange(6)[None] >= 6 - lengths[:, None]).astype(np.int32)  # left-padded
  tokens = np.where(segment_ids > 0, rng.integers(3, 128, (7, 6)), 0).astype(np.int32)
  prompts = types.SimpleNamespace(tokens=tokens, segment_ids=segment_ids,
                                  prefix=np.zeros((7, 6), bool))
  out = lm.greedy_text(model, prompts, allowed, num_tokens=4, batch_size=3)
  whole = nnx.jit(lambda m, p, v, a: greedy_generate(m, p, v, 4, allowed=a))(
      model, jnp.asarray(tokens), jnp.asarray(segment_ids > 0), jnp.asarray(allowed))
  np.testing.assert_array_equal(out, np.asarray(whole))
  assert out.shape == (7, 4) and allowed[out].all()
  empty = types.SimpleNamespace(tokens=tokens[:0], segment_ids=segment_ids[:0],
                                prefix=np.zeros((0, 6), bool))
  assert lm.greedy_text(model, empty, allowed, num_tokens=4, batch_size=3).shape == (0, 4)


@pytest.mark.parametrize("fields, field", [
    (dict(mix_by="passes", num_examples=100), "lm.tasks.num_examples"),
    (dict(history_titles=True, history_fields=("title", "brand")), "lm.tasks.history_fields"),
    (dict(history_titles=True, history_fields=()), "lm.tasks.history_fields")])
def test_bad_mixing_and_mixed_document_settings_name_the_field(fields, field, tmp_path):
  import re
  config = tiny_config(tmp_path)                  # text_fields=("title",)
  config.lm.tasks.update(fields)
  with pytest.raises(ConfigError, match=f"'{re.escape(field)}'") as e:
    lm.validate(config.lm)
  assert "\n" not in str(e.value)


def test_bilingual_config_is_history_plus_dense_linking():
  import pathlib
  from lrm.core.config import load_config
  configs = pathlib.Path(__file__).resolve().parents[2] / "configs"
  for arg in ("", "cpu"):
    history = load_config(configs / "lm_beauty_history.py", arg).to_dict()
    bilingual = load_config(configs / "lm_beauty_bilingual.py", arg).to_dict()
    spec = lm.validate(bilingual["lm"])
    assert spec.variant == "bilingual" and spec.tasks.mix_by == "passes"
    assert {k: w for k, w in spec.tasks.weights.items() if w > 0} == {
        "history": 1.0, "sid2text": 1.0, "text2sid": 1.0}
    for section in (history, bilingual):
      section["lm"].pop("variant")
      section["lm"]["tasks"].pop("mix_by")
      for task in ("sid2text", "text2sid"):
        section["lm"]["tasks"]["weights"].pop(task)
    assert bilingual == history                     # the only deltas: variant, mixing, links
  swept = lm.validate(load_config(configs / "lm_beauty_bilingual.py", "cpu,link=2.5")["lm"])
  assert swept.variant == "bilingual_link2.5"
  assert swept.tasks.weights["sid2text"] == swept.tasks.weights["text2sid"] == 2.5
  mixed = lm.validate(load_config(configs / "lm_beauty_bilingual.py", "cpu,mixed")["lm"])
  assert mixed.variant == "bilingual_mixed"
  assert mixed.tasks.history_titles and mixed.tasks.history_text_loss
  assert mixed.tasks.history_fields == ("title",) and mixed.tasks.row_length == 256
  with pytest.raises(ConfigError, match=r"lm\.tasks\.weights\.sid2text"):
    lm.validate(load_config(configs / "lm_beauty_bilingual.py", "cpu,link=-1")["lm"])
  with pytest.raises(ConfigError, match=r"arg\.links"):
    load_config(configs / "lm_beauty_bilingual.py", "links=2")
