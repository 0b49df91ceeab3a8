"""Figures of the compression search as PNG bytes: sensitivity curves and the Pareto front.

Pure: records in, PNG bytes out, drawn like plots.figures (own Agg canvas, default style,
no metadata), so equal inputs give equal bytes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from deepcompression.plots.figures import _figure, _png

if TYPE_CHECKING:  # types only: the sensitivity stage must not import the search (Optuna)
    from deepcompression.search.sensitivity import SensitivityPoint
    from deepcompression.search.study import TrialRecord


@dataclass(frozen=True)
class Anchor:
    """A published result: its label, compression ratio and error (test error, as published)."""

    label: str
    ratio: float
    error: float


PUBLISHED: dict[str, tuple[Anchor, ...]] = {
    "lenet_300_100": (
        Anchor("Deep Compression (paper)", 40.0, 0.0158),
        Anchor("Dynamic Network Surgery", 56.0, 0.0199),
        Anchor("Soft weight-sharing", 64.0, 0.0194),
        Anchor("Sparse Variational Dropout", 68.0, 0.019),
    ),
    "lenet5": (
        Anchor("Deep Compression (paper)", 39.0, 0.0074),
        Anchor("Dynamic Network Surgery", 108.0, 0.0091),
        Anchor("Soft weight-sharing", 162.0, 0.0097),
        Anchor("Sparse Variational Dropout", 280.0, 0.0075),
        Anchor("Bayesian Compression, from bit counts", 771.0, 0.010),
    ),
}
"""The issue's anchors: Deep Compression's file sizes; the others' ratios are parameter counts,
computed in their papers, not files on disk."""


def sensitivity_figure(
    points: Sequence[SensitivityPoint], dense_error: float, title: str = "Sensitivity"
) -> bytes:
    """Two panels, one curve per layer: validation error against the density of that layer alone
    (left) and against its weight bits when shared alone (right); the dense error dashed."""
    layers = list(dict.fromkeys(p.layer for p in points))
    with _figure(11.0, 4.2) as figure:
        axes = figure.subplots(1, 2)
        for ax, axis, label in (
            (axes[0], "density", "density of the layer alone (%)"),
            (axes[1], "bits", "weight bits of the layer alone"),
        ):
            for layer in layers:
                curve = sorted(
                    (p.value, p.val_error) for p in points if (p.layer, p.axis) == (layer, axis)
                )
                if not curve:
                    continue
                xs = [100 * v if axis == "density" else v for v, _ in curve]
                ax.plot(xs, [100 * e for _, e in curve], marker="o", label=layer)
            ax.axhline(100 * dense_error, color="grey", linestyle="--", label="dense")
            ax.set_xlabel(label)
            ax.set_ylabel("validation error (%)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        axes[0].set_xscale("log")
        figure.suptitle(title)
        return _png(figure)


def pareto_figure(
    trials: Sequence[TrialRecord],
    front: Sequence[TrialRecord],
    dense_bytes: int,
    chosen: TrialRecord | None,
    defaults: TrialRecord | None,
    anchors: Sequence[Anchor],
    title: str = "Compression search",
) -> bytes:
    """File ratio (log) against validation error: every trial, the front, the chosen point, the
    current defaults as a trial, and published anchors (their test errors, marked as such)."""
    with _figure(8.0, 5.5) as figure:
        ax = figure.subplots()
        _scatter(ax, trials, dense_bytes, dict(color="#bbbbbb", s=12, label="trials"))
        front_x = [dense_bytes / r.file_bytes for r in front]
        front_y = [100 * r.val_error for r in front]
        ax.plot(front_x, front_y, color="#4c72b0", marker="o", ms=4, label="Pareto front (val)")
        if defaults is not None:
            _scatter(ax, [defaults], dense_bytes, dict(color="#dd8452", marker="s", s=50,
                     label="today's defaults (trial settings)"))  # fmt: skip
        if chosen is not None:
            _scatter(ax, [chosen], dense_bytes, dict(color="#c44e52", marker="*", s=160,
                     label="chosen (within error budget)"))  # fmt: skip
        finish_ratio_axes(ax, anchors, title)
        return _png(figure)


def finish_ratio_axes(ax, anchors: Sequence[Anchor], title: str) -> None:
    """Published anchors (their test errors, marked as such), then the shared look of the
    ratio-vs-error figures: log ratio axis, labels, grid, legend and title."""
    for anchor in anchors:
        ax.scatter([anchor.ratio], [100 * anchor.error], marker="x", color="black", s=40)
        ax.annotate(f"{anchor.label} (published, test)", (anchor.ratio, 100 * anchor.error),
                    fontsize=7, xytext=(4, 4), textcoords="offset points")  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (dense float32 bytes / file bytes)")
    ax.set_ylabel("error (%)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(title)


def _scatter(ax, records: Sequence[TrialRecord], dense_bytes: int, style: Mapping) -> None:
    """Records as points at (file ratio, validation error %)."""
    ax.scatter(
        [dense_bytes / r.file_bytes for r in records],
        [100 * r.val_error for r in records],
        **style,
    )
