"""The bilingual SID LM on Amazon Beauty trained on watch histories as documents only: the
`history` task (lrm/tasks/lm_tasks.py), with the loss on every target SID of a user's
training part, in place of the four-task mix of configs/lm_beauty.py. Everything else is
lm_beauty's (same run_dir, so the SIDs and the vocabulary are shared); the run lands in
run_dir/lm/history and is evaluated with history-format prompts.

  python benchmarks/lm_beauty.py --config=configs/lm_beauty_history.py:cpu     # + next_only
  lrm lm --config=configs/lm_beauty_history.py:cpu                                # 2-core budget
  lrm lm --config=configs/lm_beauty_history.py:runlocal                           # a quick look
  lrm lm --config=configs/lm_beauty_history.py:cpu --config.lm.tasks.history_titles=True \\
      --config.lm.tasks.row_length=256 --config.lm.variant=history_titles     # titles as context

configs/lm_beauty_bilingual.py adds dense linking in both directions to this mix, and the mixed
document (titles beside the SIDs, scored with lm.tasks.history_text_loss).
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  config = load_config(here / "lm_beauty.py", arg)
  lm = config.lm
  lm.variant = "history"
  for task in list(lm.tasks.weights.keys()):
    lm.tasks.weights[task] = 0.0
  lm.tasks.weights.history = 1.0
  return config
