"""The bilingual SID LM on Amazon Beauty: watch histories as documents
(configs/lm_beauty_history.py) plus dense linking in both directions, sid2text and text2sid
over every linked item (issue 24, item 2). Weights count passes per epoch
(`lm.tasks.mix_by="passes"`): each user's history once, each item's links `link` times in each
direction, however many items and users there are. The linking weight is the cold-start lever
to measure; `link=0` is history-only.

  python benchmarks/lm_beauty.py --config=configs/lm_beauty_bilingual.py:cpu --cold_start=0.05
  python benchmarks/lm_beauty.py --config=configs/lm_beauty_bilingual.py:cpu,link=3 \\
      --only=main,cold_all --cold_start=0.05                                 # the weight sweep
  python benchmarks/lm_beauty.py --config=configs/lm_beauty_bilingual.py:cpu,mixed --only=main
  python benchmarks/lm_beauty.py --config=configs/lm_beauty_bilingual.py:hour \\
      --cold_start=0.05 --only=cold_all                     # beside lm_beauty_history.py:hour
  lrm lm --config=configs/lm_beauty_bilingual.py:runlocal                   # a quick look

Arguments after the colon (comma-separated): `cpu` / `runlocal` as in lm_beauty, `hour` as in
lm_beauty_history (the CPU model for about an hour); `link=W` the linking weight (default 1);
`mixed` the mixed document: each history item's title beside its SID with the loss on it too
(lm.tasks.history_titles + history_text_loss; add brand and categories with
--config.lm.tasks.history_fields). A run lands in run_dir/lm/<variant>, named by these choices
(bilingual, bilingual_link3, bilingual_mixed, bilingual_hour, ...), so a sweep never meets
another setting's checkpoints.
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config, parse_arg


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  options = parse_arg(arg, cpu=False, runlocal=False, hour=False, link=1.0, mixed=False)
  base_arg = ",".join(name for name in ("cpu", "runlocal", "hour") if options[name])
  config = load_config(here / "lm_beauty_history.py", base_arg)
  tasks = config.lm.tasks
  tasks.mix_by = "passes"
  tasks.weights.sid2text = options.link
  tasks.weights.text2sid = options.link
  variant = "bilingual"
  if options.mixed:
    # A title block is ~20 tokens where a SID is 4: rows must hold a window of history_overlap
    # context items and a target, and evaluation prompts about max_history items.
    tasks.update(history_titles=True, history_text_loss=True,
                 row_length=max(tasks.row_length, 256),
                 max_prompt_tokens=max(tasks.max_prompt_tokens, 192))
    variant += "_mixed"
  if options.link != 1.0:
    variant += f"_link{options.link:g}"
  if options.hour:
    variant += "_hour"
  config.lm.variant = variant
  return config
