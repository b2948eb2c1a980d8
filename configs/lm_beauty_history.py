"""The bilingual SID LM on Amazon Beauty trained on watch histories as documents only: the
`history` task (lrm/tasks/lm_tasks.py), with the loss on every target SID of a user's
training part, in place of the four-task mix of configs/lm_beauty.py. Everything else is
lm_beauty's (same run_dir, so the SIDs and the vocabulary are shared); the run lands in
run_dir/lm/history and is evaluated with history-format prompts.

  python benchmarks/lm_beauty.py --config=configs/lm_beauty_history.py:cpu     # + next_only
  lrm lm --config=configs/lm_beauty_history.py:cpu                                # 2-core budget
  lrm lm --config=configs/lm_beauty_history.py:runlocal                           # a quick look
  python benchmarks/lm_beauty.py --config=configs/lm_beauty_history.py:hour --only=main  # ~1 h
  python benchmarks/lm_beauty.py --config=configs/lm_beauty_history.py:hour,dropout --only=main
  lrm lm --config=configs/lm_beauty_history.py:cpu --config.lm.tasks.history_titles=True \\
      --config.lm.tasks.row_length=256 --config.lm.variant=history_titles     # titles as context

configs/lm_beauty_bilingual.py adds dense linking in both directions to this mix, and the mixed
document (titles beside the SIDs, scored with lm.tasks.history_text_loss).
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config, parse_arg


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  options = parse_arg(arg, cpu=False, runlocal=False, hour=False, dropout=False)
  options.cpu = options.cpu or options.hour   # `hour` is the `cpu` model, trained longer
  base_arg = ",".join(name for name in ("cpu", "runlocal") if options[name])
  config = load_config(here / "lm_beauty.py", base_arg)
  lm = config.lm
  lm.variant = "history"
  for task in list(lm.tasks.weights.keys()):
    lm.tasks.weights[task] = 0.0
  lm.tasks.weights.history = 1.0
  if options.hour:
    # The `cpu` model for about an hour of the 2-core CPU: 20-item prompts as in TIGER, twice
    # the steps, early stopping on validation NDCG@10 (500 users) every 500 steps; the final
    # evaluation on every test user (beam search over 22k users takes about a minute).
    lm.variant = "history_hour"
    lm.tasks.max_history = 20
    lm.train.update(num_steps=6000, eval_every=500, checkpoint_every=500, patience=4)
    lm.eval.update(valid_users=500, max_users=0)
  if options.dropout:
    # The `hour` run memorised after ~11 epochs (validation peaked at step 2,000 of 6,000):
    # dropout on the embeddings and every block output, as SASRec and RPG regularise.
    lm.variant += "_dropout"
    lm.model.dropout = 0.2
  return config
