"""lrm evaluate --workdir=W [--model=tiger,sasrec] [--config.eval.FIELD=VALUE ...]

Ranks every validation and test user with the trained models in W/retrieval/ (best
checkpoint), writes W/retrieval/<model>/predictions_{valid,test}.jsonl and metrics.json, prints
the test table beside TIGER's published numbers and merges it into W/results.json. The run's
config is W/config.json (written by `lrm train` / `lrm run`); `--config.*` overrides (e.g.
`--config.eval.beam_size=50`) apply on top of it.

For a ranking run (`lrm train` / `lrm rank` with configs/rank_<dataset>.py) it scores the
trained rankers again on warm and cold candidates (click AUC and GAUC per task) without
training; a ranker whose checkpoint is short of `ranking.num_steps` is an error.
"""

from __future__ import annotations

import json
import pathlib
import sys

import ml_collections
from absl import flags
from ml_collections import config_flags

from lrm import ranking
from lrm.core.errors import ConfigError
from lrm.data import read_dataset
from lrm.pipeline import default_config, evaluate_stage, validate, write_results


def _workdir_from_argv(argv: list[str]) -> str | None:
  """--workdir is needed before flags are parsed: the config flag is the saved config."""
  for i, arg in enumerate(argv):
    if arg.startswith("--workdir="):
      return arg.split("=", 1)[1]
    if arg == "--workdir" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _saved_config():
  workdir = _workdir_from_argv(sys.argv[1:])
  path = pathlib.Path(workdir or "") / "config.json"
  if workdir is None or not path.exists():
    return default_config()   # main() reports the missing workdir / config.json
  return ml_collections.ConfigDict(json.loads(path.read_text()))


_WORKDIR = flags.DEFINE_string("workdir", None, "run directory written by `lrm train`")
_MODELS = flags.DEFINE_list("model", [], "models to evaluate (default: every trained one)")
_CONFIG = config_flags.DEFINE_config_dict("config", _saved_config(), lock_config=True)


def main(argv):
  del argv
  if not _WORKDIR.value:
    raise ConfigError("workdir", "is required: the run directory `lrm train` wrote")
  run_dir = pathlib.Path(_WORKDIR.value)
  if not (run_dir / "config.json").exists():
    raise FileNotFoundError(f"{run_dir / 'config.json'} not found: is {run_dir} a run "
                            f"directory of `lrm train`?")
  config = _CONFIG.value
  config.run_dir = str(run_dir)
  if "ranking" in config:     # a ranking run: AUC / GAUC per task on warm and cold candidates
    ranking.run(config, train_models=False)
    return
  validate(config)
  data_dir = pathlib.Path(config.data.path) if config.data.source == "layout" else run_dir / "data"
  dataset = read_dataset(data_dir)
  results = evaluate_stage(config, run_dir, dataset, models=tuple(_MODELS.value) or None)
  write_results(run_dir, {"retrieval": results})
