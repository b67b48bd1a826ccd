"""Markdown tables whose figures stand next to their targets."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class Table:
    """One benchmark table: a title, column names, rows of cells (strings) and notes printed under it."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: object) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"{self.title}: a row needs {len(self.columns)} cells, got {len(cells)}")
        self.rows.append([str(c) for c in cells])

    def markdown(self) -> str:
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |", "|" + "---|" * len(self.columns)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        lines += [""] + [f"- {note}" for note in self.notes]
        return "\n".join(lines).rstrip() + "\n"


def num(value: float, digits: int = 2) -> str:
    """A number with thousands separators (`digits` decimals)."""
    return f"{value:,.{digits}f}"


def mean_std(values: list[float], digits: int = 2) -> str:
    """ "mean ± std" (population std over seeds)."""
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def target(value: float, bound: float, at_least: bool = True, digits: int = 2) -> str:
    """'≥ bound: met' / '≤ bound: MISSED' for a figure against its target."""
    ok = value >= bound if at_least else value <= bound
    return f"{'≥' if at_least else '≤'} {bound:.{digits}f}: {verdict(ok)}"
