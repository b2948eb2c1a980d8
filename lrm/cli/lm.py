"""lrm lm --config=configs/lm_beauty.py --workdir=W [--notrain] [--noevaluate] [--config.lm.FIELD=V]

The bilingual SID language model: the data, embedding and SID stages run first (reused from W
when complete, lrm.pipeline.prepare_stages), then the LM stage (lrm/lm.py): the joint
vocabulary, packed task rows, training (resumed from W/lm[/<variant>]/checkpoints), then
text->SID, SID->text, next-item and cold-start numbers and the after-item table. Results go to
W/lm[/<variant>]/results.json and W/results.json.
"""

from __future__ import annotations

from absl import flags

from lrm.cli.job_flags import join_job
from lrm.cli.run_config import define_run_config
from lrm.lm import run

_RUN_CONFIG = define_run_config("lm_beauty.py")
_TRAIN = flags.DEFINE_bool("train", True, "train (or resume) the LM")
_EVALUATE = flags.DEFINE_bool("evaluate", True, "evaluate the trained LM")


def main(argv):
  del argv
  join_job()
  config = _RUN_CONFIG()
  run(config, train=_TRAIN.value, evaluate=_EVALUATE.value)
