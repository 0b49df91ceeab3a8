"""Prefect artifacts for a stage's flow run: a markdown report and a metrics table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from prefect.artifacts import create_markdown_artifact, create_table_artifact

from deepcompression.report import markdown_table


def publish_report(
    stage: str, title: str, layer_rows: Sequence[Mapping[str, Any]], metrics: Mapping[str, Any]
) -> None:
    """Attach `<stage>-report` (markdown, per layer) and `<stage>-metrics` (table) to the run."""
    summary = "\n".join(f"- **{k}**: {v}" for k, v in metrics.items() if not isinstance(v, dict))
    create_markdown_artifact(
        key=f"{stage}-report",
        markdown=f"# {title}\n\n{markdown_table(layer_rows)}\n{summary}\n",
        description=f"{stage}: per-layer report",
    )
    flat = [{"metric": k, "value": v} for k, v in metrics.items() if not isinstance(v, dict)]
    create_table_artifact(key=f"{stage}-metrics", table=flat, description=f"{stage}: metrics")
