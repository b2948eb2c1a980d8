"""What the jobs share: user subsets, checkpoint folders bound to what trained them, restores
and training summaries."""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable

import jax
import numpy as np
from flax import nnx

from lrm.core import artifacts
from lrm.core.errors import ConfigError
from lrm.data.splits import EvalSet
from lrm.models.layers import count_params
from lrm.train.checkpoint import Checkpointer


def at_workdir(config, workdir: str | pathlib.Path | None):
  """`config` with run_dir set to `workdir` when one is given (the command line's --workdir)."""
  if workdir:
    config.run_dir = str(workdir)
  return config


def sample_rows(n: int, limit: int, seed: int) -> np.ndarray | None:
  """A fixed random subset of at most `limit` of n rows, sorted; None when that is all of them
  (limit 0 = all)."""
  if limit <= 0 or limit >= n:
    return None
  return np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))


def subset(eval_set: EvalSet, rows: np.ndarray | None) -> EvalSet:
  """The EvalSet restricted to the given row positions, in their order (None: all of it)."""
  if rows is None:
    return eval_set
  rows = np.asarray(rows)
  ts = eval_set.target_timestamps
  return EvalSet(user_ids=eval_set.user_ids[rows], histories=eval_set.histories.take_users(rows),
                 targets=eval_set.targets[rows], target_timestamps=None if ts is None else ts[rows])


def sample_users(eval_set: EvalSet, limit: int, seed: int) -> EvalSet:
  """A fixed random subset of at most `limit` users (0 = all), in their original order."""
  return subset(eval_set, sample_rows(len(eval_set.targets), limit, seed))


def has_checkpoints(out: str | pathlib.Path) -> bool:
  """Whether out/checkpoints holds a saved step (an empty folder is not one)."""
  folder = pathlib.Path(out) / "checkpoints"
  return folder.is_dir() and any(p.name.isdigit() for p in folder.iterdir())


def jsonable(x: Any) -> Any:
  """`x` (a dataclass, or a mapping with tuples) as JSON reads it back."""
  return json.loads(json.dumps(dataclasses.asdict(x) if dataclasses.is_dataclass(x) else x,
                               default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def check_spec(out: pathlib.Path, spec: dict[str, Any], *, field: Callable[[str], str] = str,
               other: str = "run_dir") -> None:
  """Binds the checkpoints in `out` to `spec` (out/train_spec.json, written on the first run):
  a later run with another spec is a ConfigError naming `field(key)` of the first key that
  differs, rather than a resume of weights trained on something else."""
  path = out / "train_spec.json"
  spec = jsonable(spec)
  if path.exists():
    saved = json.loads(path.read_text())
    if saved != spec:
      key = sorted(k for k in set(saved) | set(spec) if saved.get(k) != spec.get(k))[0]
      raise ConfigError(field(key), f"differs from the checkpoints in {out} (trained with "
                        f"{saved.get(key)}); use another {other} or delete {out}")
  elif jax.process_index() == 0:
    artifacts.atomic_write_json(path, spec)


def restore(out: pathlib.Path, model: nnx.Module, optimizer: nnx.Optimizer,
            step: int | str = "latest") -> int:
  """Loads out/checkpoints' `step` (latest, best (the latest when none is best), or a number)
  into the model and optimizer; returns the step loaded."""
  with Checkpointer(pathlib.Path(out) / "checkpoints") as ckpt:
    if step == "best" and ckpt.best_step() is None:
      step = "latest"
    state = nnx.state((model, optimizer), nnx.Not(nnx.RngState))
    restored, _ = ckpt.restore(state, step=step)
    nnx.update((model, optimizer), restored)
    return int(ckpt.latest_step() if step == "latest" else
               ckpt.best_step() if step == "best" else step)


def saved_results(path: pathlib.Path, command: str) -> dict[str, Any]:
  """The JSON a job's run wrote, for the `evaluate` of a job whose run is its evaluation."""
  if not path.is_file():
    raise FileNotFoundError(f"{path} not found: run `{command}` first")
  return json.loads(path.read_text())


def train_summary(result, model: nnx.Module, **counts: Any) -> dict[str, Any]:
  """What a job records of a `lrm.train.trainer.train` run (`counts`: its data)."""
  return {"steps": result.step, "best_step": result.best_step,
          "best_valid": result.best_metrics, "stopped_early": result.stopped_early,
          "steps_per_s": round(result.steps_per_s, 3), "train_wall_s": round(result.wall_s, 1),
          "validation_s": round(result.eval_s, 1), "num_params": count_params(model),
          **counts, "history": result.history}
