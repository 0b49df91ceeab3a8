"""The search's Pareto figure with the final pipeline file added, as PNG bytes.

Pure: the search stage's front summary and the evaluate stage's metrics (parsed JSON) in, PNG bytes
out, drawn like deepcompression.plots.search so that it reads as pareto.png plus the final file at
its test and validation errors.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from deepcompression.plots.figures import PlotError, _figure, _png
from deepcompression.plots.search import Anchor, finish_ratio_axes

GUIDES: dict[str, tuple[float, ...]] = {
    "lenet_300_100": (0.016,),
    "lenet5": (0.007, 0.008, 0.010),
}
"""Error levels drawn across the final figure, so a reader sees every point against them."""


@dataclass(frozen=True)
class Point:
    """A compressed model on the figure: its file ratio and an error (a fraction)."""

    ratio: float
    error: float


@dataclass(frozen=True)
class SearchSummary:
    """What the search stage's search_front.json says, on the figure's axes (validation errors)."""

    front: tuple[Point, ...]
    chosen: Point
    defaults_val_error: float
    trials: int


@dataclass(frozen=True)
class FinalFile:
    """The final pipeline file from evaluate.json: its ratio, test and validation errors, and the
    dense model's test error."""

    ratio: float
    test_error: float
    val_error: float
    dense_test_error: float | None = None


def _point(row: Mapping[str, Any], dense_bytes: float, what: str) -> Point:
    """A row holding `file_bytes` and `val_error` as a Point (ratio against `dense_bytes`)."""
    try:
        return Point(dense_bytes / float(row["file_bytes"]), float(row["val_error"]))
    except (KeyError, TypeError, ValueError) as err:
        raise PlotError(f"{what}: needs numeric file_bytes and val_error ({err!r})") from None


def search_summary(summary: Mapping[str, Any]) -> SearchSummary:
    """search_front.json as a SearchSummary: its front, chosen point, today's defaults' error and
    trial count (it holds no other trial, so the figure shows the front, not every trial)."""
    try:
        dense = float(summary["dense_bytes"])
        rows, chosen = summary["front"], summary["chosen"]
        defaults_error, trials = summary["defaults_val_error"], int(summary["trials"])
    except (KeyError, TypeError, ValueError) as err:
        raise PlotError(f"search_front.json: {err!r}; rerun the search stage (dvc repro)") from None
    return SearchSummary(
        front=tuple(_point(r, dense, "search front") for r in rows),
        chosen=_point(chosen, dense, "search chosen"),
        defaults_val_error=float(defaults_error),
        trials=trials,
    )


def final_file(evaluation: Mapping[str, Any]) -> FinalFile:
    """evaluate.json as a FinalFile: `file_ratio`, `errors.file.{test,val}`, `errors.dense.test`."""
    try:
        errors = evaluation["errors"]
        return FinalFile(
            ratio=float(evaluation["file_ratio"]),
            test_error=float(errors["file"]["test"]),
            val_error=float(errors["file"]["val"]),
            dense_test_error=errors.get("dense", {}).get("test"),
        )
    except (KeyError, TypeError, ValueError) as err:
        raise PlotError(
            f"evaluate.json: needs file_ratio and errors.file.test/val ({err!r}); rerun evaluate"
        ) from None


def final_pareto_figure(
    search: SearchSummary,
    final: FinalFile,
    anchors: Sequence[Anchor],
    title: str = "Compression search and the final file",
    guides: Sequence[float] = (),
) -> bytes:
    """File ratio (log) against error: the search's front, today's defaults and the chosen point
    (validation errors), the final file at its test and validation errors joined by a line, the
    dense test error, published anchors (test errors) and a thin line at each `guides` error."""
    with _figure(8.0, 5.5) as figure:
        ax = figure.subplots()
        for level in guides:
            ax.axhline(100 * level, color="0.6", linewidth=0.6)
            ax.annotate(f"{100 * level:.2f}%", (0, 100 * level), fontsize=7, color="0.4",
                        xycoords=("axes fraction", "data"), xytext=(2, 2),
                        textcoords="offset points")  # fmt: skip
        ax.plot(
            [p.ratio for p in search.front], [100 * p.error for p in search.front],
            color="#4c72b0", marker="o", ms=4,
            label=f"Pareto front of {search.trials} trials (val)",
        )  # fmt: skip
        ax.axhline(100 * search.defaults_val_error, color="#dd8452", linestyle=":", linewidth=1,
                   label="today's defaults as a trial (val)")  # fmt: skip
        _scatter(ax, [search.chosen], color="#c44e52", marker="*", s=160,
                 label="chosen (within error budget, val)")  # fmt: skip
        if final.dense_test_error is not None:
            ax.axhline(100 * final.dense_test_error, color="0.3", linestyle="--", linewidth=1,
                       label=f"dense (test, {100 * final.dense_test_error:.2f}%)")  # fmt: skip
        ax.plot([final.ratio] * 2, [100 * final.val_error, 100 * final.test_error],
                color="#8172b3", linewidth=0.8)  # fmt: skip
        _scatter(ax, [Point(final.ratio, final.test_error)], color="#8172b3", marker="D", s=60,
                 label=f"final file (test, {final.ratio:.1f}x)")  # fmt: skip
        _scatter(ax, [Point(final.ratio, final.val_error)], facecolors="none",
                 edgecolors="#8172b3", marker="D", s=60, label="final file (val)")  # fmt: skip
        finish_ratio_axes(ax, anchors, title)
        if guides:
            _zoom_to_guides(ax, search, final, guides)
        return _png(figure)


def _zoom_to_guides(ax, search: SearchSummary, final: FinalFile, guides: Sequence[float]) -> None:
    """Error axis up to three times the highest guide (and above the final file), so the levels
    the guides mark are readable; says how many front points lie above it."""
    top = 100 * max(3 * max(guides), 1.5 * max(final.val_error, final.test_error))
    ax.set_ylim(0, top)
    hidden = sum(100 * p.error > top for p in search.front)
    if hidden:
        points = "point" if hidden == 1 else "points"
        ax.annotate(f"{hidden} front {points} above {top:.1f}% not shown", (0.99, 0.99),
                    xycoords="axes fraction", ha="right", va="top", fontsize=7,
                    color="#4c72b0")  # fmt: skip


def _scatter(ax, points: Sequence[Point], **style: Any) -> None:
    """Points at (file ratio, error %)."""
    ax.scatter([p.ratio for p in points], [100 * p.error for p in points], **style)
