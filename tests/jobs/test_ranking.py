"""The ranking stage end to end on a tiny synthetic world, and its config section."""

from __future__ import annotations

import json
import pathlib

import pytest

from lrm.core.config import load_config
from lrm.core.errors import ConfigError
from lrm.jobs.ranking import pipeline_config, ranking_section, run

CONFIGS = pathlib.Path(__file__).resolve().parents[2] / "configs"


def _tiny(tmp_path):
  config = load_config(CONFIGS / "rank_synthetic.py", "runlocal")
  config.run_dir = str(tmp_path / "run")
  config.world.num_users = 80
  config.world.num_items = 300
  config.ranking.update(variants=("id", "late"), num_steps=20, batch_size=32,
                        codebook_sizes=(4, 4, 4), kmeans_iters=5, eval_negatives=4)
  return config


def test_stage_writes_warm_and_cold_metrics_and_resumes(tmp_path):
  results = run(_tiny(tmp_path))
  saved = json.loads((tmp_path / "run" / "ranking" / "results.json").read_text())
  assert set(saved["variants"]) == {"id", "late"}
  for variant in saved["variants"].values():
    for part in ("warm", "cold"):
      assert 0.0 <= variant[part]["click/auc"] <= 1.0
      assert "watch_time/rmse" in variant[part]
  assert results["counts"]["cold_items"] > 0
  # Trained through the project's trainer: checkpoints and metrics per variant; a second run
  # resumes at the last step (no training) and reproduces the numbers.
  late = tmp_path / "run" / "ranking" / "late"
  assert (late / "checkpoints").is_dir() and (late / "metrics.jsonl").exists()
  config = _tiny(tmp_path)
  config.ranking.variants = ("late",)
  again = run(config)
  for part in ("warm", "cold"):
    assert again["variants"]["late"][part]["click/auc"] == \
        results["variants"]["late"][part]["click/auc"]


def test_section_is_checked_and_stripped(tmp_path):
  config = _tiny(tmp_path)
  assert "ranking" not in pipeline_config(config)
  config.ranking.unknown_field = 1
  with pytest.raises(ConfigError, match="ranking.unknown_field"):
    ranking_section(config)
  config = _tiny(tmp_path)
  config.ranking.num_steps = 0
  with pytest.raises(ConfigError, match="ranking.num_steps"):
    ranking_section(config)



def _tiny_recbole(folder: pathlib.Path, users: int = 40, items: int = 60) -> pathlib.Path:
  """RecBole files of a small random world: ratings, titles + genres, user attributes."""
  import numpy as np
  rng = np.random.default_rng(0)
  folder.mkdir(parents=True)
  inter = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
  for u in range(1, users + 1):
    for t, i in enumerate(rng.choice(np.arange(1, items + 1), rng.integers(8, 16), False)):
      inter.append(f"{u}\t{i}\t{rng.integers(1, 6)}\t{1000 * u + t}")
  genres = ["Drama", "Comedy", "Action", "Horror"]
  item = ["item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq"] + [
      f"{i}\tFilm {i}\t{1990 + i % 9}\t{genres[i % 4]}" for i in range(1, items + 1)]
  user = ["user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token"] + [
      f"{u}\t{18 + u}\t{'MF'[u % 2]}\t{['writer', 'artist'][u % 2]}\t{u % 10}0000"
      for u in range(1, users)]                # the last user has no row: missing values
  for name, lines in (("inter", inter), ("item", item), ("user", user)):
    (folder / f"tiny.{name}").write_text("\n".join(lines) + "\n")
  return folder


def test_movielens_config_and_user_side_stage(tmp_path):
  import dataclasses
  from flax import nnx
  from lrm.data.movielens import read_recbole_atomic
  from lrm.models.ranker import Ranker
  from lrm.jobs.ranking import evaluate_ranker, prepare, ranker_config
  config = load_config(CONFIGS / "rank_movielens.py", "runlocal")
  assert config.data.source == "recbole" and config.data.path.endswith("movielens_100k")
  section = ranking_section(config)
  assert section.user_features and section.interaction_counts and section.max_history == 50
  section.update(max_history=8, codebook_sizes=(4, 4), kmeans_iters=3, eval_negatives=4)
  dataset = read_recbole_atomic(_tiny_recbole(tmp_path / "tiny"))
  split, codes = prepare(section, dataset, seed=0)
  assert split.user_features.names == ("age", "gender", "occupation", "zip_code")
  assert split.train.user_features.shape[1] == 4 and split.train.counts.shape[1] == 3
  assert split.train.tasks == ("click", "rating")
  # The stage's ranker gets one token per user field and per count column.
  cfg = ranker_config(section, "late", split.num_items, split.train.tasks,
                      user_feature_sizes=split.user_features.sizes)
  assert cfg.user_feature_sizes == split.user_features.sizes and cfg.count_columns == 3
  # The config turns the long-term token on: the examples carry the long history, and a SID
  # ranker looks up its codes itself.
  assert section.long_history == 256 and split.train.long_history.shape[1] == 256
  metrics = evaluate_ranker(Ranker(cfg, rngs=nnx.Rngs(0), item_codes=codes), split.warm, codes)
  assert 0.0 <= metrics["click/auc"] <= 1.0 and "rating/rmse" in metrics
  # Switched on for a dataset without user attributes: a ConfigError naming the switch.
  with pytest.raises(ConfigError, match="ranking.user_features"):
    prepare(section, dataclasses.replace(dataset, users=None), seed=0)
  config.ranking.count_buckets = 1
  with pytest.raises(ConfigError, match="ranking.count_buckets"):
    ranking_section(config)


def test_long_history_section_is_validated_and_reaches_the_ranker(tmp_path):
  from lrm.jobs.ranking import ranker_config
  config = _tiny(tmp_path)
  section = ranking_section(config)
  assert section.long_history == 0 and ranker_config(section, "late", 10, ("click",)
                                                     ).long_encoder is None
  config.ranking.update(long_history=32, long_encoder={"fold": 8, "mixer": "full"})
  section = ranking_section(config)
  enc = ranker_config(section, "late", 10, ("click",)).long_encoder
  # Merged over the section's defaults (num_globals 4, not CompressionConfig's 8).
  assert (enc.mixer, enc.fold, enc.d_model, enc.num_globals) == ("full", 8, section.d, 4)
  for change, field in (({"long_history": 600}, "ranking.long_history"),
                        ({"long_history": 20}, "ranking.long_encoder.fold"),
                        ({"long_encoder": {"d_model": 7}}, "ranking.long_encoder.d_model"),
                        ({"long_encoder": {"mixer": "sparse"}}, "ranking.long_encoder.mixer"),
                        ({"long_encoder": {"windows": 2}}, "ranking.long_encoder.windows")):
    bad = _tiny(tmp_path)
    bad.ranking.update(long_history=32)
    bad.ranking.update(change)
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
      ranking_section(bad)


def test_finetuned_content_tunes_on_the_warm_split_only_and_is_reused(tmp_path):
  """`ranking.content = "finetuned"`: the encoder's co-consumption pairs come from this run's
  split (fraction and seed in its manifest); a second run reuses the fine-tuned embeddings."""
  from lrm.encoders.tiny import write_tiny_bert
  bert = write_tiny_bert(tmp_path / "bert", seed=1)
  ft_config = tmp_path / "ft.py"
  ft_config.write_text(
      "import ml_collections\n"
      "from lrm.encoders.contrastive import ContrastiveConfig\n"
      "def get_config(arg=None):\n"
      "  c = ml_collections.ConfigDict()\n"
      "  c.data = 'replaced by the run'\n"
      f"  c.encoder = {str(bert)!r}\n"
      "  c.fields = ('title', 'brand', 'categories')\n"
      "  c.pairs = ml_collections.ConfigDict({'window': 2, 'item_to_item': True,\n"
      "      'queries': arg == 'queries', 'cold_fraction': 0.0, 'cold_seed': 0})\n"
      "  c.finetune = ml_collections.ConfigDict(ContrastiveConfig(dim=8, batch_size=8,\n"
      "      max_seq_length=16, align_steps=2, joint_steps=2).to_dict())\n"
      "  return c\n")
  config = _tiny(tmp_path)
  config.seed = 3
  config.ranking.update(variants=("late",), content="finetuned",
                        finetune_config=f"{ft_config}:queries")
  first = run(config)
  (tuned,) = (tmp_path / "run" / "finetune").iterdir()
  manifest = json.loads((tuned / "embed" / "manifest.json").read_text())
  pairs = manifest["embedding_info"]["pairs"]
  assert (pairs["cold_fraction"], pairs["cold_seed"], pairs["queries"]) == (0.1, 3, True)
  assert tuned.name.startswith("cold0.1_seed3_")
  again = run(config)
  assert [p.name for p in (tmp_path / "run" / "finetune").iterdir()] == [tuned.name]
  assert json.loads((tuned / "embed" / "manifest.json").read_text())["id"] == manifest["id"]
  assert again["variants"]["late"]["cold"]["click/auc"] == \
      first["variants"]["late"]["cold"]["click/auc"]
  config.ranking.finetune_config = ""
  with pytest.raises(ConfigError, match="ranking.finetune_config"):
    ranking_section(config)
  config.ranking.finetune_config = str(tmp_path / "missing.py")
  with pytest.raises(ConfigError, match="no such config file"):
    run(config)
