"""Checkpoints with Orbax: the latest N steps plus the best step by a metric.

One step directory holds up to three items: `state` (a pytree of jax arrays, e.g.
`nnx.state((model, optimizer))`), `extra` (JSON: the run config, the SID table's artifact id,
...) and `data_iter` (the grain iterator's position). Orbax also writes the step's metrics.

Retention is one `CheckpointManager` whose preservation policy is
`AnyPreservationPolicy([LatestN(keep_last), BestN(n=1)])`: a step survives if either policy
keeps it. That is orbax's own mechanism (present since orbax 0.12.4, the GPU machine's
version), so deletion happens in orbax's save finaliser, after the new step is committed, and
there is one directory of steps to restore from. Two managers (latest/ and best/) would write
the best step twice and could disagree after a crash between the two saves.

A save counts for "best" only when its metrics hold a finite `best_metric`; other saves are
handed to orbax without metrics, and `BestN(keep_checkpoints_without_metrics=False)` then never
keeps them for being best (LatestN may still keep them).
"""

from __future__ import annotations

import math
import os
import pathlib
from typing import Any, Self

import grain
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

STATE = "state"
EXTRA = "extra"
DATA_ITER = "data_iter"
BEST_MODES = ("max", "min")


class Checkpointer:
  """Saves and restores training state, keeping the latest `keep_last` steps and the best one.

  Use as a context manager, or call `close()` at the end: with `async_save`, writes finish in
  a background thread and the last one is only complete after `wait()` / `close()`.
  """

  def __init__(self, directory: str | os.PathLike, *, keep_last: int = 2,
               best_metric: str | None = None, best_mode: str = "max",
               async_save: bool = True):
    if not isinstance(keep_last, int) or keep_last < 1:
      raise ValueError(f"keep_last must be an integer >= 1, got {keep_last!r}")
    if best_mode not in BEST_MODES:
      raise ValueError(f"best_mode must be one of {BEST_MODES}, got {best_mode!r}")
    self.directory = pathlib.Path(directory).absolute()
    self.best_metric = best_metric
    self.best_mode = best_mode
    policies = [checkpoint_managers.LatestN(n=keep_last)]
    best_fn = None
    if best_metric is not None:
      best_fn = self._metric_value
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=best_fn, reverse=best_mode == "min", n=1,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        # best_fn / best_mode only rank steps for best_step(); the policy does the deleting.
        best_fn=best_fn, best_mode=best_mode,
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        enable_async_checkpointing=async_save, create=True)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def _metric_value(self, metrics: dict[str, float]) -> float:
    # Steps written under another best_metric lack the key: rank them worst, never best.
    worst = -math.inf if self.best_mode == "max" else math.inf
    value = metrics.get(self.best_metric) if isinstance(metrics, dict) else None
    return worst if value is None else float(value)

  def _orbax_metrics(self, metrics: dict[str, Any] | None) -> dict[str, float] | None:
    """The metrics orbax ranks this step by; None unless they hold a finite best_metric."""
    if self.best_metric is None or not metrics or self.best_metric not in metrics:
      return None
    out = {k: float(v) for k, v in metrics.items()}
    if not math.isfinite(out[self.best_metric]):
      return None
    # JSON has no NaN / inf; keep only the finite ones.
    return {k: v for k, v in out.items() if math.isfinite(v)}

  def save(self, step: int, state: Any, *, data_iterator: Any = None,
           metrics: dict[str, float] | None = None, extra: dict | None = None,
           force: bool = False) -> bool:
    """Starts saving `state` (and the iterator position and `extra`) as `step`.

    Returns whether a save was started: False when the step is already saved (even with
    `force`: a final forced save may land on a step an eval just saved) or orbax's save
    decision policy skips it (a step before the latest one, after a resume); `force`
    overrides the policy only. Arrays are copied to host before this returns, so the caller
    may donate or overwrite them right after.
    """
    if int(step) in self._manager.all_steps():
      return False  # Orbax would raise StepAlreadyExistsError under force.
    items = {STATE: ocp.args.StandardSave(state)}
    if extra is not None:
      items[EXTRA] = ocp.args.JsonSave(extra)
    if data_iterator is not None:
      items[DATA_ITER] = grain.checkpoint.CheckpointSave(data_iterator)
    return self._manager.save(int(step), args=ocp.args.Composite(**items),
                              metrics=self._orbax_metrics(metrics), force=force)

  def all_steps(self) -> list[int]:
    """Steps on disk (or being written), ascending."""
    return sorted(self._manager.all_steps())

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the best `best_metric`; None without best_metric or without such steps."""
    if self.best_metric is None:
      return None
    return self._manager.best_step()

  def restore(self, abstract_state: Any, *, step: int | str = "latest",
              data_iterator: Any = None) -> tuple[Any, dict]:
    """Restores `(state, extra)` from `step` ("latest", "best" or an int).

    `abstract_state` (from `nnx.eval_shape` / `jax.eval_shape`) gives the tree, dtypes and,
    through the ShapeDtypeStructs' shardings, the layout to restore onto: it may differ from
    the layout at save time. With `data_iterator`, its position is restored in place when the
    step saved one. `extra` is {} when the step saved none.

    Raises:
      FileNotFoundError: no such step (or no checkpoint at all) in the directory.
    """
    self._manager.wait_until_finished()  # A step still being written can't be read.
    resolved = self._resolve_step(step)
    present = {item for item in (EXTRA, DATA_ITER) if self._has_item(resolved, item)}
    items = {STATE: ocp.args.StandardRestore(abstract_state)}
    if EXTRA in present:
      items[EXTRA] = ocp.args.JsonRestore()
    if data_iterator is not None and DATA_ITER in present:
      items[DATA_ITER] = grain.checkpoint.CheckpointRestore(data_iterator)
    restored = self._manager.restore(resolved, args=ocp.args.Composite(**items))
    extra = restored[EXTRA] if EXTRA in present else {}
    return restored[STATE], extra or {}

  def _resolve_step(self, step: int | str) -> int:
    steps = self.all_steps()
    if not steps:
      raise FileNotFoundError(f"no checkpoint in {self.directory}")
    if step == "latest":
      return steps[-1]
    if step == "best":
      best = self.best_step()
      if best is None:
        raise FileNotFoundError(
            f"no best checkpoint in {self.directory}: " +
            ("the Checkpointer has no best_metric" if self.best_metric is None else
             f"no saved step has a finite {self.best_metric!r} metric"))
      return best
    if isinstance(step, str) or int(step) not in steps:
      raise FileNotFoundError(
          f"no checkpoint for step {step!r} in {self.directory}; steps there: {steps}")
    return int(step)

  def _has_item(self, step: int, item: str) -> bool:
    # Orbax's default step naming: the step number, with no prefix (we set none).
    return (self.directory / str(step) / item).exists()

  def wait(self) -> None:
    """Blocks until pending saves are committed (and old steps deleted)."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending saves, then releases orbax's threads."""
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> Self:
    return self

  def __exit__(self, *exc_info) -> None:
    self.close()
