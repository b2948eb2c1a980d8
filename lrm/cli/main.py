"""`lrm SUBCOMMAND [--flags]`: dispatches to one absl app per pipeline stage.

Each subcommand is a module `lrm.cli.<name>` defining its own absl flags and a `main(argv)`.
Only the chosen module is imported, so `lrm embed --help` lists the flags of `embed` alone.
"""

from __future__ import annotations

import importlib
import sys

# name -> one-line description, in data-flow order.
SUBCOMMANDS: dict[str, str] = {
    "world": "generate the built-in synthetic world (catalog, sequences, planted truth)",
    "data": "convert raw datasets (Amazon 2014 dumps, MovieLens, RecBole) to the standard layout; print stats",
    "embed": "encode item text (MiniLM port or hashing fallback), bring-your-own .npy, fuse modalities",
    "run": "the main job: every stage above, end to end, from one config (default: synthetic world)",
}


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
  module = importlib.import_module(f"lrm.cli.{name}")
  from absl import app
  app.run(module.main, argv=[f"lrm {name}"] + argv[2:])


if __name__ == "__main__":
  run()
