"""What the LM job's tests share: a tiny `lm` config."""

import ml_collections
import pytest

from lrm.jobs.defaults import lm_defaults

SEED = 0


def tiny_config(run_dir, **train):
  config = ml_collections.ConfigDict({"run_dir": str(run_dir), "seed": SEED, "resume": True})
  config.lm = lm_defaults()
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


@pytest.fixture(scope="session")
def lm_config():
  """`tiny_config(run_dir, **train)`: a small LM job config (text_fields=("title",), seed 0)."""
  return tiny_config
