"""Plain-text result tables (printed by every command that reports numbers)."""

from __future__ import annotations

from typing import Any, Sequence


def _cell(v: Any) -> str:
  if isinstance(v, float):
    return f"{v:.4f}" if abs(v) < 100 else f"{v:,.1f}"
  return str(v)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
  cells = [[_cell(v) for v in row] for row in rows]
  widths = [max(len(str(h)), *(len(r[i]) for r in cells)) if cells else len(str(h))
            for i, h in enumerate(header)]
  line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
  sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
  return "\n".join([line(header), sep] + [line(r) for r in cells])


def print_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
  print(format_table(header, rows), flush=True)
