"""Pipeline figures as PNG bytes: training curves, error against density, and weight distributions.

Pure: rows and arrays in, PNG bytes out. Figures are drawn on an Agg canvas under matplotlib's
default style with fixed size and resolution, and saved without metadata, so equal inputs give equal
bytes and DVC sees no spurious change. The weight plots follow the paper's Figures 4-5: dense
weights, the bimodal survivors of pruning, and the shared values of trained quantization.
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import matplotlib.style
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.pruning import weight_name

DPI = 100
HISTOGRAM_BINS = 120
EMBED_LIMIT_BYTES = 512 * 1024

_DENSE_COLOR = "#4c72b0"
_PRUNED_COLOR = "#dd8452"
_SHARED_COLOR = "#55a868"
_CENTROID_COLOR = "#c44e52"


class PlotError(ValueError):
    """Plot input is missing a column, is not numeric, or does not match between stages."""


@dataclass(frozen=True)
class LayerWeights:
    """One layer's weight at a pipeline stage: its values, the pruning mask, and any codebook."""

    values: np.ndarray
    mask: np.ndarray | None = None
    centroids: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.mask is not None and np.shape(self.mask) != np.shape(self.values):
            raise PlotError(
                f"mask shape {np.shape(self.mask)} differs from weight shape "
                f"{np.shape(self.values)}; pass the mask saved with this weight"
            )

    def survivors(self) -> np.ndarray:
        """The weights kept by pruning (mask True), or the non-zero ones when there is no mask."""
        values = np.asarray(self.values, dtype=np.float64).ravel()
        if self.mask is None:
            return values[values != 0.0]
        return values[np.asarray(self.mask, dtype=bool).ravel()]

    @classmethod
    def from_checkpoint(cls, checkpoint: Checkpoint, layer: str) -> LayerWeights:
        """The weight of `layer` ("fc1") in a checkpoint, with its mask and any centroids."""
        name = weight_name(layer)
        if name not in checkpoint.state_dict:
            known = sorted(k for k in checkpoint.state_dict if k.endswith(".weight"))
            raise PlotError(
                f"layer {layer!r} has no weight {name!r} in the {checkpoint.arch.get('name')!r} "
                f"checkpoint; known weights: {', '.join(known)}"
            )
        mask = checkpoint.masks.get(name)
        centroids = checkpoint.centroids.get(name)
        return cls(
            values=checkpoint.state_dict[name].detach().cpu().numpy(),
            mask=None if mask is None else mask.cpu().numpy().astype(bool),
            centroids=None if centroids is None else centroids.detach().cpu().numpy(),
        )


@dataclass(frozen=True)
class WeightHistograms:
    """Data of a weight-distribution figure: common bins for dense and pruned, shared values."""

    edges: np.ndarray
    dense_counts: np.ndarray
    pruned_counts: np.ndarray
    shared_values: np.ndarray
    shared_counts: np.ndarray
    centroids: np.ndarray
    dense_total: int
    pruned_gap: float


def _symmetric_edges(arrays: Sequence[np.ndarray], bins: int) -> np.ndarray:
    """`bins` equal bins over [-m, m], m the largest magnitude; an even count puts 0 on an edge."""
    magnitudes = [float(np.abs(a).max()) for a in arrays if a.size]
    limit = max(magnitudes, default=0.0) or 1.0
    half = np.linspace(0.0, limit, bins // 2 + 1)
    return np.concatenate([-half[:0:-1], half])


def weight_histograms(
    dense: LayerWeights,
    pruned: LayerWeights,
    quantized: LayerWeights,
    bins: int = HISTOGRAM_BINS,
) -> WeightHistograms:
    """Histogram all dense weights and the pruned survivors on common bins; count shared values."""
    if bins < 2 or bins % 2:
        raise PlotError(f"bins must be an even number >= 2 so 0 is a bin edge, got {bins}")
    all_dense = np.asarray(dense.values, dtype=np.float64).ravel()
    kept = pruned.survivors()
    shared = quantized.survivors()
    centroids = (
        np.sort(np.asarray(quantized.centroids, dtype=np.float64).ravel())
        if quantized.centroids is not None
        else np.empty(0)
    )
    edges = _symmetric_edges([all_dense, kept, shared, centroids], bins)
    shared_values, shared_counts = np.unique(shared, return_counts=True)
    return WeightHistograms(
        edges=edges,
        dense_counts=np.histogram(all_dense, edges)[0],
        pruned_counts=np.histogram(kept, edges)[0],
        shared_values=shared_values,
        shared_counts=shared_counts,
        centroids=centroids,
        dense_total=all_dense.size,
        pruned_gap=float(np.abs(kept).min()) if kept.size else 0.0,
    )


@contextmanager
def _figure(width: float, height: float) -> Iterator[Figure]:
    """A figure on its own Agg canvas under matplotlib's default style (no global pyplot state)."""
    with matplotlib.style.context("default"):
        figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
        FigureCanvasAgg(figure)
        yield figure


def _png(figure: Figure) -> bytes:
    """PNG bytes without text chunks (no software version, no date): same figure, same bytes."""
    out = io.BytesIO()
    figure.savefig(out, format="png", dpi=DPI, metadata={"Software": None})
    return out.getvalue()


def _column(rows: Sequence[Mapping[str, Any]], key: str, what: str) -> np.ndarray:
    """Column `key` of `rows` as floats; a missing or non-numeric column is a PlotError."""
    try:
        return np.array([float(row[key]) for row in rows], dtype=np.float64)
    except KeyError:
        raise PlotError(
            f"{what}: column {key!r} missing; columns present: {', '.join(rows[0])}; "
            "rerun the stage that writes it"
        ) from None
    except (TypeError, ValueError) as err:
        raise PlotError(f"{what}: column {key!r} is not numeric ({err})") from None


def _no_data(ax: Axes, message: str) -> None:
    """Mark an empty panel so an empty input still yields a readable image."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="0.4")
    ax.set_xticks([])
    ax.set_yticks([])


def training_curves(rows: Sequence[Mapping[str, Any]], title: str = "Training") -> bytes:
    """Train/validation loss and validation error per epoch (rows of train.csv): a two-panel PNG."""
    with _figure(10.0, 4.0) as figure:
        loss_ax, error_ax = figure.subplots(1, 2)
        figure.suptitle(title)
        loss_ax.set_title("Loss")
        error_ax.set_title("Validation error")
        for ax in (loss_ax, error_ax):
            ax.set_xlabel("epoch")
        loss_ax.set_ylabel("cross-entropy loss")
        error_ax.set_ylabel("validation error (%)")
        if not rows:
            _no_data(loss_ax, "no epochs recorded")
            _no_data(error_ax, "no epochs recorded")
            return _png(figure)
        epoch = _column(rows, "epoch", "training curves")
        loss_ax.plot(epoch, _column(rows, "train_loss", "training curves"), label="train loss")
        loss_ax.plot(epoch, _column(rows, "val_loss", "training curves"), label="validation loss")
        error = 100.0 * _column(rows, "val_error", "training curves")
        error_ax.plot(epoch, error, color=_PRUNED_COLOR, marker=".", label="validation error")
        error_ax.annotate(
            f"{error[-1]:.2f}%",
            (epoch[-1], error[-1]),
            textcoords="offset points",
            xytext=(0, 8),
            ha="center",
        )
        for ax in (loss_ax, error_ax):
            ax.grid(alpha=0.3)
            ax.legend()
        return _png(figure)


def final_error(rows: Sequence[Mapping[str, Any]]) -> float | None:
    """The last row's val_error (the dense model's error, from train.csv), None when empty."""
    return None if not rows else float(_column(rows[-1:], "val_error", "final error")[0])


def error_vs_density(
    rows: Sequence[Mapping[str, Any]], reference_error: float | None = None
) -> bytes:
    """Validation error against overall density per pruning iteration, before/after retraining."""
    with _figure(7.0, 4.5) as figure:
        ax = figure.subplots()
        ax.set_title("Iterative pruning: validation error against weights kept")
        ax.set_xlabel("weights kept (% of all prunable weights)")
        ax.set_ylabel("validation error (%)")
        if reference_error is not None:
            ax.axhline(
                100.0 * reference_error,
                color="0.3",
                linestyle="--",
                linewidth=1,
                label=f"dense ({100.0 * reference_error:.2f}%)",
            )
        if not rows:
            _no_data(ax, "no pruning iterations recorded")
            return _png(figure)
        density = 100.0 * _column(rows, "density", "error vs density")
        before = 100.0 * _column(rows, "error_after_prune", "error vs density")
        after = 100.0 * _column(rows, "val_error", "error vs density")
        iteration = _column(rows, "iteration", "error vs density")
        ax.vlines(density, np.minimum(before, after), np.maximum(before, after), color="0.8")
        ax.plot(density, before, "o--", color=_PRUNED_COLOR, label="after pruning")
        ax.plot(density, after, "s-", color=_DENSE_COLOR, label="after retraining")
        for x, y, n in zip(density, after, iteration, strict=True):
            ax.annotate(
                f"it {n:g}", (x, y), textcoords="offset points", xytext=(0, -14), ha="center"
            )
        ax.set_xlim(100.0, 0.0)
        ax.grid(alpha=0.3)
        ax.legend()
        return _png(figure)


def _draw_weight_panels(axes: Sequence[Axes], hist: WeightHistograms) -> None:
    """Dense histogram, pruned histogram with its gap, shared-value spikes with centroid marks."""
    dense_ax, pruned_ax, shared_ax = axes
    kept = int(hist.pruned_counts.sum())
    total = max(hist.dense_total, 1)
    dense_ax.stairs(hist.dense_counts, hist.edges, fill=True, color=_DENSE_COLOR, label="weights")
    dense_ax.set_title(f"Dense: {hist.dense_total:,} weights")
    pruned_ax.stairs(
        hist.pruned_counts, hist.edges, fill=True, color=_PRUNED_COLOR, label="surviving weights"
    )
    if kept:
        pruned_ax.axvspan(
            -hist.pruned_gap,
            hist.pruned_gap,
            color="0.85",
            label=f"pruned: |w| < {hist.pruned_gap:.3g}",
        )
    pruned_ax.set_title(f"After pruning: {kept:,} weights kept ({100.0 * kept / total:.2f}%)")
    if hist.shared_values.size:
        shared_ax.vlines(hist.shared_values, 0, hist.shared_counts, color=_SHARED_COLOR)
        shared_ax.plot(
            hist.shared_values,
            hist.shared_counts,
            "o",
            color=_SHARED_COLOR,
            markersize=3,
            label="shared value (count)",
        )
    if hist.centroids.size:
        shared_ax.plot(
            hist.centroids,
            np.zeros_like(hist.centroids),
            "^",
            color=_CENTROID_COLOR,
            markersize=5,
            clip_on=False,
            label=f"centroids (k = {hist.centroids.size})",
        )
    shared_ax.set_title(
        f"After quantization: {hist.shared_values.size} shared values, "
        f"{int(hist.shared_counts.sum()):,} weights"
    )
    shared_ax.set_xlabel("weight value")
    for ax in axes:
        ax.set_ylabel("count")
        ax.set_xlim(hist.edges[0], hist.edges[-1])
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(loc="upper right")


def weight_distributions(
    dense: LayerWeights, pruned: LayerWeights, quantized: LayerWeights, layer: str = ""
) -> bytes:
    """One layer's weights dense, after pruning and after quantization (paper Figs. 4-5), as PNG."""
    hist = weight_histograms(dense, pruned, quantized)
    with _figure(8.0, 9.0) as figure:
        axes = figure.subplots(3, 1, sharex=True)
        figure.suptitle(f"Weight distribution of {layer}" if layer else "Weight distribution")
        _draw_weight_panels(axes, hist)
        return _png(figure)


def report_markdown(images: Mapping[str, bytes], embed_limit: int = EMBED_LIMIT_BYTES) -> str:
    """Markdown listing each PNG (name, size) and showing those up to `embed_limit` bytes inline."""
    lines = ["# Plots", "", "| file | size |", "|---|---|"]
    lines += [f"| {name} | {_size(len(png))} |" for name, png in images.items()]
    for name, png in images.items():
        lines += ["", f"## {name}", ""]
        if len(png) <= embed_limit:
            lines.append(f"![{name}](data:image/png;base64,{base64.b64encode(png).decode()})")
        else:
            lines.append(f"_{_size(len(png))}: too large to show inline; open the file._")
    return "\n".join(lines) + "\n"


def _size(n: int) -> str:
    """Byte count for people: 2048 -> '2.0 KiB'."""
    if n < 1024:
        return f"{n} B"
    exponent = min(int(math.log(n, 1024)), 3)
    return f"{n / 1024**exponent:.1f} {('B', 'KiB', 'MiB', 'GiB')[exponent]}"
