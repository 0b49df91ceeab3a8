"""Plain-text reports: markdown tables for Prefect artifacts and the README-style summaries."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A markdown table from rows of equal keys (floats to 4 significant digits)."""
    if not rows:
        return "_(no rows)_\n"
    header = list(rows[0])
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row.get(k, "")) for k in header) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def percent(value: float) -> str:
    """0.0158 -> '1.58%'."""
    return f"{100 * value:.2f}%"
