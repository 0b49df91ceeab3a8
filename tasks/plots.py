"""Prefect tasks: render figures from the stages' CSVs and checkpoints; write PNGs atomically."""

from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.plots.figures import (
    LayerWeights,
    error_vs_density,
    final_error,
    report_markdown,
    training_curves,
    weight_distributions,
)
from runtime.artifacts import publish_markdown
from runtime.resilient import task
from tasks.io import write_bytes_atomic


def read_csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV written by tasks.io.write_csv; a missing file says which stage makes it."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it first (dvc repro)")
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


@task(name="plot-training-curves", task_run_name="plot-training-curves", cache_policy=NO_CACHE)
def plot_training_curves(train_csv: Path, out: Path) -> Path:
    """Loss and validation error per epoch of the dense training (train.csv) -> `out` PNG."""
    write_bytes_atomic(out, training_curves(read_csv_rows(train_csv), "Training the dense model"))
    return out


@task(name="plot-error-vs-density", task_run_name="plot-error-vs-density", cache_policy=NO_CACHE)
def plot_error_vs_density(prune_csv: Path, train_csv: Path, out: Path) -> Path:
    """Validation error against density over the pruning iterations; dense error as reference."""
    reference = final_error(read_csv_rows(train_csv))
    write_bytes_atomic(out, error_vs_density(read_csv_rows(prune_csv), reference))
    return out


@task(name="plot-weights", task_run_name="plot-weights-{layer}", cache_policy=NO_CACHE)
def plot_weight_distributions(
    layer: str, dense: Checkpoint, pruned: Checkpoint, quantized: Checkpoint, out: Path
) -> Path:
    """One layer's weight histograms dense, pruned and quantized (paper Figs. 4-5) -> `out` PNG."""
    stages = [LayerWeights.from_checkpoint(c, layer) for c in (dense, pruned, quantized)]
    write_bytes_atomic(out, weight_distributions(*stages, layer=layer))
    return out


def publish_plots_report(images: Mapping[str, Path], key: str = "plots") -> None:
    """Attach `<key>-report` to the flow run: the files written, each shown inline when small."""
    publish_markdown(
        f"{key}-report",
        report_markdown({name: path.read_bytes() for name, path in images.items()}),
        "plots: figures written for dvc plots",
    )


def remove_stale_pngs(folder: Path, keep: set[Path]) -> list[Path]:
    """Delete PNGs in `folder` not in `keep` (layers of an earlier model); returns those deleted."""
    stale = sorted(p for p in folder.glob("*.png") if p not in keep) if folder.is_dir() else []
    for path in stale:
        path.unlink()
    return stale
