"""AdamW with gradient clipping and a warmup + decay learning-rate schedule.

Weight decay applies only to parameters with ndim >= 2 (kernels, embedding tables): decaying
biases and norm scales pulls them towards 0 for no regularisation benefit (BERT, T5 and the
flax examples exclude them too). The mask is a callable on the params pytree, so it works on
whatever tree `tx.init` sees, including the `nnx.State` that `nnx.Optimizer` passes.

Config field names in errors are those of the `train` section (`train.num_steps` is the total
step count that `make_schedule` calls `total_steps`).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import jax
import jax.numpy as jnp
import optax

from lrm.core.errors import ConfigError

DECAYS = ("constant", "cosine", "inverse_sqrt", "linear")


def make_schedule(*, learning_rate: float, warmup_steps: int, decay: str, total_steps: int,
                  end_fraction: float = 0.0) -> optax.Schedule:
  """Linear warmup from 0 to `learning_rate` over `warmup_steps`, then `decay`.

  Decays (step s, warmup w, total T, peak lr, end = end_fraction * lr):
    constant: lr.
    cosine: lr -> end along a half cosine over [w, T], then end.
    linear: lr -> end linearly over [w, T], then end.
    inverse_sqrt: lr * sqrt(w / s) (T5, TIGER); needs w > 0, ignores T and end_fraction.
  """
  _check_schedule(learning_rate=learning_rate, warmup_steps=warmup_steps, decay=decay,
                  total_steps=total_steps, end_fraction=end_fraction)
  lr = float(learning_rate)
  w = int(warmup_steps)
  decay_steps = int(total_steps) - w
  end = end_fraction * lr
  if decay == "constant":
    after = optax.constant_schedule(lr)
  elif decay == "cosine":
    after = optax.cosine_decay_schedule(lr, decay_steps=decay_steps, alpha=end_fraction)
  elif decay == "linear":
    after = optax.linear_schedule(lr, end, transition_steps=decay_steps)
  else:  # inverse_sqrt; join_schedules hands it `s - w`.
    after = lambda count: lr * jnp.sqrt(w / (jnp.asarray(count, jnp.float32) + w))
  if w == 0:
    return after
  warmup = optax.linear_schedule(0.0, lr, transition_steps=w)
  return optax.join_schedules([warmup, after], boundaries=[w])


def learning_rate_at(schedule: optax.Schedule, step: int) -> float:
  """The schedule's value at `step`, as a Python float (for logs)."""
  return float(schedule(step))


def decay_mask(params: Any) -> Any:
  """True for the leaves weight decay applies to: arrays with ndim >= 2."""
  return jax.tree.map(lambda p: jnp.ndim(p) >= 2, params)


def make_optimizer(*, learning_rate: float, warmup_steps: int, decay: str, total_steps: int,
                   weight_decay: float = 0.01, b1: float = 0.9, b2: float = 0.98,
                   eps: float = 1e-9, clip_norm: float = 1.0,
                   end_fraction: float = 0.0) -> optax.GradientTransformation:
  """Global-norm clipping (off when clip_norm <= 0), then AdamW on `make_schedule`.

  Defaults are the Transformer / T5 ones (b2 0.98, eps 1e-9) that TIGER-style SID models use.
  Use with `nnx.Optimizer(model, tx, wrt=nnx.Param)`.
  """
  _check_adam(weight_decay=weight_decay, b1=b1, b2=b2, eps=eps, clip_norm=clip_norm)
  schedule = make_schedule(learning_rate=learning_rate, warmup_steps=warmup_steps, decay=decay,
                           total_steps=total_steps, end_fraction=end_fraction)
  adamw = optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay,
                      mask=decay_mask)
  if clip_norm <= 0:
    return adamw
  return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)


# Optional fields of the train section, with the defaults of make_optimizer.
_OPTIONAL = {"weight_decay": 0.01, "b1": 0.9, "b2": 0.98, "eps": 1e-9, "clip_norm": 1.0,
             "end_fraction": 0.0}
_REQUIRED = ("learning_rate", "warmup_steps", "decay", "num_steps")


def _config_kwargs(train_cfg: Any) -> dict[str, Any]:
  """make_optimizer's keyword arguments from the `train` section (ConfigDict or dict)."""
  def get(name, default=None):
    if name in train_cfg and train_cfg[name] is not None:
      return train_cfg[name]
    if default is None:
      raise ConfigError(f"train.{name}", "is required to build the optimizer")
    return default

  kw = {name: get(name) for name in _REQUIRED}
  kw["total_steps"] = kw.pop("num_steps")
  kw.update({name: get(name, default) for name, default in _OPTIONAL.items()})
  return kw


def optimizer_from_config(train_cfg: Any) -> optax.GradientTransformation:
  """`make_optimizer` from the `train` section of a config (ConfigDict or dict).

  Reads learning_rate, warmup_steps, decay, num_steps (required) and weight_decay, b1, b2, eps,
  clip_norm, end_fraction (optional, defaults as in make_optimizer).
  """
  return make_optimizer(**_config_kwargs(train_cfg))


def schedule_from_config(train_cfg: Any) -> optax.Schedule:
  """The learning-rate schedule `optimizer_from_config` uses (for logging the rate)."""
  kw = _config_kwargs(train_cfg)
  return make_schedule(learning_rate=kw["learning_rate"], warmup_steps=kw["warmup_steps"],
                       decay=kw["decay"], total_steps=kw["total_steps"],
                       end_fraction=kw["end_fraction"])


def _is_int(x: Any) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_real(x: Any) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _check_schedule(*, learning_rate, warmup_steps, decay, total_steps, end_fraction) -> None:
  if not _is_real(learning_rate) or learning_rate <= 0:
    raise ConfigError("train.learning_rate", f"must be a finite number > 0, got {learning_rate!r}")
  if decay not in DECAYS:
    raise ConfigError("train.decay", f"must be one of {', '.join(DECAYS)}; got {decay!r}")
  if not _is_int(total_steps) or total_steps <= 0:
    raise ConfigError("train.num_steps", f"must be an integer > 0, got {total_steps!r}")
  if not _is_int(warmup_steps) or warmup_steps < 0:
    raise ConfigError("train.warmup_steps", f"must be an integer >= 0, got {warmup_steps!r}")
  if warmup_steps > total_steps:
    raise ConfigError("train.warmup_steps",
                      f"{warmup_steps} is more than train.num_steps ({total_steps})")
  if decay in ("cosine", "linear") and warmup_steps == total_steps:
    raise ConfigError("train.warmup_steps",
                      f"{decay} decay needs steps after warmup; warmup_steps == num_steps "
                      f"({total_steps})")
  if decay == "inverse_sqrt" and warmup_steps == 0:
    # lr * sqrt(w / s) is 0 for w = 0: the run would never learn.
    raise ConfigError("train.warmup_steps", "inverse_sqrt decay needs warmup_steps > 0")
  if not _is_real(end_fraction) or not 0.0 <= end_fraction <= 1.0:
    raise ConfigError("train.end_fraction", f"must be in [0, 1], got {end_fraction!r}")


def _check_adam(*, weight_decay, b1, b2, eps, clip_norm) -> None:
  if not _is_real(weight_decay) or weight_decay < 0:
    raise ConfigError("train.weight_decay", f"must be a finite number >= 0, got {weight_decay!r}")
  for name, value in (("b1", b1), ("b2", b2)):
    if not _is_real(value) or not 0.0 <= value < 1.0:
      raise ConfigError(f"train.{name}", f"must be in [0, 1), got {value!r}")
  if not _is_real(eps) or eps <= 0:
    raise ConfigError("train.eps", f"must be a finite number > 0, got {eps!r}")
  if not _is_real(clip_norm):
    raise ConfigError("train.clip_norm", f"must be a finite number (<= 0 disables), got "
                      f"{clip_norm!r}")
