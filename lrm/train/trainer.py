"""One training loop for every model: jitted steps, periodic evaluation, early stopping,
Orbax checkpoints (latest and best), metrics to JSONL + TensorBoard, progress with steps/s.

The model and its optimizer are split once into (graphdef, state); the train step is a pure
jitted function of the state and a batch that returns the new state (donated), the flax NNX
performance pattern. Dropout keys are derived from (seed, step), not carried, so a run resumed
from a checkpoint draws the same dropout masks and the same batches (the Grain iterator's
state is saved with the model) as an uninterrupted one.

What a model brings is a `loss_fn(model, batch) -> (loss, aux dict)`; what it is judged by is
an `evaluate_fn(model) -> dict of metrics` (called in eval mode), both from the caller, so this
stage knows nothing of decoding or metrics (which come later in the data flow). Anything else
that must happen every N steps (a curve through a schedule, a freshness check, a change to the
model) is a `Hook`. Batches come from the training arrays (shuffled epochs through Grain) or
from the caller's own iterator (`batches`, e.g. a replay's mixture of old and new rows).

Light mode (`workdir=None`) is the same loop without checkpoints, metric files or resume: for
quick comparisons and for the inner loops of other jobs (a ranker per variant, a replay
round). It still keeps the best evaluated weights, in memory.

Multi-process jobs (`lrm.parallel.distributed`): every process runs this same loop. Each
reads only its rows of every global batch (the same global batches as one process would see)
and `jax.make_array_from_process_local_data` assembles them; checkpoints are written by all
processes together (Orbax coordinates), metrics and progress by process 0 alone; validation
runs on every process over a gathered copy of the weights, so all take the same decisions.

Preemption: SIGTERM (what SLURM, Kubernetes and TPU maintenance send) makes the loop save a
checkpoint at the step it has reached and raise `Preempted`; the same command then resumes.
After a hard kill (`kill -9`) it resumes from the last periodic checkpoint instead, with the
same batches and the same losses.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import pathlib
import signal
import threading
import time
from typing import Any, Callable, Iterator, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from tqdm import tqdm

from lrm.core.errors import ConfigError, Preempted
from lrm.core.train_step import apply_update
from lrm.parallel.mesh import batch_sharding, make_mesh, replicated
from lrm.parallel.rules import sharding_context
from lrm.tasks.next_item import train_iterator
from lrm.train.checkpoint import Checkpointer
from lrm.train.metric_writers import MetricWriter
from lrm.train.optimizer import optimizer_from_config, schedule_from_config

LossFn = Callable[[nnx.Module, Mapping[str, jax.Array]], tuple[jax.Array, dict]]
EvaluateFn = Callable[[nnx.Module], dict[str, float]]


@dataclasses.dataclass(frozen=True)
class Hook:
  """`fn(step, model)` after every `every` steps and after the last, on the current weights in
  train mode. It may change the model in place (the change is kept); the numbers it returns
  (or None) go to the log and to `TrainResult.history` under that step."""
  every: int
  fn: Callable[[int, nnx.Module], Mapping[str, float] | None]


@dataclasses.dataclass(frozen=True)
class LoopSpec:
  """The loop's own settings (the `train` config section; the optimizer reads the rest)."""
  batch_size: int = 256
  num_steps: int = 10000
  eval_every: int = 1000
  log_every: int = 100
  checkpoint_every: int = 1000
  patience: int = 0            # evaluations without improvement before stopping; 0 = never
  best_metric: str = "valid/ndcg@10"
  best_mode: str = "max"
  keep_last: int = 2
  seed: int = 0
  worker_count: int = 0        # Grain worker processes building batches (0: in process)

  @classmethod
  def from_config(cls, section: Mapping[str, Any], where: str = "train") -> "LoopSpec":
    names = {f.name for f in dataclasses.fields(cls)}
    spec = cls(**{k: v for k, v in dict(section).items() if k in names})
    for name in ("batch_size", "num_steps", "eval_every", "log_every", "checkpoint_every",
                 "keep_last"):
      if int(getattr(spec, name)) < 1:
        raise ConfigError(f"{where}.{name}", f"must be >= 1, got {getattr(spec, name)}")
    if spec.worker_count < 0:
      raise ConfigError(f"{where}.worker_count", f"must be >= 0, got {spec.worker_count}")
    if spec.patience < 0:
      raise ConfigError(f"{where}.patience", f"must be >= 0, got {spec.patience}")
    if spec.best_mode not in ("max", "min"):
      raise ConfigError(f"{where}.best_mode", f"'{spec.best_mode}' is not max or min")
    return spec


def light_section(*, num_steps: int, batch_size: int, learning_rate: float, seed: int = 0,
                  weight_decay: float = 0.0, log_every: int = 50) -> dict[str, Any]:
  """A `train` section for light runs at a constant rate: plain AdamW (b2 .999, eps 1e-8, no
  clipping), evaluation (if any) at the end."""
  return {"batch_size": batch_size, "num_steps": num_steps, "learning_rate": learning_rate,
          "warmup_steps": 0, "decay": "constant", "weight_decay": weight_decay, "b2": 0.999,
          "eps": 1e-8, "clip_norm": 0.0, "eval_every": num_steps,
          "log_every": max(1, min(log_every, num_steps)), "checkpoint_every": num_steps,
          "seed": seed}


@dataclasses.dataclass
class TrainResult:
  """What the loop did: the last step, the best step and its metrics, the time it took.

  Times add up over resumed runs (checkpoints carry them): `wall_s` includes validation,
  `eval_s` is validation alone, `steps_per_s` counts training time only.
  """
  step: int
  best_step: int | None
  best_metrics: dict[str, float]
  history: list[dict[str, Any]]
  stopped_early: bool
  steps_per_s: float
  wall_s: float
  eval_s: float = 0.0
  train_loss: float = math.nan   # mean loss of the last log window (nan: no step ran)


class NonFiniteLossError(RuntimeError):
  """The loss became NaN or inf: training stops instead of writing garbage checkpoints."""


class _TermSignal:
  """Records SIGTERM while installed (main thread only) instead of dying on it."""

  def __init__(self):
    self.received = False
    self._previous = None

  def install(self) -> None:
    if threading.current_thread() is threading.main_thread():
      self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del signum, frame
    logging.warning("train: SIGTERM received; saving a checkpoint at the next step")
    self.received = True

  def uninstall(self) -> None:
    if self._previous is not None:
      signal.signal(signal.SIGTERM, self._previous)
      self._previous = None

  def any_process(self) -> bool:
    """Whether any process got SIGTERM (all processes must stop at the same step)."""
    if jax.process_count() == 1:
      return self.received
    flags = multihost_utils.process_allgather(np.asarray(self.received, np.int32))
    return bool(np.any(flags))


def _better(a: float, b: float | None, mode: str) -> bool:
  if b is None or not math.isfinite(b):
    return math.isfinite(a)
  return a > b if mode == "max" else a < b


def state_shardings(state, mesh: jax.sharding.Mesh):
  """Each leaf's NamedSharding on `mesh` (as the logical rules placed it), else replicated."""
  def sharding(x):
    s = getattr(x, "sharding", None)
    if isinstance(s, NamedSharding) and s.mesh.shape_tuple == mesh.shape_tuple:
      return s
    return replicated(mesh)
  return jax.tree_util.tree_map(sharding, state)


def make_train_step(graphdef: Any, loss_fn: LossFn, seed: int, shardings: Any = None):
  """The jitted step: (state, batch, step) -> (state, aux). State is donated.

  With `shardings` (a tree like the state) the new state keeps exactly the old one's
  placement, so the compiled step is reused every step (otherwise XLA may choose another
  output sharding and the next call recompiles).
  """
  out_shardings = None if shardings is None else (shardings, None)

  @functools.partial(jax.jit, donate_argnums=0, out_shardings=out_shardings)
  def train_step(state, batch, step):
    model, optimizer = nnx.merge(graphdef, state)
    # Dropout keys from (seed, step): resumable without saving RNG state.
    nnx.reseed(model, dropout=jax.random.fold_in(jax.random.key(seed), step))
    _, aux, grads = apply_update(model, optimizer, loss_fn, batch)
    aux = dict(aux)
    aux["grad_norm"] = _global_norm(grads)
    return nnx.state((model, optimizer)), aux

  return train_step


# Light runs repeated on one model (a replay's rounds) reuse one compiled step.
_cached_train_step = functools.lru_cache(maxsize=16)(make_train_step)


def _global_norm(tree) -> jax.Array:
  leaves = jax.tree_util.tree_leaves(tree)
  return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def _host_copy(state):
  """`state` with every array whole on this process, from arrays spread over processes.

  Replicated leaves (RNG keys among them) take this process's own copy; sharded ones are
  gathered (a collective, in the same leaf order on every process).
  """

  def local(x):
    if not isinstance(x, jax.Array) or x.is_fully_addressable:
      return x
    if x.is_fully_replicated:
      return x.addressable_data(0)
    return multihost_utils.process_allgather(x, tiled=True)
  return jax.tree_util.tree_map(local, state)


def _checkpointed(state):
  """What a checkpoint holds: parameters and optimizer state, not RNG streams."""
  return nnx.filter_state(state, nnx.Not(nnx.RngState))


def train(model: nnx.Module, loss_fn: LossFn,
          train_arrays: Mapping[str, np.ndarray] | None = None, *, config: Any,
          workdir: str | pathlib.Path | None = None, evaluate_fn: EvaluateFn | None = None,
          hooks: Sequence[Hook] = (), batches: Iterator[Mapping[str, np.ndarray]] | None = None,
          optimizer: nnx.Optimizer | None = None, mesh: jax.sharding.Mesh | None = None,
          extra: dict | None = None,
          warm_start: Callable[[nnx.Module, nnx.Optimizer], None] | None = None,
          progress: bool | str = True) -> TrainResult:
  """Trains `model` in place (it ends holding the best evaluated weights when there are some).

  `config` is the `train` config section: the LoopSpec fields plus the optimizer's
  (lrm/train/optimizer.py). `train_arrays` are equally long arrays, one row per example, or
  a stream of examples with `iterator(batch_size=, seed=, worker_count=, process_index=,
  process_count=)` giving this process's rows of each batch, resumable (e.g.
  `lrm.tasks.id_sequences.WindowStream`);
  `batches` instead yields ready batches of `batch_size` rows (light mode only: its state is
  not saved). With `workdir`, checkpoints go to workdir/checkpoints (resumed from
  automatically), metrics to workdir/metrics.jsonl and workdir/tensorboard/; without, nothing
  is written (light mode).

  `optimizer` continues an existing `nnx.Optimizer` of `model` (its state kept across calls,
  e.g. replay rounds) instead of building one from `config`, which then needs only the
  LoopSpec fields. `warm_start(model, optimizer)`,
  called only when workdir holds no checkpoint yet, loads a starting point in place (e.g. the
  previous round of continued pretraining). `progress`: a progress bar (a string names it).
  """
  spec = LoopSpec.from_config(config)
  light = workdir is None
  if (train_arrays is None) == (batches is None):
    raise ConfigError("train", "give either train_arrays or batches")
  if batches is not None and not light:
    raise ConfigError("train", "a batch iterator cannot be checkpointed: use train_arrays "
                      "with a workdir")
  for hook in hooks:
    if int(hook.every) < 1:
      raise ConfigError("train.hooks", f"every must be >= 1, got {hook.every}")
  primary = jax.process_index() == 0
  if jax.process_count() > 1 and mesh is None:
    mesh = make_mesh()   # arrays spanning processes need a mesh over all devices
  streamed = train_arrays is not None and not isinstance(train_arrays, Mapping)
  if train_arrays is not None and not streamed:
    n = len(next(iter(train_arrays.values())))
    if n < spec.batch_size:
      raise ConfigError("train.batch_size", f"{spec.batch_size} is larger than the "
                        f"{n} training examples")
  # The optimizer's schedule, for logging the rate (a given optimizer brings its own).
  schedule = schedule_from_config(config) if optimizer is None else None
  model.train()
  if optimizer is None:
    with sharding_context(mesh):  # optimizer state inherits the parameters' annotations
      optimizer = nnx.Optimizer(model, optimizer_from_config(config), wrt=nnx.Param)
  ckpt = None
  if not light:
    workdir = pathlib.Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ckpt = Checkpointer(workdir / "checkpoints", keep_last=spec.keep_last,
                        best_metric=spec.best_metric, best_mode=spec.best_mode)
  if warm_start is not None and (light or ckpt.latest_step() is None):
    warm_start(model, optimizer)
  graphdef, state = nnx.split((model, optimizer))
  iterator = batches
  if streamed:
    iterator = train_arrays.iterator(batch_size=spec.batch_size, seed=spec.seed,
                                     worker_count=spec.worker_count,
                                     process_index=jax.process_index(),
                                     process_count=jax.process_count())
  elif iterator is None:
    iterator = train_iterator(dict(train_arrays), batch_size=spec.batch_size, seed=spec.seed,
                              worker_count=spec.worker_count,
                              process_index=jax.process_index(),
                              process_count=jax.process_count())

  writer = MetricWriter(workdir) if primary and not light else None
  loop = {"best_value": None, "best_step": None, "best_metrics": {}, "evals_since_best": 0,
          "history": []}
  best_state = None   # light mode: a copy of the best weights
  step = 0
  if ckpt is not None and ckpt.latest_step() is not None:
    saved = _checkpointed(state)
    restored, restored_extra = ckpt.restore(saved, step="latest", data_iterator=iterator)
    state = nnx.merge_state(state, restored)
    step = int(ckpt.latest_step())
    loop.update((restored_extra or {}).get("loop", {}))
    logging.info("train: resumed from step %d (%s)", step, workdir / "checkpoints")

  shardings = None
  if mesh is not None:
    shardings = state_shardings(state, mesh)
    state = jax.device_put(state, shardings)
  train_step = (_cached_train_step(graphdef, loss_fn, spec.seed) if shardings is None else
                make_train_step(graphdef, loss_fn, spec.seed, shardings))

  def put(batch):
    batch = {k: np.asarray(v) for k, v in batch.items()}
    if mesh is None:
      return {k: jnp.asarray(v) for k, v in batch.items()}
    if jax.process_count() > 1:   # this process's rows of the global batch
      return {k: jax.make_array_from_process_local_data(
          batch_sharding(mesh, v.ndim), v, (spec.batch_size, *v.shape[1:]))
              for k, v in batch.items()}
    return {k: jax.device_put(v, batch_sharding(mesh, v.ndim)) for k, v in batch.items()}

  def evaluate() -> dict[str, float]:
    eval_start = time.perf_counter()
    weights = state if jax.process_count() == 1 else _host_copy(state)
    current, _ = nnx.merge(graphdef, weights)   # a view of the current weights
    current.eval()
    metrics = {k: float(v) for k, v in evaluate_fn(current).items()}
    loop["eval_s"] = loop.get("eval_s", 0.0) + time.perf_counter() - eval_start
    return metrics

  def run_hooks(at_step: int, last: bool) -> dict[str, float]:
    """The due hooks on a view of the state; what they change in the model is kept."""
    nonlocal state
    due = [h for h in hooks if at_step % h.every == 0 or last]
    if not due:
      return {}
    current, current_opt = nnx.merge(graphdef, state)
    out = {}
    for hook in due:
      out.update({k: float(v) for k, v in (hook.fn(at_step, current) or {}).items()})
    current.train()
    state = nnx.state((current, current_opt))
    if shardings is not None:
      state = jax.device_put(state, shardings)
    return out

  # Time across resumed runs: what the checkpoints recorded plus this process's share.
  start = time.perf_counter()
  wall_before = float(loop.get("wall_s", 0.0))

  def save(at_step: int, metrics: dict[str, float] | None, force: bool = False):
    if ckpt is None:
      return
    loop["wall_s"] = wall_before + time.perf_counter() - start
    ckpt.save(at_step, _checkpointed(state), data_iterator=iterator, metrics=metrics,
              extra={**(extra or {}), "loop": dict(loop)}, force=force)

  window_start, window_steps, sums = time.perf_counter(), 0, {}
  train_loss = math.nan
  stopped_early = False
  bar = None
  term = _TermSignal()
  if not light:
    term.install()
  if progress and primary:
    bar = tqdm(total=spec.num_steps, initial=step, unit="step", mininterval=5,
               desc=progress if isinstance(progress, str) else "train", dynamic_ncols=True)
  try:
    while step < spec.num_steps:
      batch = put(next(iterator))
      state, aux = train_step(state, batch, np.int32(step))
      step += 1
      window_steps += 1
      for k, v in aux.items():
        sums[k] = sums.get(k, 0.0) + v
      if bar is not None:
        bar.update(1)
      last = step == spec.num_steps
      if step % spec.log_every == 0 or last:
        means = {k: float(v) / window_steps for k, v in sums.items()}
        train_loss = means.get("loss", math.nan)
        if not math.isfinite(train_loss):
          where = (f"the last good checkpoint is step {ckpt.latest_step()} in {workdir}"
                   if ckpt is not None else "light mode: nothing was saved")
          raise NonFiniteLossError(f"loss is {train_loss} at step {step}; {where}")
        rate = window_steps / (time.perf_counter() - window_start)
        means["steps_per_s"] = rate
        if schedule is not None:
          means["learning_rate"] = float(schedule(step))
        if writer is not None:
          writer.write(step, means, prefix="train/")
        if bar is not None:
          bar.set_postfix(loss=f"{train_loss:.4f}", refresh=False)
        window_start, window_steps, sums = time.perf_counter(), 0, {}
      record = run_hooks(step, last)
      evaluated = None
      if evaluate_fn is not None and (step % spec.eval_every == 0 or last):
        evaluated = evaluate()
        if writer is not None:
          writer.write(step, evaluated)
        value = evaluated.get(spec.best_metric)
        if value is None:
          raise ConfigError("train.best_metric", f"'{spec.best_metric}' is not among the "
                            f"evaluation's metrics {sorted(evaluated)}")
        if _better(value, loop["best_value"], spec.best_mode):
          loop.update(best_value=value, best_step=step, best_metrics=evaluated,
                      evals_since_best=0)
          if light:
            best_state = jax.tree.map(jnp.copy, _checkpointed(state))  # outlives donation
        else:
          loop["evals_since_best"] += 1
        logging.info("step %d: %s (best %s at step %s)", step,
                     ", ".join(f"{k}={v:.4f}" for k, v in evaluated.items()),
                     spec.best_metric, loop["best_step"])
        if spec.patience and loop["evals_since_best"] >= spec.patience:
          stopped_early = True
        record.update(evaluated)
      if record:
        if writer is not None and evaluated is None:
          writer.write(step, record)
        # Training time so far (validation excluded), for quality-against-minutes curves.
        train_s = wall_before + time.perf_counter() - start - loop.get("eval_s", 0.0)
        loop["history"].append({"step": step, "train_s": round(train_s, 1),
                                "loss": train_loss, **record})
      if evaluated is not None or step % spec.checkpoint_every == 0 or stopped_early:
        save(step, evaluated)
      # One process reads its flag every step; several agree at log steps only, since that
      # takes a collective (the grace period before SIGKILL outlasts a log window).
      if (not light and (jax.process_count() == 1 or step % spec.log_every == 0)
          and term.any_process()):
        save(step, None, force=True)
        ckpt.close()
        raise Preempted(step, workdir / "checkpoints")
      if stopped_early:
        logging.info("train: early stop at step %d, best %s=%.4f at step %d", step,
                     spec.best_metric, loop["best_value"], loop["best_step"])
        break
    save(step, None, force=True)
  finally:
    term.uninstall()
    if bar is not None:
      bar.close()
    if ckpt is not None:
      ckpt.wait()
    if writer is not None:
      writer.close()

  # End holding the best weights (what evaluation and export should see).
  if loop["best_step"] is not None:
    if ckpt is not None and ckpt.best_step() is not None:
      best, _ = ckpt.restore(_checkpointed(state), step="best")
      state = nnx.merge_state(state, best)
    elif best_state is not None:
      state = nnx.merge_state(state, best_state)
  final, final_opt = nnx.merge(graphdef, state)
  nnx.update(model, nnx.state(final))
  nnx.update(optimizer, nnx.state(final_opt))
  if ckpt is not None:
    ckpt.close()
  wall = wall_before + time.perf_counter() - start
  train_s = max(wall - loop.get("eval_s", 0.0), 1e-9)
  return TrainResult(step=step, best_step=loop["best_step"], best_metrics=loop["best_metrics"],
                     history=loop["history"], stopped_early=stopped_early,
                     steps_per_s=step / train_s, wall_s=wall, eval_s=loop.get("eval_s", 0.0),
                     train_loss=train_loss)
