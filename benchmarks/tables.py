"""What the benchmark scripts share: figures with their targets, and the table."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Figure:
    """One reported number: its key in the JSON, how to show it, its target."""

    key: str
    label: str
    unit: str  # "/s", "%", "ms", "us", "s", "MB/s", "n" (a count) or "bool"
    target: str = "—"
    met: Callable[[float], bool] | None = None


def show(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:,.0f} %"
    if unit == "ms":
        return f"{value:.3f} ms" if value < 1 else f"{value:.1f} ms"
    if unit == "us":
        return f"{value:,.0f} µs"
    if unit == "s":
        return f"{value:.2f} s"
    if unit == "MB/s":
        return f"{value:,.1f} MB/s"
    if unit == "bool":
        return "yes" if value else "no"
    if unit == "n":
        return f"{value:,.1f}" if value % 1 else f"{value:,.0f}"

    return f"{value:,.0f}/s"


def rows(figures: dict[str, float], wanted: Sequence[Figure]) -> list[dict[str, str]]:
    """A row a figure: label, value, target and whether it was met."""
    found = []
    for figure in wanted:
        value = figures[figure.key]
        met = "—" if figure.met is None else ("yes" if figure.met(value) else "NO")
        found.append(
            {
                "figure": figure.label,
                "result": show(value, figure.unit),
                "target": figure.target,
                "met": met,
            }
        )

    return found


def print_rows(rows: list[dict[str, str]], heading: str) -> None:
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    print(heading)
    print("  ".join(k.ljust(widths[k]) for k in widths))
    for row in rows:
        print("  ".join(row[k].ljust(widths[k]) for k in widths))


def markdown_rows(rows: list[dict[str, str]]) -> list[str]:
    """The figure table as Markdown lines, heading included."""
    cells = ("figure", "result", "target", "met")
    body = ["| " + " | ".join(r[c] for c in cells) + " |" for r in rows]

    return ["| figure | result | target | met? |", "|---|---|---|---|", *body]
