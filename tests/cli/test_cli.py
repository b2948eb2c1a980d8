"""The `lrm` command end to end, as a user runs it (subprocesses on the 2-core CPU)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[2]


def lrm(*args: str, cwd=None, check=True) -> subprocess.CompletedProcess:
  env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": ""}
  out = subprocess.run([sys.executable, "-m", "lrm.cli.main", *args], capture_output=True,
                       text=True, cwd=cwd or REPO, env=env, timeout=600)
  if check and out.returncode != 0:
    raise AssertionError(f"lrm {' '.join(args)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
  return out


def test_help_lists_the_stages():
  out = lrm("--help")
  for name in ("world", "data", "embed", "sid", "run"):
    assert f"\n  {name} " in out.stdout
  bad = lrm("nope", check=False)
  assert bad.returncode == 2 and "unknown subcommand 'nope'" in bad.stderr


def test_unknown_config_field_is_named(tmp_path):
  out = lrm("run", f"--config.run_dir={tmp_path}", "--config.embed.bach_size=3", check=False)
  assert out.returncode == 2
  assert "bach_size" in out.stderr and "Traceback" not in out.stderr
  out = lrm("run", f"--config.run_dir={tmp_path}", "--config.world.num_users=0", check=False)
  assert out.returncode == 2 and "'world.num_users'" in out.stderr
  assert not (tmp_path / "data" / "manifest.json").exists()


def test_unknown_override_of_a_training_config_is_one_line():
  out = lrm("train", "--config=configs/beauty.py", "--config.model.no_such_field=3", check=False)
  assert out.returncode == 2, out.stderr
  assert out.stderr.strip() == ("lrm train: error: bad --config override: "
                                "config.model.no_such_field is not a field of the config")



def test_config_by_name(tmp_path):
  out = lrm("train", "--config=nosuch", check=False)
  assert out.returncode == 2 and out.stderr.count("\n") == 1
  assert "no config named 'nosuch'" in out.stderr
  out = lrm("train", "--config=beauty", "--config.model.no_such_field=3", check=False)
  assert out.returncode == 2 and "no_such_field is not a field" in out.stderr
  out = lrm("finetune", check=False)   # finetune has no synthetic default: --config needed
  assert out.returncode == 2 and "--config=configs/finetune_beauty.py" in out.stderr

def test_world_then_embed_with_fallback(tmp_path):
  lrm("world", f"--out={tmp_path / 'w'}", "--config=configs/base.py:runlocal")
  lrm("embed", f"--data={tmp_path / 'w'}", f"--out={tmp_path / 'e'}")
  emb = np.load(tmp_path / "e" / "embeddings.npy")
  manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
  items = (tmp_path / "w" / "items.jsonl").read_text().splitlines()
  assert emb.shape[0] == len(items) and emb.dtype == np.float32
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  assert manifest["fallback_encoder_used"] is True
  assert manifest["encoder"]["kind"] == "hashing"
  assert manifest["counts"] == {"items": len(items), "dim": emb.shape[1]}
  # Titles carry the planted topic: neighbours share the leaf category far above chance.
  q = manifest["quality"]
  assert q["nn_label_agreement"] > 5 * q["chance"]


def test_embed_fuses_catalog_modalities_and_byo(tmp_path):
  lrm("world", f"--out={tmp_path / 'w'}", "--config=configs/base.py:runlocal")
  n = len((tmp_path / "w" / "items.jsonl").read_text().splitlines())
  np.save(tmp_path / "mine.npy", np.random.default_rng(0).normal(size=(n, 8)).astype(np.float32))
  lrm("embed", f"--data={tmp_path / 'w'}", f"--out={tmp_path / 'e'}",
      "--modalities=text,visual,npy", f"--npy={tmp_path / 'mine.npy'}")
  manifest = json.loads((tmp_path / "e" / "manifest.json").read_text())
  assert manifest["embedding_info"]["fusion"]["inputs"] == ["text", "visual", "npy"]
  # Bring-your-own with the wrong row count: a clear error naming the file; nothing written.
  np.save(tmp_path / "short.npy", np.zeros((n - 1, 8), np.float32))
  out = lrm("embed", f"--data={tmp_path / 'w'}", f"--out={tmp_path / 'e2'}", "--modalities=npy",
            f"--npy={tmp_path / 'short.npy'}", check=False)
  assert out.returncode == 2 and "short.npy" in out.stderr
  assert not (tmp_path / "e2" / "manifest.json").exists()


def test_main_job_runs_and_resumes(tmp_path):
  args = ("run", "--config=configs/base.py:runlocal", f"--config.run_dir={tmp_path}",
          "--config.embed.encoder=hashing")
  first = lrm(*args)
  results = json.loads((tmp_path / "results.json").read_text())
  assert results["dataset"]["items"] == 500 and results["dataset"]["users"] == 200
  fused = results["embed"]["nn_leaf_category"]["embeddings.npy"]
  assert fused["nn_label_agreement"] > 5 * fused["chance"]
  assert "nn shares leaf category" in first.stdout
  assert results["sid"]["unique_with_collision_level"] is True
  assert results["sid"]["level1_utilisation"] > 0.9
  assert (tmp_path / "sid" / "codes.npy").exists()
  # The short retrieval run beats popularity on the synthetic world's test users.
  evaluated = results["retrieval"]["evaluated"]
  assert evaluated["tiger"]["test"]["recall@10"] > 2 * evaluated["popularity"]["test"]["recall@10"]
  assert "| tiger" in first.stdout and "recall@10" in first.stdout
  emb_mtime = (tmp_path / "embed" / "embeddings.npy").stat().st_mtime_ns
  second = lrm(*args)
  assert (tmp_path / "embed" / "embeddings.npy").stat().st_mtime_ns == emb_mtime
  assert "embed: reusing" in second.stderr and "sid: reusing" in second.stderr
  assert "retrieval/tiger: reusing" in second.stderr
  # Another world (same size, same stage configs downstream): embed and sid must be redone.
  third = lrm(*args, "--config.world.seed=1", "--config.train.num_steps=0")
  assert "embed: reusing" not in third.stderr and "sid: reusing" not in third.stderr
  assert (tmp_path / "embed" / "embeddings.npy").stat().st_mtime_ns != emb_mtime


def _isolated_env(tmp_path, **extra):
  """No model caches: HOME and every cache variable point into tmp_path."""
  env = {k: v for k, v in os.environ.items()
         if k not in ("LRM_MODELS", "HF_HOME", "HF_HUB_CACHE", "SENTENCE_TRANSFORMERS_HOME")}
  env.update(HOME=str(tmp_path / "home"), XDG_CACHE_HOME=str(tmp_path / "cache"),
             JAX_PLATFORMS="cpu", XLA_FLAGS="", **extra)
  return env


def _run_auto(tmp_path, env):
  out = subprocess.run([sys.executable, "-m", "lrm.cli.main", "run",
                        "--config=configs/base.py:runlocal", f"--config.run_dir={tmp_path / 'r'}",
                        "--config.embed.modalities=('text',)", "--config.train.num_steps=0"],
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  return out, json.loads((tmp_path / "r" / "embed" / "manifest.json").read_text())


def test_main_job_auto_encoder_falls_back_without_weights(tmp_path):
  out, manifest = _run_auto(tmp_path, _isolated_env(tmp_path))
  assert manifest["fallback_encoder_used"] is True
  assert "using the hashing fallback encoder" in out.stderr


def test_main_job_auto_encoder_finds_cached_weights(tmp_path):
  from lrm.encoders.tiny import write_tiny_bert
  models = tmp_path / "models"
  write_tiny_bert(models / "all-MiniLM-L6-v2")
  _, manifest = _run_auto(tmp_path, _isolated_env(tmp_path, LRM_MODELS=str(models)))
  assert manifest["fallback_encoder_used"] is False
  assert manifest["config"]["encoder"] == str(models / "all-MiniLM-L6-v2")


def test_sid_command(tmp_path):
  lrm("world", f"--out={tmp_path / 'w'}", "--config=configs/base.py:runlocal")
  lrm("embed", f"--data={tmp_path / 'w'}", f"--out={tmp_path / 'e'}")
  out = lrm("sid", f"--embeddings={tmp_path / 'e' / 'embeddings.npy'}", f"--out={tmp_path / 's'}",
            f"--data={tmp_path / 'w'}", "--levels=2", "--codebook_size=16")
  assert "coherence" in out.stdout
  codes = np.load(tmp_path / "s" / "codes.npy")
  ids = np.load(tmp_path / "s" / "item_ids.npy")
  assert codes.shape == (500, 3) and codes.dtype == np.int32  # 2 levels + collision level
  assert len(np.unique(codes, axis=0)) == 500
  np.testing.assert_array_equal(ids, np.load(tmp_path / "e" / "item_ids.npy"))
  report = json.loads((tmp_path / "s" / "report.json").read_text())
  assert report["codebook_sizes"] == [16, 16]
  bad = lrm("sid", f"--embeddings={tmp_path / 'e' / 'embeddings.npy'}", f"--out={tmp_path / 'b'}",
            "--config.sid.metrc=l2", check=False)
  assert bad.returncode == 2 and "metrc" in bad.stderr


def test_train_then_evaluate(tmp_path):
  args = ("--config=configs/base.py:runlocal", f"--workdir={tmp_path}",
          "--config.embed.encoder=hashing", "--config.model.name=sasrec",
          "--config.train.num_steps=60", "--config.train.eval_every=30",
          "--config.train.warmup_steps=10")
  lrm("train", *args)
  model_dir = tmp_path / "retrieval" / "sasrec"
  assert (model_dir / "checkpoints").is_dir() and (model_dir / "metrics.jsonl").exists()
  assert list((model_dir / "tensorboard").iterdir())
  out = lrm("evaluate", f"--workdir={tmp_path}", "--config.eval.batch_size=32")
  assert "| sasrec" in out.stdout and "| popularity" in out.stdout
  results = json.loads((tmp_path / "results.json").read_text())
  test = results["retrieval"]["evaluated"]["sasrec"]["test"]
  assert set(test) >= {"recall@5", "ndcg@10", "recall@20", "users"}
  lines = (model_dir / "predictions_test.jsonl").read_text().splitlines()
  assert len(lines) == test["users"] and len(json.loads(lines[0])["items"]) == 20


def test_evaluate_errors_are_one_line(tmp_path):
  out = lrm("evaluate", check=False)
  assert out.returncode == 2 and "workdir" in out.stderr and "Traceback" not in out.stderr
  out = lrm("evaluate", f"--workdir={tmp_path}", check=False)
  assert out.returncode == 2 and "config.json" in out.stderr
  out = lrm("train", "--config=configs/base.py:runlocal", f"--workdir={tmp_path}",
            "--config.model.name=bert4rec", "--config.embed.encoder=hashing", check=False)
  assert out.returncode == 2 and "model.name" in out.stderr


def test_train_and_evaluate_take_a_ranking_config(tmp_path):
  """`lrm train --config=configs/rank_<dataset>.py` runs the ranking stage; `lrm evaluate
  --workdir` scores the trained rankers again without training, and refuses untrained ones."""
  config = tmp_path / "rank_tiny.py"
  config.write_text(
      "import pathlib\n"
      "from lrm.core.config import load_config\n"
      "def get_config(arg=None):\n"
      f"  c = load_config(pathlib.Path({str(REPO / 'configs' / 'rank_synthetic.py')!r}),"
      " 'runlocal')\n"
      "  c.world.num_users, c.world.num_items = 80, 300\n"
      "  c.ranking.update(variants=('late',), num_steps=int(arg or 20), batch_size=32,\n"
      "                   codebook_sizes=(4, 4, 4), kmeans_iters=5, eval_negatives=4)\n"
      "  return c\n")
  run = tmp_path / "run"
  trained = lrm("train", f"--config={config}", f"--workdir={run}")
  assert "late     warm click AUC" in trained.stdout
  first = json.loads((run / "ranking" / "results.json").read_text())
  again = lrm("evaluate", f"--workdir={run}")
  assert "late     warm click AUC" in again.stdout
  second = json.loads((run / "ranking" / "results.json").read_text())
  assert second["variants"]["late"]["cold"]["click/auc"] == \
      first["variants"]["late"]["cold"]["click/auc"]
  # A longer schedule than the checkpoints reached: evaluate refuses, naming the variant.
  saved = json.loads((run / "config.json").read_text())
  saved["ranking"]["num_steps"] = 40
  (run / "config.json").write_text(json.dumps(saved))
  short = lrm("evaluate", f"--workdir={run}", check=False)
  assert short.returncode == 2 and "'late' is trained to step 20 of 40" in short.stderr
