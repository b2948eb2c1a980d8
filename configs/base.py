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
  from lrm.jobs.embed import EmbedSpec
  from lrm.jobs.sid import SIDSpec
  from lrm.sid.rqvae import RQVAEConfig

  arg = parse_arg(arg, runlocal=False)
  config = ml_collections.ConfigDict()
  # The job `lrm train` and `lrm evaluate` run (lrm/jobs/__init__.py JOBS); `lrm run`, `rank`,
  # `replay`, `lm`, `rounds` and `finetune` run their own and record it here.
  config.job = "retrieval"
  config.run_dir = "runs/synthetic"  # every stage writes its artifact under here
  config.seed = 0                    # the root of every random choice
  config.resume = True               # reuse a stage whose artifact is complete for this config

  # Where the items and sequences come from.
  config.data = ml_collections.ConfigDict()
  config.data.source = "synthetic"   # synthetic | layout | amazon2014 | movielens | recbole | tfds
  config.data.path = ""              # folder for layout / movielens / recbole
  config.data.reviews = ""           # amazon2014: reviews_<Cat>_5.json.gz
  config.data.meta = ""              # amazon2014: meta_<Cat>.json.gz
  config.data.min_count = 5          # amazon2014: k of the iterative k-core filter
  config.data.tfds = ""              # tfds: BUILDER/DATASET written by `lrm data --format=tfds`
  config.data.data_dir = ""          # tfds: the folder that command wrote (its --out)

  # The synthetic world (used when data.source == synthetic); fields documented in
  # lrm/data/synthetic.py WorldConfig.
  config.world = ml_collections.ConfigDict(WorldConfig().to_dict())

  # Item embeddings (lrm/jobs/embed.py EmbedSpec documents each field).
  config.embed = ml_collections.ConfigDict(dataclasses.asdict(EmbedSpec()))
  # auto: all-MiniLM-L6-v2 when found in a local model cache, else the hashing fallback.
  config.embed.encoder = "auto"
  config.embed.npy = ""
  # The world's planted visual and audio views fused with the title text.
  config.embed.modalities = ("text", "visual", "audio")

  # Semantic IDs (lrm/jobs/sid.py SIDSpec documents each field). The default world has 2,000
  # items: 3 levels of 64 codes (TIGER's 3 x 256 is for catalogs of ~10k+ items).
  config.sid = ml_collections.ConfigDict(SIDSpec().to_dict())
  config.sid.codebook_size = 64
  config.sid.rqvae = ml_collections.ConfigDict(
      {k: v for k, v in dataclasses.asdict(RQVAEConfig()).items()
       if k not in ("input_dim", "codebook_sizes", "seed")})
  config.sid.rqvae.steps = 2000

  # Generative retrieval (lrm/jobs/retrieval.py): leave-one-out, every training prefix an example.
  config.task = ml_collections.ConfigDict()
  config.task.max_history = 20        # items of history per example (TIGER: 20)
  config.task.num_user_tokens = 2000  # user ids hashed into this many tokens (TIGER: 2000)

  # Which model to train (tiger | sasrec), and each model's hyperparameters.
  config.model = ml_collections.ConfigDict()
  config.model.name = "tiger"         # tiger | decoder | sasrec | rpg
  # The encoder-decoder (lrm/models/tiger.py Seq2SeqConfig documents each field). The main
  # job's short CPU run uses a small one; dataset configs set TIGER's size
  # (lrm/models/tiger.py TIGER_SIZE).
  config.model.tiger = ml_collections.ConfigDict(dict(
      d_model=64, num_heads=2, head_dim=32, mlp_dim=256, encoder_layers=2, decoder_layers=2,
      dropout=0.1, activation="relu", dtype="float32"))
  config.model.tiger.attention_impl = ml_collections.FieldReference(None, field_type=str)
  # The decoder-only variant: one prefix-LM stack (lrm/models/decoder_only.py).
  config.model.decoder = ml_collections.ConfigDict(dict(
      d_model=128, num_heads=6, head_dim=64, mlp_dim=1024, num_layers=8, dropout=0.1,
      activation="relu", dtype="float32"))
  config.model.decoder.attention_impl = ml_collections.FieldReference(None, field_type=str)
  # The ID-based baseline (lrm/models/sasrec.py SASRecConfig).
  config.model.sasrec = ml_collections.ConfigDict(dict(
      max_length=50, d_model=64, num_heads=2, head_dim=32, mlp_dim=256, num_layers=2,
      dropout=0.2, activation="gelu", dtype="float32"))
  config.model.sasrec.attention_impl = ml_collections.FieldReference(None, field_type=str)
  config.model.sasrec.embed_dropout = ml_collections.FieldReference(None, field_type=float)
  config.model.sasrec.attention_dropout = 0.0
  # RPG (lrm/models/rpg.py RPGConfig): parallel heads over every code of the next item's SID,
  # trained at every position of SASRec's windows; reads any SID table (long PQ codes best).
  config.model.rpg = ml_collections.ConfigDict(dict(
      max_length=50, d_model=128, num_heads=4, head_dim=32, mlp_dim=512, num_layers=2,
      dropout=0.1, temperature=0.03, activation="gelu", dtype="float32",
      # Ablations: loss item (softmax over items), loss_positions last, ngram_buckets > 0.
      loss="codebook", loss_positions="all", ngram_buckets=0, ngram_order=4))
  config.model.rpg.attention_impl = ml_collections.FieldReference(None, field_type=str)
  # Input dropout (None: `dropout`) and dropout on the attention probabilities.
  config.model.rpg.embed_dropout = ml_collections.FieldReference(None, field_type=float)
  config.model.rpg.attention_dropout = 0.0

  # The training loop (lrm/train/trainer.py LoopSpec) and optimizer (lrm/train/optimizer.py).
  config.train = ml_collections.ConfigDict()
  config.train.batch_size = 128       # the main job's; dataset configs use TIGER's 256
  config.train.num_steps = 600        # the main job's short run (minutes on a CPU)
  config.train.learning_rate = 1e-3
  config.train.warmup_steps = 100
  config.train.decay = "cosine"       # constant | cosine | inverse_sqrt | linear
  config.train.end_fraction = 0.0     # cosine / linear end at this fraction of the peak rate
  config.train.weight_decay = 0.01
  config.train.b1 = 0.9
  config.train.b2 = 0.98
  config.train.clip_norm = 1.0
  config.train.eval_every = 200       # validation (and a checkpoint) every this many steps
  config.train.log_every = 50
  config.train.checkpoint_every = 200
  config.train.patience = 0           # validations without improvement before stopping; 0 never
  config.train.best_metric = "valid/ndcg@10"
  config.train.best_mode = "max"
  config.train.keep_last = 2          # checkpoints kept besides the best
  config.train.seed = 0
  config.train.worker_count = 0       # Grain worker processes (batches here are array slices)

  # Evaluation: Recall/NDCG@K over all items, constrained beam search for generative models.
  config.eval = ml_collections.ConfigDict()
  config.eval.ks = (5, 10, 20)
  config.eval.beam_size = 20
  # rpg's final evaluation: exact (every item) | graph (RPG's item graph) | beam (code trie)
  config.eval.decoder = "exact"
  config.eval.graph = ml_collections.ConfigDict(dict(num_edges=100, steps=3, entries=256))
  config.eval.batch_size = 256
  config.eval.valid_users = 2000      # users in periodic validation (0 = all); final eval: all

  # Devices: (data, fsdp, tensor) within a slice (-1 takes the rest), times dcn_shape across
  # slices (TPU slices, or processes elsewhere): axis i spans shape[i] * dcn_shape[i] devices.
  config.mesh = ml_collections.ConfigDict()
  config.mesh.shape = (-1, 1, 1)
  config.mesh.dcn_shape = (1, 1, 1)

  # Continuous pretraining (`lrm rounds`): snapshots at these fractions of the events' time
  # span, each trained this many more steps, starting from the previous round's checkpoint.
  config.rounds = ml_collections.ConfigDict()
  config.rounds.fractions = (0.6, 0.8, 1.0)
  config.rounds.steps = (600, 300, 300)
  config.rounds.refit = "warm"       # warm-started RQ-KMeans refit | "assign" (codebooks kept)
  config.rounds.model = "tiger"

  if arg.runlocal:
    config.run_dir = "runs/synthetic_local"
    config.rounds.steps = (200, 150, 150)
    config.world.num_items = 500
    config.world.num_users = 200
    config.sid.codebook_size = 16
    config.train.num_steps = 200
    config.train.batch_size = 64
    config.train.eval_every = 100
    config.train.checkpoint_every = 100
    config.model.tiger.update(d_model=32, head_dim=16, mlp_dim=128, encoder_layers=1,
                              decoder_layers=1)
  return config
