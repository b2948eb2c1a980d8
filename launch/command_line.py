"""The `LAUNCHER [options] -- COMMAND ...` convention the launchers share (standard library)."""

from __future__ import annotations

import argparse


def parse_with_command(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
  """Parses `argv` with a trailing command after `--` into `args.command` (a list); no command
  is a usage error (exit status 2)."""
  parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command")
  args = parser.parse_args(argv)
  if args.command and args.command[0] == "--":
    args.command = args.command[1:]
  if not args.command:
    parser.error("no command given (put it after --)")
  return args
