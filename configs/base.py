"""All defaults of an lrm run; as is, the main job on the built-in synthetic world.

  lrm run                                          # this file
  lrm run --config=configs/base.py:runlocal        # a smaller world, for a quick look
  lrm run --config.run_dir=runs/x --config.embed.encoder=hashing
  lrm run --config.world.num_users=5000            # any field, dotted

Experiment configs (configs/*.py) start from this one and change only what differs.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from lrm.core.config import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  from lrm.data.synthetic import WorldConfig
  from lrm.encoders.stage import EmbedSpec
  from lrm.sid.rqvae import RQVAEConfig
  from lrm.sid.stage import SIDSpec

  arg = parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  config.run_dir = "runs/synthetic"  # every stage writes its artifact under here
  config.seed = 0                    # the root of every random choice
  config.resume = True               # reuse a stage whose artifact is complete for this config

  # Where the items and sequences come from.
  config.data = ml_collections.ConfigDict()
  config.data.source = "synthetic"   # synthetic | layout | amazon2014 | movielens | recbole
  config.data.path = ""              # folder for layout / movielens / recbole
  config.data.reviews = ""           # amazon2014: reviews_<Cat>_5.json.gz
  config.data.meta = ""              # amazon2014: meta_<Cat>.json.gz
  config.data.min_count = 5          # amazon2014: k of the iterative k-core filter

  # The synthetic world (used when data.source == synthetic); fields documented in
  # lrm/data/synthetic.py WorldConfig.
  config.world = ml_collections.ConfigDict(WorldConfig().to_dict())

  # Item embeddings (lrm/encoders/stage.py EmbedSpec documents each field).
  config.embed = ml_collections.ConfigDict(dataclasses.asdict(EmbedSpec()))
  # auto: all-MiniLM-L6-v2 when found in a local model cache, else the hashing fallback.
  config.embed.encoder = "auto"
  config.embed.npy = ""
  # The world's planted visual and audio views fused with the title text.
  config.embed.modalities = ("text", "visual", "audio")

  # Semantic IDs (lrm/sid/stage.py SIDSpec documents each field). The default world has 2,000
  # items: 3 levels of 64 codes (TIGER's 3 x 256 is for catalogs of ~10k+ items).
  config.sid = ml_collections.ConfigDict(SIDSpec().to_dict())
  config.sid.codebook_size = 64
  config.sid.rqvae = ml_collections.ConfigDict(
      {k: v for k, v in dataclasses.asdict(RQVAEConfig()).items()
       if k not in ("input_dim", "codebook_sizes", "seed")})
  config.sid.rqvae.steps = 2000

  # Devices: (data, fsdp, tensor); -1 takes the rest.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.shape = (-1, 1, 1)

  if arg.runlocal:
    config.run_dir = "runs/synthetic_local"
    config.world.num_items = 500
    config.world.num_users = 200
    config.sid.codebook_size = 16
  return config
