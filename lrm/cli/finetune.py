"""lrm finetune --config=configs/finetune_beauty.py --workdir=W [--config.finetune.FIELD=V]

Contrastive fine-tuning of the sentence encoder (FLUID; the stage is lrm/finetune.py): pairs from
the dataset's leave-one-out *training part* (item-to-item co-consumption within a window) plus
text queries (Amazon: category path + brand; the synthetic world: its topic names), stage one
(projection alone), stage two (everything, lower learning rate). Writes

  W/checkpoints/   Orbax steps 1 (after `align`) and 2 (after `joint`): a rerun resumes there
  W/encoder/       the fine-tuned encoder (lrm.encoders.contrastive.load_finetuned reads it)
  W/embed/         embeddings.npy + item_ids.npy + manifest.json, the `embed` stage's format,
                   ready for `lrm sid --embeddings=W/embed/embeddings.npy`
"""

from __future__ import annotations

import pathlib

from absl import flags
from ml_collections import config_flags

from lrm.core.report import print_table
from lrm.finetune import run_finetune

_DEFAULT = pathlib.Path(__file__).resolve().parents[2] / "configs" / "finetune_beauty.py"
_CONFIG = config_flags.DEFINE_config_file("config", str(_DEFAULT), "fine-tuning config file",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "output folder", required=True)


def main(argv):
  del argv
  summary = run_finetune(_CONFIG.value, _WORKDIR.value)
  print_table(["finetune", ""], [[k, v] for k, v in summary.items() if not isinstance(v, dict)]
              + [["embeddings", f"{_WORKDIR.value}/embed/embeddings.npy"]])
