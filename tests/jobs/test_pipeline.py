"""The main job: every system of the mission in one run, and one summary table."""

import json

import pytest

from lrm.core.errors import ConfigError
from lrm.jobs import pipeline
from lrm.jobs.defaults import get_config


def mission_config(run_dir):
  """`lrm run`'s defaults on the small world, every stage cut to a few steps."""
  config = get_config("runlocal,job=pipeline")
  config.run_dir = str(run_dir)
  config.embed.encoder = "hashing"
  config.embed.modalities = ("text",)
  config.train.update(num_steps=20, warmup_steps=2, eval_every=20, checkpoint_every=20)
  config.lm.train.update(num_steps=20, warmup_steps=2, eval_every=20, checkpoint_every=20)
  config.lm.eval.update(valid_users=16, max_users=32, text_holdout=8)
  config.lm.after_item.num_items = 4
  config.ranking.update(num_steps=20, long_history=32, variants=("late",))
  return config


# ~70 s alone (mostly compiling five models) and ~160 s beside another worker: outside CI's
# 20-minute budget, run with `-m slow`. CI keeps the checks below; `lrm run` (the README's
# first command) runs the same code at full size.
@pytest.mark.slow
def test_main_job_runs_every_system_and_prints_one_summary(tmp_path, capsys):
  results = pipeline.run(mission_config(tmp_path))
  out = capsys.readouterr().out
  for section in ("retrieval", "lm", "ranking"):
    assert section in results
  assert set(results["ranking"]["variants"]) == {"late"}
  assert "late_full_attention" in results["ranking"]   # compression against full attention
  examples = results["lm"]["evaluated"]["text2sid_heldout"]["examples"]
  assert examples and all(e["title"] for e in examples)
  assert "text -> SID: title" in out and "SID -> text: title" in out
  assert "| summary" in out and "long history: full attention" in out
  saved = json.loads((tmp_path / "results.json").read_text())
  assert {"retrieval", "lm", "ranking", "sid"} <= set(saved)


def test_a_bad_section_fails_before_anything_is_written(tmp_path):
  config = mission_config(tmp_path)
  config.ranking.long_history = 30          # the encoder's fold (16) must divide it
  with pytest.raises(ConfigError, match="ranking.long_encoder.fold"):
    pipeline.run(config)
  assert not (tmp_path / "data").exists()


def test_summary_rows_name_each_system():
  results = {
      "sid": {"level1_utilisation": 0.97, "unique_with_collision_level": True,
              "codebook_sizes": [16, 16, 16]},
      "retrieval": {"model": "tiger", "evaluated": {
          "tiger": {"test": {"recall@10": 0.3}}, "popularity": {"test": {"recall@10": 0.1}}}},
      "lm": {"evaluated": {"test": {"recall@10": 0.2, "popularity": {"recall@10": 0.1}},
                           "text2sid_heldout": {"text2sid_acc@10": 0.5},
                           "sid2text_heldout": {"sid2text_f1": 0.3}}},
      "ranking": {"variants": {"late": {"warm": {"click/auc": 0.7}, "cold": {"click/auc": 0.6},
                                        "wall_s": 3.0}},
                  "late_full_attention": {"warm": {"click/auc": 0.69}, "wall_s": 4.0}},
      "wall_s": 10.0}
  rows = {(r[0], r[1]): r[2] for r in pipeline.summary_rows(results)}
  assert rows[("semantic IDs", "level-1 utilisation")] == 0.97
  assert rows[("retrieval (tiger)", "test recall@10")] == 0.3
  assert rows[("bilingual LM", "text -> SID acc@10, held-out titles")] == 0.5
  assert rows[("cold-start ranker (late)", "click AUC warm / cold")] == "0.7000 / 0.6000"
  assert rows[("long history: full attention", "warm click AUC")] == 0.69
  assert rows[("the whole run", "wall time (s)")] == 10.0
