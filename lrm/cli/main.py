"""`lrm SUBCOMMAND [--flags]`: one absl program whose subcommand picks a job or a stage.

The job commands take `--config` (a config file, `:arg` and `--config.FIELD=VALUE` overrides)
and `--workdir` (the run directory, instead of config.run_dir), and call `run` or `evaluate` of
the job in lrm.jobs.JOBS: `train` and `evaluate` the one `config.job` names, the others their
own (`lrm rank` = the `ranking` job's run, whatever the config file), recorded in config.job.
`world`, `data`, `embed` and `sid` run one stage on files (lrm/cli/tools.py). Only the chosen
command's flags are defined, so `lrm embed --help` lists those of `embed` alone.

  lrm run [--config=configs/base.py[:runlocal]]      the main job, end to end
  lrm train --config=configs/<name>.py --workdir=W    train config.job's models (resumed), e.g.
                                                      retrieval (configs/base.py and its
                                                      datasets) or ranking (configs/rank_*.py)
  lrm evaluate --workdir=W [--model=tiger,sasrec]     score them again (W/config.json is the
                                                      config; --config.* overrides apply)
  lrm lm --config=configs/lm_beauty.py --workdir=W [--notrain] [--noevaluate]

Multi-process (one process per host or GPU): `python launch/local.py --num_processes=N -- lrm
train ...`, the SLURM / TPU launchers in launch/, or `--coordinator --num_processes
--process_id`. On SIGTERM training saves a checkpoint and exits with status 143; the same
command resumes.
"""

from __future__ import annotations

import ast
import json
import logging as pylogging
import os
import pathlib
import sys
from typing import Callable

import jax
import ml_collections
from absl import app, flags, logging
from ml_collections import config_flags

from lrm import jobs
from lrm.cli import tools
from lrm.core.errors import PREEMPTED_EXIT_STATUS, ConfigError, DataError, Preempted
from lrm.jobs import defaults
from lrm.jobs.stages import default_config
from lrm.parallel import distributed

# name -> one-line description, in data-flow order.
SUBCOMMANDS: dict[str, str] = {
    "world": "generate the built-in synthetic world (catalog, sequences, planted truth)",
    "data": "convert raw datasets (Amazon 2014 dumps, MovieLens, RecBole) to the standard layout; print stats",
    "embed": "encode item text (MiniLM port or hashing fallback), bring-your-own .npy, fuse modalities",
    "finetune": "contrastive fine-tuning of the sentence encoder (FLUID: InfoNCE, false-negative masking, projection then joint)",
    "sid": "fit a SID tokenizer (RQ-KMeans, RQ-VAE, k-means) on embeddings; codes, trie input, quality report",
    "train": "train the job config.job names (retrieval: TIGER, SASRec, RPG; ranking; lm ...), resumable",
    "evaluate": "score the models a run trained again (retrieval: Recall/NDCG@K table; ranking: AUC)",
    "rank": "ranking on a cold-start item split: ID / early / late-fusion SID rankers, multi-task AUC and GAUC on warm and cold items",
    "replay": "cold-start replay: rounds of two-tower slates, clicks and updates; how fast new items gain impressions",
    "lm": "the bilingual SID language model: joint vocabulary, text<->SID + next/masked item tasks, train, evaluate, after-item table",
    "rounds": "continuous pretraining over dated snapshots of a growing catalog (SID refresh, churn, freshness)",
    "run": "the main job: every stage above, end to end, from one config (default: synthetic world)",
}

# Job commands: name -> (the job it runs, None = config.job; the argument of the package's
# defaults (lrm/jobs/defaults.py) that is its config without --config, None = --config needed).
JOB_COMMANDS: dict[str, tuple[str | None, str | None]] = {
    "train": (None, ""),
    "finetune": ("finetune", None),
    "rank": ("ranking", "job=ranking"),
    "replay": ("replay", "job=replay"),
    "lm": ("lm", "job=lm"),
    "rounds": ("rounds", "job=rounds"),
    "run": ("pipeline", "job=pipeline"),
}
DEFAULTS_FILE = pathlib.Path(defaults.__file__)
# The job of a config without a `job` field (configs/base.py's).
DEFAULT_JOB = "retrieval"


def usage() -> str:
  width = max(map(len, SUBCOMMANDS))
  lines = ["usage: lrm SUBCOMMAND [--flags]    (lrm SUBCOMMAND --help for its flags)", "",
           "subcommands (pipeline stages, in data-flow order):"]
  lines += [f"  {name:<{width}}  {desc}" for name, desc in SUBCOMMANDS.items()]
  return "\n".join(lines)


def run(argv: list[str] | None = None) -> None:
  argv = list(sys.argv if argv is None else argv)
  if len(argv) < 2 or argv[1] in ("-h", "--help", "help", "--helpfull"):
    print(usage())
    sys.exit(0 if len(argv) >= 2 else 2)
  name = argv[1]
  if name not in SUBCOMMANDS:
    print(f"lrm: unknown subcommand '{name}'\n\n{usage()}", file=sys.stderr)
    sys.exit(2)
  _configure_jax()
  _quiet_library_logs()

  prog = f"lrm {name}"
  # config_flags reads overrides from sys.argv when the command defines its flag.
  try:
    sys.argv = [prog] + _resolve_config_names(argv[2:])
    main = _define(name)
  except ConfigError as e:
    _fail(prog, str(e))
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    _fail(prog, f"bad --config override: {_unquote(str(e))}")

  def guarded_main(args):
    try:
      return main(args)
    except (ConfigError, DataError, FileNotFoundError) as e:
      _fail(prog, str(e))
    except Preempted as e:
      print(f"{prog}: {e}", file=sys.stderr)
      sys.exit(PREEMPTED_EXIT_STATUS)

  def parse_flags(args):
    # --config.FIELD=VALUE overrides are applied while the flags parse; an unknown field or a
    # value of the wrong type is bad input, not a crash.
    try:
      return flags.FLAGS(args)
    except flags.Error as e:
      _fail(prog, str(e))
    except (AttributeError, KeyError, TypeError, ValueError) as e:
      missing = _unquote(str(e))
      named = [a[2:].split("=")[0] for a in args if a.startswith("--config.")
               and missing in a[2:].split("=")[0].split(".")]
      _fail(prog, f"bad --config override: {named[0]} is not a field of the config"
            if named else f"bad --config override: {missing}")

  app.run(guarded_main, argv=sys.argv, flags_parser=parse_flags)


def _define(name: str) -> Callable[[list[str]], None]:
  """Defines the flags of command `name`; returns its main(argv)."""
  if name == "evaluate":
    return _evaluate()
  if name not in JOB_COMMANDS:
    return getattr(tools, name)()
  job, default = JOB_COMMANDS[name]
  default = None if default is None else f"{DEFAULTS_FILE}:{default}" if default else str(
      DEFAULTS_FILE)
  config = config_flags.DEFINE_config_file("config", default,
                                           "config file (get_config)", lock_config=True)
  workdir = flags.DEFINE_string("workdir", None, "run directory (overrides config.run_dir)")
  join = _join_flags() if name != "finetune" else lambda: None
  options = {}
  if name == "lm":
    options = {"train": flags.DEFINE_bool("train", True, "train (or resume) the LM"),
               "evaluate": flags.DEFINE_bool("evaluate", True, "evaluate the trained LM")}

  def main(argv):
    del argv
    if config.value is None:
      raise ConfigError("config", f"`lrm {name}` needs one, e.g. --config=configs/"
                        f"{name}_beauty.py")
    join()
    target = jobs.get(_named_job(config.value, job))
    target.run(config.value, workdir.value, **{k: f.value for k, f in options.items()})
  return main


def _evaluate() -> Callable[[list[str]], None]:
  """`lrm evaluate --workdir=W`: the run's saved config (W/config.json) is the config flag."""
  workdir = _workdir_from_argv(sys.argv[1:])
  path = pathlib.Path(workdir or "") / "config.json"
  saved = (ml_collections.ConfigDict(json.loads(path.read_text()))
           if workdir is not None and path.exists() else default_config())
  config = config_flags.DEFINE_config_dict("config", saved, lock_config=True)
  workdir_flag = flags.DEFINE_string("workdir", None, "run directory written by `lrm train`")
  models = flags.DEFINE_list("model", [], "retrieval models to evaluate (default: every trained "
                             "one)")

  def main(argv):
    del argv
    if not workdir_flag.value:
      raise ConfigError("workdir", "is required: the run directory `lrm train` wrote")
    run_dir = pathlib.Path(workdir_flag.value)
    if not (run_dir / "config.json").exists():
      raise FileNotFoundError(f"{run_dir / 'config.json'} not found: is {run_dir} a run "
                              f"directory of `lrm train`?")
    name = _named_job(config.value, None)
    options = {"models": tuple(models.value)} if models.value else {}
    if options and name not in ("retrieval", "pipeline"):
      raise ConfigError("model", f"picks retrieval models; {run_dir} holds a {name!r} run")
    jobs.get(name).evaluate(config.value, run_dir, **options)
  return main


def _resolve_config_names(args: list[str]) -> list[str]:
  """`--config=NAME[:arg]` (a bare name, no path): `base` is the package's defaults, any other
  name ./configs/NAME.py (the experiment configs beside the checkout). Paths pass unchanged."""
  out = list(args)
  for i, arg in enumerate(out):
    if arg.startswith("--config="):
      j, value = i, arg[len("--config="):]
    elif arg == "--config" and i + 1 < len(out):
      j, value = i + 1, out[i + 1]
    else:
      continue
    name, sep, rest = value.partition(":")
    if not name.isidentifier():
      continue
    path = DEFAULTS_FILE if name in ("base", "defaults") else pathlib.Path("configs", f"{name}.py")
    if not path.exists():
      raise ConfigError("config", f"no config named '{name}': {path} does not exist (give a "
                        f"path, or run from the checkout that has configs/)")
    out[j] = ("--config=" if j == i else "") + str(path) + sep + rest
  return out


def _named_job(config, job: str | None) -> str:
  """The job a command runs (its own, else config.job), recorded in the config."""
  job = job or config.get("job", DEFAULT_JOB)
  with config.unlocked():
    config.job = job
  return job


def _workdir_from_argv(argv: list[str]) -> str | None:
  """--workdir is needed before flags are parsed: the config flag is the saved config."""
  for i, arg in enumerate(argv):
    if arg.startswith("--workdir="):
      return arg.split("=", 1)[1]
    if arg == "--workdir" and i + 1 < len(argv):
      return argv[i + 1]
  return None


def _join_flags() -> Callable[[], None]:
  """Flags that put a command into a multi-process job (lrm/parallel/distributed.py); returns
  the function that joins it. Without them a command reads LRM_COORDINATOR /
  LRM_NUM_PROCESSES / LRM_PROCESS_ID (set by launch/local.py), else lets jax detect a TPU pod
  or SLURM job, else runs as one process."""
  coordinator = flags.DEFINE_string("coordinator", None,
                                    "host:port of process 0 in a multi-process job")
  num_processes = flags.DEFINE_integer("num_processes", None, "processes in the job")
  process_id = flags.DEFINE_integer("process_id", None, "this process's index in the job")
  return lambda: distributed.initialize(distributed.process_spec(
      coordinator.value, num_processes.value, process_id.value))


def _configure_jax() -> None:
  """Process-wide JAX settings for the command line (tests and libraries set their own).

  - One XLA host device per core (up to 8): data-parallel CPU work (the encoder) then uses
    every core, measured +7% throughput and half the compile time on 2 cores. Only when the
    user has not set XLA_FLAGS; accelerators are unaffected.
  - A persistent compilation cache, so a second run skips most compiles.

  XLA_FLAGS is read when the first backend starts, not when jax is imported, so setting it
  here (before any command touches a device) is in time.
  """
  if "XLA_FLAGS" not in os.environ:
    cores = min(os.cpu_count() or 1, 8)
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={cores}"
  cache = os.environ.get("LRM_JAX_CACHE", os.path.join(
      os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lrm", "jax-cache"))
  if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.2)


# Library files whose INFO lines the command line drops.
_QUIET_INFO_SOURCES = ("/orbax/", "/jax/_src/xla_bridge.py")


def _quiet_library_logs() -> None:
  """Orbax logs every save and restore step at INFO, and JAX's backend probe logs a missing
  libtpu at INFO on every machine without a TPU; on the command line only their warnings show
  (library users keep absl's defaults). Orbax's warning about a save without metrics goes too."""

  class DropLibraryInfo(pylogging.Filter):
    def filter(self, record: pylogging.LogRecord) -> bool:
      if any(part in record.pathname for part in _QUIET_INFO_SOURCES):
        # Saves between validations carry no metrics by design (lrm/train/checkpoint.py), and
        # orbax warns about each one.
        return (record.levelno >= pylogging.WARNING
                and not str(record.msg).startswith("Requested `tracked_metric`"))
      return True

  logging.get_absl_handler().addFilter(DropLibraryInfo())


def _unquote(message: str) -> str:
  """ml_collections wraps KeyError messages in repr quotes, sometimes twice."""
  for _ in range(2):
    if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
      try:
        message = ast.literal_eval(message)
      except (ValueError, SyntaxError):
        break
  return message.replace("\n", "; ")


def _fail(prog: str, message: str) -> None:
  """Bad input is the user's to fix: one clear line, no traceback, exit status 2."""
  print(f"{prog}: error: {message}", file=sys.stderr)
  sys.exit(2)

if __name__ == "__main__":
  run()
