"""Every default of an lrm run, in the package (configs/*.py start from here and hold deltas).

As is: the main job on the built-in synthetic world. As a config file:

  lrm run                                             # base:job=pipeline (+ lm, ranking)
  lrm run --config=base:runlocal                      # retrieval alone, a smaller world
  lrm rank                                            # base:job=ranking (ranking + replay sections)
  lrm run --config.run_dir=runs/x --config.embed.encoder=hashing
  lrm run --config.world.num_users=5000               # any field, dotted

The sections of the other jobs follow get_config: `ranking_defaults` (lrm rank),
`replay_defaults` (lrm replay), `lm_defaults` (lrm lm), `FINETUNE_PAIRS` (lrm finetune's pairs).

`arg`: `runlocal` (a smaller world and run), `job=NAME` (that job's sections and `config.job`:
ranking, replay, lm, rounds, retrieval, pipeline; the main job's are `mission_lm` and
`mission_ranking`, small enough for a few minutes of a 2-core CPU). Validation lives beside
each job (lrm/jobs/stages.py `validate`, ranking.py `ranking_section`, replay.py
`check_section`, lm/config.py `validate`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from lrm.core.config import parse_arg
from lrm.core.errors import ConfigError
from lrm.data.synthetic import WorldConfig
from lrm.jobs.embed import EmbedSpec
from lrm.jobs.sid import SIDSpec
from lrm.models.compression import CompressionConfig
from lrm.sid.rqvae import RQVAEConfig


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  arg = parse_arg(arg, runlocal=False, job="")
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
  # Windowed models (SASRec, RPG) stream their training windows from user records, each
  # process reading its own shard (ArrayRecord with source tfds, else the in-memory sequences),
  # instead of precomputing every window in memory. Evaluation still reads the whole dataset.
  config.data.stream = False

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

  if arg.job:
    _add_job_sections(config, arg.job)
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


def _add_job_sections(config: ml_collections.ConfigDict, job: str) -> None:
  """`job=NAME`: the defaults of that job on the synthetic world (what `lrm rank`, `lrm lm`,
  ... run without --config): its section(s) beside the stages', and `config.job`."""
  if job in ("ranking", "replay"):
    config.ranking = ranking_defaults()
    config.replay = replay_defaults()
  elif job == "lm":
    config.lm = lm_defaults()
  elif job == "pipeline":
    config.lm = mission_lm()
    config.ranking = mission_ranking()
  elif job not in ("retrieval", "rounds"):
    raise ConfigError("arg.job", f"'{job}' has no defaults on the synthetic world; one of "
                      "retrieval, pipeline, rounds, ranking, replay, lm (finetune needs "
                      "--config, e.g. configs/finetune_beauty.py)")
  config.job = job
  if job not in ("retrieval", "pipeline"):   # those two are the main job: its run_dir
    config.run_dir = f"runs/synthetic_{job}"


def mission_lm() -> ml_collections.ConfigDict:
  """The main job's LM (`lrm run`): a ~0.2M-parameter model on watch histories as documents
  plus linking in both directions, about a minute of a 2-core CPU."""
  lm = lm_defaults()
  lm.size = ""
  lm.model.update(d_model=64, num_layers=2, num_heads=2, num_kv_heads=1, head_dim=32,
                  mlp_dim=192)
  lm.vocab.bpe_vocab_size = 1024
  lm.tasks.weights.update(sid2text=1.0, text2sid=1.0, next=0.0, masked=0.0, history=1.0)
  lm.tasks.update(mix_by="passes", row_length=128, max_prompt_tokens=96, max_field_tokens=24)
  lm.train.update(batch_size=32, num_steps=400, learning_rate=3e-3, warmup_steps=40,
                  eval_every=400, checkpoint_every=400)
  lm.eval.update(beam_size=10, valid_users=100, max_users=300, text_holdout=40,
                 sid2text_tokens=16)
  lm.after_item.num_items = 20
  return lm


def mission_ranking() -> ml_collections.ConfigDict:
  """The main job's rankers: ID against late fusion of SIDs, cold items held out, the long
  history through the compression transformer (and, beside it, full attention)."""
  c = ranking_defaults()
  c.variants = ("id", "late")
  c.num_steps = 300                 # 150 leaves late fusion untrained (warm AUC .53)
  c.long_history = 64
  return c


def ranking_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.variants = ("id", "replace", "concat", "gate", "late")   # rankers to train
  c.cold_fraction = 0.1          # share of interacted items held out of training
  c.max_history = 20
  c.num_negatives = 4            # sampled negatives per training positive
  c.eval_negatives = 20          # per evaluation positive (warm and cold pools)
  c.max_train_events = 0         # 0 = every training event
  c.codebook_sizes = (16, 16, 16)  # RQ-KMeans SIDs of the item content
  c.kmeans_iters = 20
  c.d = 32
  # Two layers: the candidate reads the history in the first, the readout reads both in the
  # second; with one, the readout's fixed query cannot attend to the history *given* the
  # candidate (Beauty warm / cold AUC, replace: .666 / .612 with 1 layer, .710 / .662 with 2).
  c.num_layers = 2
  c.num_heads = 2
  c.mlp_dim = 64
  c.dropout = 0.0
  c.num_steps = 1500
  c.batch_size = 256
  c.learning_rate = 2e-3
  c.late_tokens = "family"       # late fusion: one token per code family, or "level"
  # Per-level rates of zeroing a training item's SID level (lrm/models/ranker.py: cold items).
  c.sid_level_dropout = (0.0, 0.2, 0.5)
  # The same for history items (always warm, so these only regularise); None = the above.
  c.history_level_dropout = None
  # Item content for the SIDs: "catalog" = the dataset's own embeddings, else hashed text;
  # "embed" = the pipeline's embed stage (config.embed: MiniLM where configured or cached);
  # "finetuned" = FLUID's contrastively fine-tuned encoder (lrm/jobs/finetune.py, the config file
  # `finetune_config`, "path[:arg]"), its co-consumption pairs read from this split's warm
  # training part only (`finetuned_content`).
  c.content = "catalog"
  c.finetune_config = ""
  # User-side tokens (issue 8 item 2; lrm/tasks/ranking.py): the dataset's user attributes
  # (needs Dataset.users, e.g. MovieLens' .user file) and user-item interaction counts.
  c.user_features = False
  c.user_feature_buckets = 8     # quantile buckets of numeric attributes (age)
  c.interaction_counts = False
  c.count_buckets = 8            # log2 buckets per count token
  c.text_fields = ()             # item text for hashed content; () = title, brand, categories
  # Long-term user token (lrm/models/ranker.py): the last `long_history` visible events (0 =
  # off; at most 512) through the compression transformer (lrm/models/compression.py) with
  # the candidate as query. `long_encoder` holds CompressionConfig fields; d_model is `d`.
  c.long_history = 0
  c.long_encoder = ml_collections.ConfigDict(LONG_ENCODER_DEFAULTS)
  return c


# The long-history encoder's defaults (CompressionConfig fields but d_model); `mixer="full"` is
# the full-attention baseline with the same parameters.
LONG_ENCODER_DEFAULTS = {"mixer": "compress", "num_heads": 2, "head_dim": 16, "mlp_dim": 64,
                         "num_layers": 2, "dropout": 0.0, "fold": 16, "summaries": 4,
                         "num_globals": 4,
                         # Accepted with CompressionConfig's own defaults (not restated here).
                         "recent_windows": CompressionConfig.recent_windows,
                         "summary_reads": CompressionConfig.summary_reads}


# The replay's item towers (lrm/models/two_tower.py TwoTower fields), by variant name.
REPLAY_TOWERS: dict[str, dict[str, Any]] = {
    "id_only": dict(use_item_id=True, use_content=False),
    "cluster_ids": dict(clusters=True, use_content=False),
    "cluster_ids+content": dict(clusters=True),
    "cluster_ids+content+id": dict(clusters=True, use_item_id=True),
}


def replay_defaults() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.variants = tuple(REPLAY_TOWERS)  # item towers to replay (keys of REPLAY_TOWERS)
  c.cold_fraction = 0.1          # share of interacted items held out as new items
  c.max_history = 20             # history items the user tower reads
  c.max_train_events = 0         # 0 = every warm training positive
  c.num_clusters = 64            # k-means cluster IDs of the item content
  c.kmeans_iters = 20
  c.d = 64                       # tower width
  c.temperature = 0.05
  c.train_steps = 1500           # initial training on the warm positives
  c.batch_size = 256
  c.learning_rate = 3e-3         # AdamW, constant; the same optimizer continues each round
  c.rounds = 20                  # replay rounds ("days")
  c.users_per_round = 200        # users served per round (0 = all)
  c.slate_size = 10              # K: impressions per served user
  c.explore_slots = 0            # of the K, slots given to uniformly random unseen items
  c.update_steps = 50            # training steps after each round
  c.click_share = 0.5            # share of each update batch drawn from the round's clicks
  c.click_model = "auto"         # auto | truth (synthetic world) | held_out
  c.click_slope = 8.0            # truth clicks: p = sigmoid(slope * (affinity - midpoint))
  c.click_midpoint = 0.6
  c.eval_k = 20                  # Recall@K on the warm and cold evaluation positives
  return c


def lm_defaults() -> ml_collections.ConfigDict:
  """Every field of the `lm` config section, with its default."""
  lm = ml_collections.ConfigDict()
  lm.variant = ""                 # "" = run_dir/lm; a name = run_dir/lm/<name> (ablations)
  lm.size = "10m"                 # lrm/models/lm.py LM_SIZES name; "" = lm.model fields only
  lm.init_from = ""               # an HF Llama/Qwen checkpoint folder (its tokenizer.json too)
  lm.init_noise_scale = 0.1       # new rows of an HF checkpoint: mean + this x std x N(0, 1)
  # Architecture: size fields of 0 take the size's value; the rest are LMConfig fields.
  lm.model = ml_collections.ConfigDict(dict(
      d_model=0, num_layers=0, num_heads=0, num_kv_heads=0, head_dim=0, mlp_dim=0,
      rope_theta=10000.0, tie_embeddings=True, init_std=0.02, dtype="float32",
      attention_impl="", remat=False,
      dropout=0.0))               # training-only, on embeddings and block outputs (0 = off)
  # The joint vocabulary (lrm/tokens/joint_vocab.py make_joint_vocab).
  lm.vocab = ml_collections.ConfigDict(dict(
      text_tokenizer="bpe",       # bpe (trained on the catalog) or a tokenizer.json path
      bpe_vocab_size=8192, bpe_min_frequency=2, num_sentinels=8,
      pad_id=-1))                 # -1: detect the tokenizer's pad (or add one)
  # Tasks, mixing and packing (lrm/tasks/lm_tasks.py LMTaskConfig; num_examples 0 = all).
  lm.tasks = ml_collections.ConfigDict(dict(
      weights=ml_collections.ConfigDict(dict(sid2text=1.0, text2sid=1.0, next=1.0,
                                             masked=1.0, history=0.0)),
      text_fields=("title", "brand", "categories"), max_field_tokens=48, max_history=20,
      history_titles=False,       # text beside each SID in histories (the mixed document)
      history_fields=("title",),  # ... which fields, in order (a subset of text_fields)
      history_title_tokens=16,    # ... tokens kept per field
      history_text_loss=False,    # history documents also score that text (SID -> text)
      history_overlap=8,
      next_item_prompt="auto",    # auto: history prompts when history is weighted, next not
      max_prompt_tokens=384,
      mask_fraction=0.15, prefix_lm_tasks=("masked",), row_length=512, overflow="truncate",
      open_rows=64, num_examples=0,
      mix_by="share",             # weights as shares of the mix, or "passes" per epoch (dense)
      seed=0))
  # The training loop and optimizer (lrm/train/trainer.py LoopSpec, lrm/train/optimizer.py).
  lm.train = ml_collections.ConfigDict(dict(
      batch_size=32, num_steps=2000, learning_rate=1e-3, warmup_steps=100, decay="cosine",
      end_fraction=0.0, weight_decay=0.01, b1=0.9, b2=0.98, clip_norm=1.0, eval_every=500,
      log_every=50, checkpoint_every=500, patience=0,
      best_metric="valid/ndcg@10",   # or valid/text2sid_acc@10 (valid/recall@k, ...@1)
      best_mode="max", keep_last=2, seed=0, worker_count=0))
  lm.eval = ml_collections.ConfigDict(dict(
      ks=(5, 10), beam_size=20, batch_size=128,
      valid_users=500,            # users in periodic validation (0 = all)
      max_users=0,                # users per split in the final evaluation (0 = all)
      text_holdout=200,           # items whose links are kept out of training (half valid)
      sid2text_tokens=32))        # greedy tokens generated for SID -> text
  lm.cold_start = ml_collections.ConfigDict(dict(fraction=0.0, seed=0, by="random"))
  lm.after_item = ml_collections.ConfigDict(dict(num_items=100, top_k=10))  # 0 items = none
  lm.continued = ml_collections.ConfigDict(dict(
      steps=200, eval_every=20, replay_fraction=0.5, learning_rate=5e-4, batch_size=0,
      eval_items=200,             # new items scored for text -> SID freshness
      threshold=0.5))             # freshness: first step with new-item text->SID acc@10 >= it
  return lm


# lrm finetune's co-consumption pairs (lrm/encoders/pairs.py).
FINETUNE_PAIRS = {"window": 3, "item_to_item": True, "queries": True, "cold_fraction": 0.0,
                  "cold_seed": 0}
