"""The bilingual SID language model on Amazon Beauty: the Beauty data / MiniLM / 3 x 256 + collision
SIDs of configs/beauty.py (same run_dir, so the SID artifact and the retrieval models' numbers
are shared), then the LM stage (lrm/jobs/lm/) with every task.

  lrm lm --config=configs/lm_beauty.py --workdir=runs/beauty                   # full (GPU)
  lrm lm --config=configs/lm_beauty.py:cpu                                      # 2-core budget
  lrm lm --config=configs/lm_beauty.py:runlocal                                 # a quick look
  lrm lm --config=configs/lm_beauty.py --config.lm.variant=next_only \\
      --config.lm.tasks.weights.sid2text=0 --config.lm.tasks.weights.text2sid=0 \\
      --config.lm.tasks.weights.masked=0                                        # ablation
  lrm lm --config=configs/lm_beauty.py --config.lm.cold_start.fraction=0.05 \\
      --config.lm.variant=cold                                                   # cold start
  lrm lm --config=configs/lm_beauty.py --config.lm.init_from=/path/to/Qwen3-0.6B  # from an LLM
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config, parse_arg
from lrm.jobs.defaults import lm_defaults


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  options = parse_arg(arg, cpu=False, runlocal=False)
  config = load_config(here / "beauty.py", "cpu" if options.cpu or options.runlocal else "")
  config.job = "lm"
  config.lm = lm_defaults()
  lm = config.lm
  lm.size = "10m"
  lm.tasks.max_history = 20
  lm.tasks.row_length = 512
  lm.tasks.max_prompt_tokens = 384
  lm.train.update(batch_size=64, num_steps=30000, learning_rate=1e-3, warmup_steps=1000,
                  decay="cosine", end_fraction=0.05, weight_decay=0.05, eval_every=2000,
                  checkpoint_every=2000, patience=5)
  lm.eval.update(beam_size=20, batch_size=256, valid_users=2000, max_users=0, text_holdout=500)
  lm.after_item.update(num_items=1000, top_k=10)
  if options.cpu or options.runlocal:
    # A 2-core CPU: a ~1M-parameter model on short rows for about ten minutes of training;
    # the final evaluation on 1,000 users per split (beam search is the cost here).
    lm.size = ""
    lm.model.update(d_model=128, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=64,
                    mlp_dim=384)
    lm.vocab.bpe_vocab_size = 4096
    lm.tasks.update(max_history=8, max_prompt_tokens=96, max_field_tokens=24, row_length=128,
                    text_fields=("title", "brand", "categories"))
    lm.train.update(batch_size=32, num_steps=3000, warmup_steps=200, learning_rate=3e-3,
                    eval_every=1000, checkpoint_every=500, patience=0)
    lm.eval.update(beam_size=10, batch_size=256, valid_users=300, max_users=1000,
                   text_holdout=200, sid2text_tokens=24)
    lm.after_item.update(num_items=200, top_k=10)
  if options.runlocal:
    config.run_dir = "runs/beauty_lm_local"
    lm.train.update(num_steps=200, eval_every=200, checkpoint_every=200, warmup_steps=20)
    lm.eval.update(valid_users=64, max_users=128, text_holdout=40)
    lm.after_item.num_items = 20
  return config
