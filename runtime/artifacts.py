"""Prefect artifacts for a stage's flow run: a markdown report and a metrics table.

Every call is best-effort (runtime/monitor.py): without the API the artifact is kept for the
catch-up instead of failing the stage. Figures are rounded for display: 4 significant digits,
errors, densities and accuracies as percentages.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from prefect.artifacts import (
    TableArtifact,
    create_markdown_artifact,
    create_table_artifact,
)

from deepcompression.report import markdown_table
from runtime.monitor import best_effort, keep_artifact

PERCENT_KEYS = re.compile(r"(error|density|accuracy|sparsity)", re.IGNORECASE)


def artifact_key(*parts: str) -> str:
    """An artifact key (lowercase letters, digits, dashes) from any text, parts joined by a dash:
    ('lenet_300_100', 'prune') -> 'lenet-300-100-prune', 'retrain 2' -> 'retrain-2'."""
    return re.sub(r"[^a-z0-9]+", "-", "-".join(parts).lower()).strip("-")


def display_value(key: str, value: Any) -> Any:
    """A value as shown in the UI: 0.0618 -> '6.18%' for error/density keys, else 4 digits."""
    if isinstance(value, bool) or not isinstance(value, float):
        return value
    if PERCENT_KEYS.search(key) and 0.0 <= value <= 1.0:
        return f"{100 * value:.2f}%"
    return f"{value:.4g}"


def display_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with every value rounded by `display_value`."""
    return [{k: display_value(k, v) for k, v in row.items()} for row in rows]


def publish_markdown(key: str, markdown: str, description: str) -> None:
    """A markdown artifact on the current run (kept for later when the API is away)."""
    best_effort(
        lambda: create_markdown_artifact(key=key, markdown=markdown, description=description),
        lambda: keep_artifact("markdown", key=key, data=markdown, description=description),
    )


def publish_table(key: str, table: Sequence[Mapping[str, Any]], description: str) -> None:
    """A table artifact on the current run (kept for later when the API is away)."""
    rows = [dict(row) for row in table]
    best_effort(
        lambda: create_table_artifact(key=key, table=rows, description=description),
        lambda: keep_artifact(
            "table", key=key, data=TableArtifact(table=rows).format(), description=description
        ),
    )


def publish_report(
    stage: str,
    title: str,
    layer_rows: Sequence[Mapping[str, Any]],
    metrics: Mapping[str, Any],
    rows_title: str = "Per layer",
) -> None:
    """Attach `<stage>-report` (markdown: `rows_title` table + metrics) and `<stage>-metrics`."""
    flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    summary = "\n".join(f"- **{k}**: {display_value(k, v)}" for k, v in flat.items())
    table = markdown_table(display_rows(layer_rows))
    publish_markdown(
        f"{artifact_key(stage)}-report",
        f"# {title}\n\n## {rows_title}\n\n{table}\n## Metrics\n\n{summary}\n",
        f"{stage}: {rows_title.lower()} and metrics",
    )
    publish_table(
        f"{artifact_key(stage)}-metrics",
        [{"metric": k, "value": display_value(k, v)} for k, v in flat.items()],
        f"{stage}: metrics",
    )
