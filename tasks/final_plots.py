"""Prefect task: the search's Pareto figure with the final pipeline file added, written atomically.

Its own module: tasks.plots is imported by the search and sensitivity stages, which this figure
must not make stale.
"""

from __future__ import annotations

import json
from pathlib import Path

from prefect.cache_policies import NO_CACHE

from deepcompression.plots.final import (
    GUIDES,
    final_file,
    final_pareto_figure,
    search_summary,
)
from deepcompression.plots.search import PUBLISHED
from runtime.resilient import task
from tasks.io import write_bytes_atomic


@task(name="plot-final-pareto", task_run_name="plot-final-pareto-{model}", cache_policy=NO_CACHE)
def plot_final_pareto(model: str, search_front: Path, evaluation: Path, out: Path) -> Path:
    """search_front.json and evaluate.json -> `out` PNG: the front, the final file at its test and
    validation errors, the model's published anchors and its error guides."""
    figure = final_pareto_figure(
        search_summary(json.loads(search_front.read_text())),
        final_file(json.loads(evaluation.read_text())),
        PUBLISHED.get(model, ()),
        f"Compression search and the final file: {model}",
        GUIDES.get(model, ()),
    )
    write_bytes_atomic(out, figure)
    return out
