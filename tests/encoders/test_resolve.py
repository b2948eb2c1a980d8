"""Finding an encoder folder by name in local caches, never over the network."""

from __future__ import annotations

import os
import time

import pytest

from lrm.core.errors import ConfigError
from lrm.encoders import resolve


@pytest.fixture
def env(tmp_path, monkeypatch):
  """An empty home: no real cache can leak into the lookups."""
  for var in ("LRM_MODELS", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HOME",
              "SENTENCE_TRANSFORMERS_HOME", "TORCH_HOME"):
    monkeypatch.delenv(var, raising=False)
  monkeypatch.setenv("HOME", str(tmp_path / "home"))
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
  return tmp_path


def _model(directory, files=resolve.REQUIRED_FILES):
  directory.mkdir(parents=True, exist_ok=True)
  for f in files:
    (directory / f).write_text("{}")
  return directory


def _hub_repo(hub, name="sentence-transformers/all-MiniLM-L6-v2"):
  return hub / ("models--" + name.replace("/", "--"))


def test_hub_cache_prefers_refs_main(env, monkeypatch):
  hub = env / "hub"
  monkeypatch.setenv("HF_HUB_CACHE", str(hub))
  repo = _hub_repo(hub)
  main = _model(repo / "snapshots" / "aaa111")
  newer = _model(repo / "snapshots" / "bbb222")
  os.utime(main, (time.time() - 100, time.time() - 100))
  (repo / "refs").mkdir()
  (repo / "refs" / "main").write_text("aaa111\n")
  for name in ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
    assert resolve.resolve_encoder(name) == main
  (repo / "refs" / "main").unlink()  # without refs/main: the newest snapshot
  assert resolve.resolve_encoder("all-MiniLM-L6-v2") == newer


def test_hf_home_and_default_hub(env, monkeypatch):
  monkeypatch.setenv("HF_HOME", str(env / "hfhome"))
  found = _model(_hub_repo(env / "hfhome" / "hub", "BAAI/bge-small-en") / "snapshots" / "r1")
  assert resolve.resolve_encoder("BAAI/bge-small-en") == found
  monkeypatch.delenv("HF_HOME")
  default = _model(_hub_repo(env / "xdg" / "huggingface" / "hub", "BAAI/bge-small-en")
                   / "snapshots" / "r2")
  assert resolve.resolve_encoder("BAAI/bge-small-en") == default


def test_lrm_models_comes_first(env, monkeypatch):
  monkeypatch.setenv("LRM_MODELS", str(env / "models"))
  mine = _model(env / "models" / "all-MiniLM-L6-v2")
  _model(env / "xdg" / "lrm" / "all-MiniLM-L6-v2")
  _model(_hub_repo(env / "xdg" / "huggingface" / "hub") / "snapshots" / "x")
  assert resolve.resolve_encoder("sentence-transformers/all-MiniLM-L6-v2") == mine
  monkeypatch.delenv("LRM_MODELS")
  assert resolve.resolve_encoder("all-MiniLM-L6-v2") == env / "xdg" / "lrm" / "all-MiniLM-L6-v2"


def test_sentence_transformers_cache(env, monkeypatch):
  found = _model(env / "xdg" / "torch" / "sentence_transformers"
                 / "sentence-transformers_all-MiniLM-L6-v2")
  assert resolve.resolve_encoder("all-MiniLM-L6-v2") == found
  monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(env / "st"))
  st = _model(env / "st" / "sentence-transformers_all-MiniLM-L6-v2")
  assert resolve.resolve_encoder("all-MiniLM-L6-v2") == st


def test_a_folder_path_is_used_as_is(env):
  folder = _model(env / "somewhere" / "my-model")
  assert resolve.resolve_encoder(str(folder)) == folder
  incomplete = _model(env / "incomplete", files=("config.json",))
  with pytest.raises(ConfigError, match=r"lacks \['model\.safetensors', 'tokenizer\.json'\]"):
    resolve.resolve_encoder(incomplete)
  with pytest.raises(ConfigError, match="no such folder"):
    resolve.resolve_encoder(str(env / "nope" / "model"))
  with pytest.raises(ConfigError, match="is a file"):
    resolve.resolve_encoder(folder / "config.json")


def test_not_found_lists_every_place(env, monkeypatch):
  monkeypatch.setenv("LRM_MODELS", str(env / "models"))
  monkeypatch.setenv("HF_HUB_CACHE", str(env / "hub"))
  monkeypatch.setenv("SENTENCE_TRANSFORMERS_HOME", str(env / "st"))
  # A snapshot holding only PyTorch weights: found, but said what it lacks.
  _model(_hub_repo(env / "xdg" / "huggingface" / "hub") / "snapshots" / "old",
         files=("config.json", "tokenizer.json", "pytorch_model.bin"))
  with pytest.raises(ConfigError) as e:
    resolve.resolve_encoder("all-MiniLM-L6-v2", field="embed.encoder")
  message = str(e.value)
  assert e.value.field == "embed.encoder"
  for place in (env / "models" / "all-MiniLM-L6-v2",
                env / "xdg" / "lrm" / "all-MiniLM-L6-v2",
                _hub_repo(env / "hub") / "snapshots",
                env / "st" / "sentence-transformers_all-MiniLM-L6-v2",
                env / "xdg" / "torch" / "sentence_transformers"
                / "sentence-transformers_all-MiniLM-L6-v2"):
    assert str(place) in message
  assert "old (lacks model.safetensors)" in message
  assert "nothing is downloaded" in message
