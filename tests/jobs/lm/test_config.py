"""The `lm` config section: the experiment configs' deltas, and bad values named by field."""

import pathlib
import re

import pytest

from lrm.core.config import load_config
from lrm.core.errors import ConfigError
from lrm.jobs.lm.config import validate

CONFIGS = pathlib.Path(__file__).resolve().parents[3] / "configs"


def test_history_config_is_lm_beauty_with_history_only():
  for arg in (None, "cpu"):
    base = load_config(CONFIGS / "lm_beauty.py", arg).to_dict()
    history = load_config(CONFIGS / "lm_beauty_history.py", arg).to_dict()
    spec = validate(history["lm"])
    assert {k for k, w in spec.tasks.weights.items() if w > 0} == {"history"}
    for section in (base, history):
      section["lm"].pop("variant")
      section["lm"]["tasks"].pop("weights")
    assert history == base                           # the only deltas: variant and weights
  # `hour`: the cpu model with 20-item prompts and twice the steps, stopping early.
  cpu = load_config(CONFIGS / "lm_beauty_history.py", "cpu").lm
  hour = load_config(CONFIGS / "lm_beauty_history.py", "hour").lm
  assert (hour.variant, hour.tasks.max_history, hour.train.num_steps, hour.train.patience) == (
      "history_hour", 20, 2 * cpu.train.num_steps, 4)
  assert hour.model == cpu.model and hour.tasks.weights == cpu.tasks.weights


@pytest.mark.parametrize("field, value", [
    ("lm.size", "7b"), ("lm.tasks.weights.nxt", 1.0), ("lm.train.best_metric", "valid/mrr"),
    ("lm.tasks.weights.histroy", 1.0), ("lm.tasks.next_item_prompt", "masked"),
    ("lm.tasks.history_overlap", 0), ("lm.tasks.prefix_lm_tasks", ("history",)),
    ("lm.eval.beam_size", 0), ("lm.cold_start.fraction", 1.5), ("lm.model.d_model", -1),
    ("lm.tasks.row_length", 0), ("lm.train.batch_size", 0), ("lm.bogus", 1),
    ("lm.tasks.prefix_lm_tasks", ("next",)), ("lm.continued.replay_fraction", 1.0),
    ("lm.tasks.mix_by", "epochs"), ("lm.tasks.history_text_loss", True)])
def test_bad_config_names_the_field(field, value, tmp_path, lm_config):
  config = lm_config(tmp_path)
  section = config.lm.to_dict()
  keys = field.split(".")[1:]
  node = section
  for k in keys[:-1]:
    node = node[k]
  node[keys[-1]] = value
  with pytest.raises(ConfigError, match=field.replace(".", r"\.") if field != "lm.tasks.weights.nxt"
                     else r"lm\.tasks\.weights\.nxt"):
    validate(section)


@pytest.mark.parametrize("fields, field", [
    (dict(mix_by="passes", num_examples=100), "lm.tasks.num_examples"),
    (dict(history_titles=True, history_fields=("title", "brand")), "lm.tasks.history_fields"),
    (dict(history_titles=True, history_fields=()), "lm.tasks.history_fields")])
def test_bad_mixing_and_mixed_document_settings_name_the_field(fields, field, tmp_path,
                                                               lm_config):
  config = lm_config(tmp_path)                  # text_fields=("title",)
  config.lm.tasks.update(fields)
  with pytest.raises(ConfigError, match=f"'{re.escape(field)}'") as e:
    validate(config.lm)
  assert "\n" not in str(e.value)


def test_bilingual_config_is_history_plus_dense_linking():
  for arg in ("", "cpu"):
    history = load_config(CONFIGS / "lm_beauty_history.py", arg).to_dict()
    bilingual = load_config(CONFIGS / "lm_beauty_bilingual.py", arg).to_dict()
    spec = validate(bilingual["lm"])
    assert spec.variant == "bilingual" and spec.tasks.mix_by == "passes"
    assert {k: w for k, w in spec.tasks.weights.items() if w > 0} == {
        "history": 1.0, "sid2text": 1.0, "text2sid": 1.0}
    for section in (history, bilingual):
      section["lm"].pop("variant")
      section["lm"]["tasks"].pop("mix_by")
      for task in ("sid2text", "text2sid"):
        section["lm"]["tasks"]["weights"].pop(task)
    assert bilingual == history                     # the only deltas: variant, mixing, links
  swept = validate(load_config(CONFIGS / "lm_beauty_bilingual.py", "cpu,link=2.5")["lm"])
  assert swept.variant == "bilingual_link2.5"
  assert swept.tasks.weights["sid2text"] == swept.tasks.weights["text2sid"] == 2.5
  mixed = validate(load_config(CONFIGS / "lm_beauty_bilingual.py", "cpu,mixed")["lm"])
  assert mixed.variant == "bilingual_mixed"
  assert mixed.tasks.history_titles and mixed.tasks.history_text_loss
  assert mixed.tasks.history_fields == ("title",) and mixed.tasks.row_length == 256
  with pytest.raises(ConfigError, match=r"lm\.tasks\.weights\.sid2text"):
    validate(load_config(CONFIGS / "lm_beauty_bilingual.py", "cpu,link=-1")["lm"])
  with pytest.raises(ConfigError, match=r"arg\.links"):
    load_config(CONFIGS / "lm_beauty_bilingual.py", "links=2")
