"""load_encoder: the fallback by default, a resolved SentenceEncoder otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from lrm.core.errors import ConfigError
from lrm.encoders import Encoder, HashingEncoder, load_encoder, tiny


def test_none_and_hashing_give_the_fallback():
  for name in (None, "hashing", "HASHING"):
    enc = load_encoder(name)
    assert isinstance(enc, HashingEncoder) and isinstance(enc, Encoder)
  enc = load_encoder(None, dim=32, seed=3)
  assert enc.dim == 32 and enc.encode(["x"]).shape == (1, 32)


def test_a_folder_gives_a_sentence_encoder(tmp_path):
  from lrm.encoders import SentenceEncoder
  folder = tiny.write_tiny_bert(tmp_path / "tiny-bert")
  enc = load_encoder(str(folder), batch_size=8)
  assert isinstance(enc, SentenceEncoder) and isinstance(enc, Encoder)
  assert enc.name == "tiny-bert" and enc.dim == 16 and enc.batch_size == 8
  emb = enc.encode(["nail polish", ""], show_progress=False)
  assert emb.shape == (2, 16)
  np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
  assert enc.describe()["path"] == str(folder.resolve())


def test_a_name_is_resolved_from_lrm_models(tmp_path, monkeypatch):
  monkeypatch.setenv("LRM_MODELS", str(tmp_path))
  tiny.write_tiny_bert(tmp_path / "my-encoder")
  enc = load_encoder("my-encoder")
  assert enc.name == "my-encoder" and enc.describe()["kind"] == "sentence"


def test_unknown_name_fails_without_network(tmp_path, monkeypatch):
  monkeypatch.setenv("HOME", str(tmp_path))
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
  for var in ("LRM_MODELS", "HF_HUB_CACHE", "HF_HOME", "SENTENCE_TRANSFORMERS_HOME"):
    monkeypatch.delenv(var, raising=False)
  with pytest.raises(ConfigError, match="'no-such-model' not found"):
    load_encoder("no-such-model")
