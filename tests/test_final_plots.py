"""Tests for the final Pareto figure: parsing the search and evaluate metrics, the PNG, and the
plots stage writing it only when both metrics files are there."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from test_plots import assert_png, lenet_params, synthetic_workspace

from deepcompression.plots.figures import PlotError
from deepcompression.plots.final import (
    GUIDES,
    FinalFile,
    final_file,
    final_pareto_figure,
    search_summary,
)
from deepcompression.plots.search import PUBLISHED
from flows.plots import FINAL_PARETO, write_plots
from tasks.io import write_json

pytestmark = pytest.mark.long(8)

DENSE_BYTES = 1_000_000


def front_summary(sizes: list[int], errors: list[float], chosen: int = 1) -> dict:
    """A search_front.json like the search stage writes: front rows, chosen row, defaults' error."""
    rows = [
        {"trial": n, "file_bytes": b, "ratio": DENSE_BYTES / b, "val_error": e, "bias": "float16"}
        for n, (b, e) in enumerate(zip(sizes, errors, strict=True))
    ]
    return {
        "model": "lenet_300_100",
        "study": "lenet_300_100-0123456789abcdef",
        "trials": 3 * len(rows),
        "dense_bytes": DENSE_BYTES,
        "error_budget": 0.001,
        "defaults_val_error": errors[chosen] - 0.0005,
        "error_limit": errors[chosen] + 0.0005,
        "chosen": rows[chosen] | {"within_budget": True},
        "front": rows,
    }


def evaluation(file_bytes: int = 20_000, test: float = 0.0164, val: float = 0.0198) -> dict:
    """An evaluate.json with the keys the figure reads (and the others evaluate writes)."""
    return {
        "dense_bytes": DENSE_BYTES,
        "file_bytes": file_bytes,
        "file_ratio": DENSE_BYTES / file_bytes,
        "errors": {
            "dense": {"test": 0.0138, "val": 0.0168},
            "file": {"test": test, "val": val},
        },
        "test_error": test,
        "val_error": val,
    }


def test_parsing_reads_ratios_and_errors_of_both_files() -> None:
    summary = search_summary(front_summary([10_000, 25_000, 50_000], [0.03, 0.02, 0.018]))
    assert [p.ratio for p in summary.front] == [100.0, 40.0, 20.0]
    assert [p.error for p in summary.front] == [0.03, 0.02, 0.018]
    assert summary.chosen.ratio == 40.0 and summary.chosen.error == 0.02
    assert summary.defaults_val_error == pytest.approx(0.0195)
    assert summary.trials == 9
    assert final_file(evaluation(20_000, 0.015, 0.019)) == FinalFile(50.0, 0.015, 0.019, 0.0138)


def test_final_pareto_figure_is_a_deterministic_png_that_moves_with_the_final_file() -> None:
    summary = search_summary(front_summary([10_000, 25_000, 50_000], [0.03, 0.02, 0.018]))
    anchors = PUBLISHED["lenet_300_100"]
    first = final_pareto_figure(summary, final_file(evaluation()), anchors)
    assert_png(first)
    assert first == final_pareto_figure(summary, final_file(evaluation()), anchors)
    assert first != final_pareto_figure(summary, final_file(evaluation(test=0.03)), anchors)
    assert first != final_pareto_figure(summary, final_file(evaluation()), ())
    guided = final_pareto_figure(summary, final_file(evaluation()), anchors, guides=(0.016,))
    assert_png(guided)
    assert guided != first


def test_guides_zoom_the_error_axis_and_count_the_front_points_above_it() -> None:
    from matplotlib.figure import Figure

    from deepcompression.plots.final import _zoom_to_guides

    summary = search_summary(front_summary([10_000, 25_000, 50_000], [0.08, 0.02, 0.018]))
    ax = Figure().subplots()
    _zoom_to_guides(ax, summary, final_file(evaluation()), (0.016,))
    assert ax.get_ylim() == pytest.approx((0.0, 4.8))
    assert [t.get_text() for t in ax.texts] == ["1 front point above 4.8% not shown"]


def test_every_model_s_final_anchors_and_guides_are_errors_and_ratios() -> None:
    """The published points and error guides: ratios above 1, errors as fractions (a percent
    typed as 1.0 would draw a line at 100%); every point the issue names is on LeNet-5's."""
    for anchors in PUBLISHED.values():
        assert all(a.ratio > 1 and 0 < a.error < 0.1 for a in anchors)
    for levels in GUIDES.values():
        assert levels and all(0 < level < 0.1 for level in levels)
    labels = " ".join(a.label for a in PUBLISHED["lenet5"])
    assert all(name in labels for name in ("Deep Compression", "Soft", "Variational", "Bayesian"))


def test_parsing_names_the_missing_key() -> None:
    summary = front_summary([10_000], [0.03], chosen=0)
    del summary["front"]
    with pytest.raises(PlotError, match="front.*rerun the search stage"):
        search_summary(summary)
    broken = evaluation()
    del broken["errors"]["file"]
    with pytest.raises(PlotError, match="errors.file.test/val"):
        final_file(broken)


def test_write_plots_adds_the_final_pareto_after_search_and_evaluate(tmp_path: Path) -> None:
    workspace = synthetic_workspace(tmp_path)
    write_json(workspace.metrics("search_front"), front_summary([10_000, 25_000], [0.03, 0.02]))
    write_json(workspace.metrics("evaluate"), evaluation())
    written = write_plots(*lenet_params(), workspace)
    assert written[FINAL_PARETO] == tmp_path / "plots" / "lenet_300_100" / "pareto_final.png"
    first = written[FINAL_PARETO].read_bytes()
    assert_png(first)
    assert write_plots(*lenet_params(), workspace)[FINAL_PARETO].read_bytes() == first
    write_json(workspace.metrics("evaluate"), evaluation(test=0.025))
    assert write_plots(*lenet_params(), workspace)[FINAL_PARETO].read_bytes() != first


def test_write_plots_skips_the_final_pareto_without_a_search(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    workspace = synthetic_workspace(tmp_path)
    write_json(workspace.metrics("evaluate"), evaluation())
    with caplog.at_level(logging.INFO, logger="deepcompression"):
        written = write_plots(*lenet_params(), workspace)
    assert FINAL_PARETO not in written
    assert not workspace.plot(FINAL_PARETO).exists()
    assert "search_front.json not found" in caplog.text
