"""RPG on Amazon Beauty: 32 x 256 OPQ codes of the MiniLM embeddings, a causal transformer
over items (mean of code embeddings) with one head per codebook, trained at every position
of SASRec's windows; exact scoring of every item for validation and test.

  lrm train --config=configs/rpg_beauty.py --workdir=runs/rpg_beauty
  lrm evaluate --workdir=runs/rpg_beauty
  python benchmarks/retrieval.py --config=configs/rpg_beauty.py     # a benchmark record
  ... --config.sid.method=rq_kmeans                                 # any SID table
  ... --config.data.path=DIR                                        # any standard-layout folder

The recipe fits a 2-core CPU (~1 s a step, 3,500 steps); `:rpg_size` takes RPG's published 2 x 448,
`:rpg_dropout` its dropout (inputs and attention probabilities .5, residuals 0); both:
`:rpg_size,rpg_dropout`. `:behaviour` fits the SIDs on text fused with behaviour (the SVD of the
training part's co-consumption PMI), so items whose text is alike get codes apart.
"""

from __future__ import annotations

import pathlib

from lrm.core.config import load_config, parse_arg


def get_config(arg: str | None = None):
  here = pathlib.Path(__file__).resolve().parent
  options = parse_arg(arg, rpg_size=False, rpg_dropout=False, behaviour=False)
  config = load_config(here / "beauty.py")
  config.run_dir = "runs/rpg_beauty"
  config.sid.method = "opq"
  config.sid.num_codebooks = 32        # RPG's Beauty setting
  config.sid.codebook_size = 256
  config.model.name = "rpg"
  # Windows of 20 items: Beauty's 95th-percentile training history is 19, and 50 would make
  # 88% of positions padding (20: 72%; a step is 1.6x faster, measured).
  config.model.rpg.update(max_length=20, d_model=128, num_heads=4, head_dim=32, mlp_dim=512,
                          num_layers=2, dropout=0.1, temperature=0.03)
  if options.rpg_size:
    config.model.rpg.update(d_model=448, num_heads=8, head_dim=56, mlp_dim=1792)
  if options.rpg_dropout:   # RPG's published rates: 50% of inputs and attention probabilities
    config.model.rpg.update(dropout=0.0, embed_dropout=0.5, attention_dropout=0.5)
  if options.behaviour:   # SIDs of text + co-consumption (lrm/encoders/cooccurrence.py)
    config.embed.modalities = ("text", "cooccurrence")
  config.train.batch_size = 256
  config.train.num_steps = 3500      # ~1 step/s on 2 cores: about an hour
  config.train.learning_rate = 3e-3  # 1e-2 (RPG's Beauty rate) was worse at 300 steps: .044 vs .053
  config.train.warmup_steps = 200
  config.train.decay = "cosine"
  config.train.end_fraction = 0.05
  config.train.weight_decay = 0.05
  config.train.eval_every = 250
  config.train.checkpoint_every = 250
  config.train.patience = 6
  config.eval.valid_users = 5000
  config.eval.decoder = "exact"
  return config
