"""The generative retrieval stage (TIGER protocol), and the SASRec baseline beside it.

  SID table -> next-item examples (lrm/tasks) -> model + trainer (lrm/models, lrm/train)
  -> constrained beam search (lrm/decode) -> Recall/NDCG@K over all items (lrm/eval)

Leave-one-out: each user's last item is the test target, the second-last the validation
target; training examples are every prefix of the rest (at most `task.max_history` items).
Periodic validation during training uses `eval.valid_users` users (a fixed random subset, so
early stopping is cheap); the final evaluation ranks every validation and test user.

A model trains in run_dir/retrieval/<model.name>/: checkpoints/ (latest + best), metrics.jsonl,
tensorboard/, train_spec.json (what the checkpoints are bound to: model, task and the SID
artifact they were trained on), and after evaluation predictions_{valid,test}.jsonl and
metrics.json. run_dir/results.json gains a "retrieval" section with every evaluated model.
"""

from __future__ import annotations

import dataclasses
import functools
import pathlib
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils

from lrm.core import artifacts
from lrm.core.errors import ConfigError
from lrm.data.layout import read_dataset
from lrm.data.splits import leave_one_out
from lrm.data.tfds import SequenceRecords, user_source
from lrm.decode import parallel
from lrm.decode.generative import pad_rows, recommend
from lrm.eval.metrics import drop_seen, most_popular_ranking, retrieval_metrics
from lrm.eval.report import results_table, write_predictions
from lrm.jobs import stages
from lrm.jobs.common import (at_workdir, check_spec, has_checkpoints, restore, sample_rows,
                             subset, train_summary)
from lrm.models.decoder_only import DecoderOnly, DecoderOnlyConfig, decoder_only_loss
from lrm.models.layers import count_params
from lrm.models.rpg import RPG, RPGConfig, rpg_loss
from lrm.models.sasrec import SASRec, SASRecConfig, sasrec_loss, score_items
from lrm.models.tiger import Seq2Seq, Seq2SeqConfig, seq2seq_loss
from lrm.parallel.mesh import mesh_from_config
from lrm.parallel.rules import sharding_context
from lrm.sid.table import SIDTable
from lrm.sid.trie import trie_from_table
from lrm.tasks.id_sequences import WindowStream, eval_inputs as sasrec_inputs, sequence_examples
from lrm.tasks.next_item import eval_examples, tokenize, training_examples
from lrm.tokens.sid_vocab import SIDVocab
from lrm.train.optimizer import optimizer_from_config
from lrm.train.trainer import LoopSpec, train

MODELS = ("tiger", "decoder", "sasrec", "rpg")
GENERATIVE = ("tiger", "decoder")   # decode SIDs with beam search; the rest score items
WINDOWED = ("sasrec", "rpg")         # SASRec's windows: every position of a user learns
# RPG's graph decoding (Beauty: 100 edges, 3 steps); entries: the most popular training items
# the beams start from.
GRAPH_DEFAULTS = {"num_edges": 100, "steps": 3, "entries": 256}
DECODERS = ("exact", "graph", "beam")  # rpg: every item scored, RPG's item graph, or the trie
SPLITS = ("valid", "test")


@dataclasses.dataclass
class Prepared:
  """Everything the models read, derived from the dataset and the SID table."""
  dataset: Any
  split: Any                 # LeaveOneOut
  table: Any                 # SIDTable (with the collision level when the SID stage added it)
  vocab: Any                 # SIDVocab
  trie: Any                  # SIDTrie over the table's full codes
  sid_id: str                # the SID artifact's id (checkpoints are bound to it)
  max_history: int
  sasrec_length: int         # SASRec's input length (its own history window)
  rpg_length: int = 50       # RPG's input window
  users: Any = None          # user records to stream windows from (data.stream), else None


def prepare(config, dataset, sid_dir: pathlib.Path) -> Prepared:
  table = SIDTable.load(sid_dir)
  if not np.array_equal(np.asarray(table.item_ids), np.asarray(dataset.catalog.item_ids)):
    raise ConfigError("sid", f"the SID table in {sid_dir} is for another catalog; refit it")
  vocab = SIDVocab(table.full_codebook_sizes, num_user_tokens=int(config.task.num_user_tokens))
  return Prepared(dataset=dataset, split=leave_one_out(dataset.sequences), table=table,
                  vocab=vocab, trie=trie_from_table(table), sid_id=artifacts.artifact_id(sid_dir),
                  max_history=int(config.task.max_history),
                  sasrec_length=int(config.model.sasrec.max_length),
                  rpg_length=int(config.model.rpg.max_length), users=user_records(config, dataset))


def user_records(config, dataset) -> Any:
  """The user records windows stream from (data.stream): the TFDS ArrayRecord users, read by
  index, or the in-memory sequences behind the same interface; None without data.stream."""
  if not config.data.stream:
    return None
  if config.data.source == "tfds":
    return user_source(config.data.tfds, config.data.data_dir)
  return SequenceRecords(dataset.sequences)


def window_length(prep: Prepared, name: str) -> int:
  return prep.rpg_length if name == "rpg" else prep.sasrec_length


# -- models ------------------------------------------------------------------------------------

def model_hyper(config, name: str) -> dict[str, Any]:
  if name not in MODELS:
    raise ConfigError("model.name", f"'{name}' is not one of {MODELS}")
  return config.model[name].to_dict()


def build_model(config, prep: Prepared, name: str, *, rngs: nnx.Rngs):
  """(model, loss_fn) for `model.name`."""
  hyper = model_hyper(config, name)
  if name == "tiger":
    cfg = Seq2SeqConfig.from_vocab(prep.vocab, max_history=prep.max_history, hyper=hyper,
                                   where="model.tiger")
    return Seq2Seq(cfg, rngs=rngs), seq2seq_loss
  if name == "decoder":
    cfg = DecoderOnlyConfig.from_vocab(prep.vocab, max_history=prep.max_history, hyper=hyper,
                                       where="model.decoder")
    return DecoderOnly(cfg, rngs=rngs), decoder_only_loss
  if name == "rpg":
    cfg = RPGConfig.from_dict({"num_items": len(prep.dataset.catalog),
                               "codebook_sizes": prep.table.full_codebook_sizes, **hyper},
                              where="model.rpg")
    return (RPG(cfg, prep.table.full_codes, rngs=rngs),
            windowed_loss_for(prep, name, int(config.train.batch_size), rpg_loss,
                              last_only=cfg.loss_positions == "last"))
  cfg = SASRecConfig.from_dict({"num_items": len(prep.dataset.catalog), **hyper},
                               where="model.sasrec")
  return SASRec(cfg, rngs=rngs), windowed_loss_for(prep, name, int(config.train.batch_size),
                                                   sasrec_loss)


def windowed_loss_for(prep: Prepared, name: str, batch_size: int, loss, *,
                      last_only: bool = False):
  """A windowed model's loss scoring only target positions (a static number of them).

  The full [b, l, items] logits are mostly padding on short-history data (Beauty: ~12% of
  positions have a target at l = 50) and dominate the step. The cap is the mean targets per
  batch plus 5 standard deviations of a random batch's sum, rounded up to 128 (Beauty, l 50:
  2,176 of 12,800 positions; the largest of 2,000 random batches held 1,833), so a batch over
  it comes about once in 3 million; the loss logs `dropped_targets` if one ever does.
  `last_only`: the loss keeps only each window's last target (RPG's `loss_positions` ablation).
  """
  length = window_length(prep, name)
  targets = sequence_examples(prep.split.train, prep.dataset.catalog,
                              max_length=length)["targets"]
  if last_only:
    targets = targets[:, -1:]
  counts = (targets > 0).sum(axis=1)
  bound = int(np.ceil(counts.mean() * batch_size + 5 * counts.std() * np.sqrt(batch_size)))
  if bound >= batch_size * length:
    return loss
  return functools.partial(loss, max_targets=-(-bound // 128) * 128)


def training_arrays(prep: Prepared, name: str) -> dict[str, np.ndarray] | WindowStream:
  """The model's training examples: arrays in memory, or a stream of windows (data.stream)."""
  if prep.users is not None:
    if name not in WINDOWED:
      raise ConfigError("data.stream", f"streams the windows of {WINDOWED}; {name} trains "
                        "from examples built in memory (set data.stream=False)")
    return WindowStream(prep.users, prep.dataset.catalog, max_length=window_length(prep, name))
  if name in GENERATIVE:
    ex = training_examples(prep.split.train, prep.dataset.catalog, max_history=prep.max_history)
    return tokenize(ex, prep.table, prep.vocab)
  return sequence_examples(prep.split.train, prep.dataset.catalog,
                           max_length=window_length(prep, name))


def eval_inputs(prep: Prepared, name: str, split: str,
                users: np.ndarray | None = None) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Model inputs and target item ids of one evaluation split (optionally a user subset)."""
  eval_set = subset(getattr(prep.split, split), users)
  targets = np.asarray(eval_set.targets)
  if name in GENERATIVE:
    ex = eval_examples(eval_set, prep.dataset.catalog, max_history=prep.max_history)
    return tokenize(ex, prep.table, prep.vocab), targets
  return {"inputs": sasrec_inputs(eval_set, prep.dataset.catalog,
                                  max_length=window_length(prep, name))}, targets


def rank(model, name: str, prep: Prepared, inputs: dict[str, np.ndarray], *, k: int,
         beam_size: int, batch_size: int, constrained: bool = True,
         progress: bool = False, decoder: str = "exact",
         graph: dict[str, int] | None = None) -> tuple[np.ndarray, dict[str, float]]:
  """The top-k item ids per user, and decoding stats. Shape: -> int64 [n, k].

  `decoder` (rpg only): "exact" scores every item; "graph" moves `beam_size` beams over RPG's
  item graph (`graph`: num_edges, steps, entries; the defaults of `eval.graph`); "beam"
  searches the code trie with `beam_size` beams. The last two cost the same whatever the
  catalog's size.
  """
  if name in GENERATIVE:
    rec = recommend(model, inputs["encoder_tokens"], inputs["encoder_mask"], prep.trie,
                    beam_size=max(beam_size, k), top_k=k, batch_size=batch_size,
                    constrained=constrained, progress=progress)
    return rec.items, {"invalid_rate": rec.invalid_rate, "users_per_s": rec.users_per_s}
  if name == "rpg":
    if decoder not in DECODERS:
      raise ConfigError("eval.decoder", f"'{decoder}' is not one of {DECODERS}")
    if decoder == "exact":
      fn = parallel.rank_exact
    elif decoder == "beam":
      fn = functools.partial(parallel.rank_beam, trie=prep.trie, beam_size=max(beam_size, k))
    else:
      options = {**GRAPH_DEFAULTS, **(graph or {})}
      entries = prep.dataset.catalog.rows(most_popular_ranking(prep.split.train,
                                                               int(options["entries"])))
      fn = functools.partial(parallel.rank_graph, beam_size=max(beam_size, k),
                             steps=int(options["steps"]), entries=entries,
                             graph=parallel.item_graph(model, num_edges=int(options["num_edges"])))
    items, stats = fn(model, inputs["inputs"], np.asarray(prep.dataset.catalog.item_ids), k=k,
                      batch_size=batch_size)
    return items, stats
  return _rank_scores(model, prep, inputs["inputs"], k=k, batch_size=batch_size)


def _rank_scores(model, prep: Prepared, inputs: np.ndarray, *, k: int,
                 batch_size: int) -> tuple[np.ndarray, dict[str, float]]:
  model.eval()
  graphdef, params = nnx.split(model)

  @jax.jit
  def scores_of(params, x):
    return score_items(nnx.merge(graphdef, params), x)

  top = lambda params, x: parallel.top_k_columns(scores_of(params, x), k)

  item_ids = np.asarray(prep.dataset.catalog.item_ids)
  out, start = [], time.perf_counter()
  for lo in range(0, len(inputs), batch_size):
    x = inputs[lo:lo + batch_size]
    m = len(x)
    x = pad_rows(x, batch_size)
    out.append(np.asarray(top(params, jnp.asarray(x)))[:m])
  # Full ranking over all items is the top-k of all scores, taken on device per batch.
  rows = np.concatenate(out) if out else np.zeros((0, k), np.int64)
  rate = len(inputs) / (time.perf_counter() - start)
  return item_ids[rows].astype(np.int64), {"users_per_s": rate}


def make_evaluate_fn(config, prep: Prepared, name: str) -> Callable[[nnx.Module], dict]:
  """Validation metrics on a fixed user subset, prefixed `valid/` (the trainer's best metric)."""
  users = sample_rows(len(prep.split.valid.targets), int(config.eval.valid_users),
                      int(config.seed))
  inputs, targets = eval_inputs(prep, name, "valid", users)
  ks = tuple(int(x) for x in config.eval.ks)

  def evaluate(model) -> dict[str, float]:
    ranked, _ = rank(model, name, prep, inputs, k=max(ks), beam_size=int(config.eval.beam_size),
                     batch_size=int(config.eval.batch_size), decoder="exact")
    return {f"valid/{m}": v for m, v in retrieval_metrics(ranked, targets, ks).items()}

  return evaluate


# -- stages ------------------------------------------------------------------------------------

def model_dir(run_dir: pathlib.Path, name: str) -> pathlib.Path:
  return pathlib.Path(run_dir) / "retrieval" / name


def _train_spec(config, prep: Prepared, name: str) -> dict[str, Any]:
  return {"model": name, "hyper": model_hyper(config, name), "task": config.task.to_dict(),
          "sid": prep.sid_id, "num_items": len(prep.dataset.catalog)}


def train_model(config, run_dir: pathlib.Path, prep: Prepared, name: str, *,
                mesh=None, warm_start=None) -> dict[str, Any]:
  """Trains (or resumes) one model; returns its training summary.

  `warm_start(model, optimizer)` loads a starting point before the first step of a fresh run
  (continued pretraining); a run with checkpoints resumes from them instead.
  """
  out = model_dir(run_dir, name)
  spec = _train_spec(config, prep, name)
  out.mkdir(parents=True, exist_ok=True)
  check_spec(out, spec, field=lambda key: f"model.{name}" if key == "hyper" else key)
  # worker_count changes only speed (Grain's batches are the same with any number of workers).
  train_cfg = {k: v for k, v in config.train.to_dict().items() if k != "worker_count"}
  stage_config = {**spec, "train": train_cfg}
  if prep.users is not None:   # other batches: not the same run as one from memory
    stage_config["stream"] = True
  inputs = {"sid": prep.sid_id}
  if config.resume and artifacts.is_complete(out, stage_config, inputs):
    logging.info("retrieval/%s: reusing %s", name, out)
    return artifacts.read_manifest(out)["summary"]
  (out / artifacts.MANIFEST).unlink(missing_ok=True)   # training again: not complete until done
  seed = int(config.seed)
  model, loss_fn = build_model_on(mesh, config, prep, name, seed)
  arrays = training_arrays(prep, name)
  logging.info("retrieval/%s: %d training %s, %d parameters", name, num_rows(arrays),
               "users (streamed)" if prep.users is not None else "examples", count_params(model))
  result = train(model, loss_fn, arrays, config=config.train, workdir=out,
                 evaluate_fn=make_evaluate_fn(config, prep, name), mesh=mesh,
                 extra={"train_spec": spec, "config": config.to_dict()},
                 warm_start=warm_start)
  count = "streamed_users" if prep.users is not None else "num_examples"
  summary = train_summary(result, model, **{count: num_rows(arrays)})
  if jax.process_index() == 0:
    artifacts.write_manifest(out, stage=f"retrieval/{name}", config=stage_config,
                             inputs=inputs, summary=summary)
  return summary


def num_rows(arrays) -> int:
  """Examples of in-memory arrays; users of a stream (its examples are known by reading it)."""
  return len(arrays) if isinstance(arrays, WindowStream) else len(next(iter(arrays.values())))


def build_model_on(mesh, config, prep: Prepared, name: str, seed: int):
  """Builds the model with its parameters placed by the logical-axis rules on `mesh`."""
  with sharding_context(mesh):
    return build_model(config, prep, name, rngs=nnx.Rngs(params=seed, dropout=seed + 1))


def load_trained(config, run_dir: pathlib.Path, prep: Prepared, name: str):
  """The model with its best (else latest) checkpoint's weights."""
  return load_training_state(config, run_dir, prep, name, step="best")[0]


def load_training_state(config, run_dir: pathlib.Path, prep: Prepared, name: str, *,
                        step: str | int = "latest"):
  """(model, optimizer) as a checkpoint saved them; `step`: latest, best (else the latest) or
  a number."""
  out = model_dir(run_dir, name)
  seed = int(config.seed)
  model, _ = build_model(config, prep, name, rngs=nnx.Rngs(params=seed, dropout=seed + 1))
  if not has_checkpoints(out):
    raise FileNotFoundError(f"no checkpoints of {name} in {out / 'checkpoints'}: "
                            f"run `lrm train` first")
  opt = nnx.Optimizer(model, optimizer_from_config(config.train), wrt=nnx.Param)
  restore(out, model, opt, step)
  return model, opt


def evaluate_model(config, run_dir: pathlib.Path, prep: Prepared, name: str,
                   model=None) -> dict[str, Any]:
  """Ranks every validation and test user; writes predictions and metrics; returns them."""
  out = model_dir(run_dir, name)
  model = load_trained(config, run_dir, prep, name) if model is None else model
  ks = tuple(int(x) for x in config.eval.ks)
  record: dict[str, Any] = {}
  decoder = str(config.eval.get("decoder", "exact"))
  for split in SPLITS:
    inputs, targets = eval_inputs(prep, name, split)
    histories = getattr(prep.split, split).histories
    # Models that score every item also give eSASRec's protocol (history items dropped from
    # the ranking) from a list long enough to survive the drop.
    seen_protocol = name in WINDOWED and not (name == "rpg" and decoder != "exact")
    depth = max(ks) + (int(histories.lengths.max(initial=0)) if seen_protocol else 0)
    start = time.perf_counter()
    ranked, stats = rank(model, name, prep, inputs, k=depth,
                         beam_size=int(config.eval.beam_size),
                         batch_size=int(config.eval.batch_size), progress=True, decoder=decoder,
                         graph=config.eval.get("graph", {}))
    top = ranked[:, :max(ks)]
    write_predictions(out / f"predictions_{split}.jsonl", getattr(prep.split, split).user_ids,
                      top)
    record[split] = {**retrieval_metrics(top, targets, ks),
                     **{k: round(float(v), 4) for k, v in stats.items()},
                     "users": int(len(targets)), "wall_s": round(time.perf_counter() - start, 2)}
    if name == "rpg":
      record[split]["decoder"] = decoder
    if seen_protocol:
      unseen = drop_seen(ranked, histories, k=max(ks))
      record[split]["history_excluded"] = retrieval_metrics(unseen, targets, ks)
  artifacts.atomic_write_json(out / "metrics.json", record)
  return record


def popularity(prep: Prepared, ks) -> dict[str, Any]:
  ranking = most_popular_ranking(prep.split.train, max(ks))
  out = {}
  for split in SPLITS:
    targets = np.asarray(getattr(prep.split, split).targets)
    out[split] = retrieval_metrics(np.broadcast_to(ranking, (len(targets), len(ranking))),
                                   targets, ks)
  return out


def report(config, prep: Prepared, records: dict[str, dict]) -> str:
  """The test table beside TIGER's published numbers (printed and returned)."""
  name = getattr(prep.dataset, "name", "")
  dataset_key = {"beauty": "amazon_beauty", "sports": "amazon_sports"}.get(
      str(name).replace("amazon_", ""), str(name))
  table = results_table({k: v["test"] for k, v in records.items()}, dataset_key)
  print(table)
  return table


# -- the job -----------------------------------------------------------------------------------

def validate(config) -> None:
  """The stages' checks (lrm.jobs.stages.validate), then this stage's when it trains."""
  stages.validate(config)
  if int(config.train.num_steps) > 0:
    model_hyper(config, config.model.name)
    LoopSpec.from_config(config.train)
    optimizer_from_config(config.train)


def retrieval_stage(config, run_dir: pathlib.Path, dataset, *,
                    evaluate: bool = True) -> dict[str, Any]:
  """Trains `model.name` on the SIDs (resuming), then ranks every validation and test user."""
  prep = prepare(config, dataset, run_dir / "sid")
  name = config.model.name
  mesh = mesh_from_config(config.mesh)
  summary = train_model(config, run_dir, prep, name, mesh=mesh)
  out: dict[str, Any] = {"model": name, "train": summary}
  if evaluate:
    out.update(evaluate_stage(config, run_dir, dataset, prep=prep, models=(name,)))
  return out


def evaluate_stage(config, run_dir: pathlib.Path, dataset, *, prep=None,
                   models: tuple[str, ...] | None = None) -> dict[str, Any]:
  """Evaluates the trained models found under run_dir/retrieval; prints the test table."""
  prep = prep or prepare(config, dataset, run_dir / "sid")
  ks = tuple(int(k) for k in config.eval.ks)
  if models is None:
    models = tuple(m for m in MODELS if has_checkpoints(model_dir(run_dir, m)))
  if not models:
    raise FileNotFoundError(f"no trained model under {run_dir / 'retrieval'}: run `lrm train`")
  records = {"popularity": popularity(prep, ks)}
  for name in models:
    records[name] = evaluate_model(config, run_dir, prep, name)
  report(config, prep, records)
  return {"evaluated": records}


def run_pipeline(config, *, train: bool = True, evaluate: bool = True) -> dict[str, Any]:
  """The data, embed and SID stages, then training and evaluation of `model.name` (the main
  job's work, lrm/jobs/pipeline.py); returns (and writes to run_dir/results.json) the results.

  In a multi-process job, process 0 builds the data, embedding and SID artifacts while the
  others wait, then every process reads them and trains together; evaluation (one process's
  work) is left to `lrm evaluate`.
  """
  start = time.perf_counter()
  validate(config)   # on every process, before any of them waits for another
  multi = jax.process_count() > 1
  if multi:
    if jax.process_index() == 0:
      stages.prepare_stages(config)
    multihost_utils.sync_global_devices("lrm: artifacts prepared")
  run_dir, dataset, results = stages.prepare_stages(config)
  if train and int(config.train.num_steps) > 0:
    if multi and evaluate:
      logging.info("multi-process job: training only; evaluate with `lrm evaluate --workdir=%s`",
                   run_dir)
    results["retrieval"] = retrieval_stage(config, run_dir, dataset,
                                           evaluate=evaluate and not multi)
  results["wall_s"] = round(time.perf_counter() - start, 3)
  if jax.process_index() != 0:
    return results
  return stages.write_results(run_dir, results)


def run(config, workdir=None) -> dict[str, Any]:
  """`lrm train`: the stages, then training (resumed) of `model.name` in `workdir` (default:
  config.run_dir); `evaluate` ranks the users afterwards."""
  return run_pipeline(at_workdir(config, workdir), evaluate=False)


def evaluate(config, workdir=None, *, models: tuple[str, ...] | None = None) -> dict[str, Any]:
  """`lrm evaluate`: ranks every validation and test user with the trained `models` (default:
  every one with checkpoints); merges the "retrieval" section into run_dir/results.json."""
  config = at_workdir(config, workdir)
  validate(config)
  run_dir = pathlib.Path(config.run_dir)
  data_dir = stages.layout_dir(config, run_dir)
  results = evaluate_stage(config, run_dir, read_dataset(data_dir), models=models)
  return stages.write_results(run_dir, {"retrieval": results})
