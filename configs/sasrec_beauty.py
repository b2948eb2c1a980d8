"""SASRec on Amazon Beauty, tuned for the 2-core CPU: full-softmax cross-entropy at every
position of 50-item windows, heavy dropout (Beauty is sparse: the model overfits within ~10
epochs at .2), early stopping on validation NDCG@10.

  lrm train --config=configs/sasrec_beauty.py --workdir=runs/sasrec_beauty
  python benchmarks/retrieval.py --config=configs/sasrec_beauty.py --config.seed=0
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  config = load_config(here / "beauty.py", arg)
  config.run_dir = "runs/sasrec_beauty"
  config.model.name = "sasrec"
  config.model.sasrec.update(max_length=50, d_model=128, num_heads=2, head_dim=64, mlp_dim=512,
                             num_layers=2, dropout=0.5)
  config.train.batch_size = 256
  config.train.num_steps = 6000
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 200
  config.train.decay = "cosine"
  config.train.end_fraction = 0.05
  config.train.weight_decay = 0.0
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  config.train.patience = 8
  config.eval.valid_users = 5000
  return config
