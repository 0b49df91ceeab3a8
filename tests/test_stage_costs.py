"""benchmarks/stage_costs.py: the latest run's stage records, per-stage sums and the wall time."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks.stage_costs import (
    latest_run,
    pipeline_row,
    read_runs,
    report,
    run_rows,
    stage_rows,
)
from runtime.timing import timing_path


def write(
    root: Path,
    stage: str,
    model: str | None,
    start: float,
    fixed: float,
    work: float,
    runner: str = "cold",
):
    """A runtime/timing.py record: `fixed` s to the body, `work` s in it, 0.5 s to finish."""
    total = fixed + work + 0.5
    record = {
        "runner": runner,
        "stage": stage,
        "model": model,
        "completed": True,
        "started_at": start,
        "ended_at": start + total,
        "fixed_seconds": fixed,
        "work_seconds": work,
        "total_seconds": total,
        "phases": {},
    }
    path = timing_path(root, stage, model)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_only_the_latest_run_counts(tmp_path):
    """A stage DVC skipped keeps an older record: it is left out of the run and its wall time."""
    write(tmp_path, "train", "b", 1000.0, 3.0, 10.0)  # an hour before the others
    write(tmp_path, "data", None, 4600.0, 2.0, 1.0)
    write(tmp_path, "train", "a", 4605.0, 3.0, 20.0)
    write(tmp_path, "prune", "a", 4630.0, 2.5, 30.0, runner="warm")
    runs = read_runs(tmp_path)
    assert [(r.stage, r.model) for r in runs][0] == ("train", "b")
    latest = latest_run(runs, max_gap=60.0)
    assert [(r.stage, r.model) for r in latest] == [
        ("data", "shared"),
        ("train", "a"),
        ("prune", "a"),
    ]
    row = pipeline_row(latest)
    assert row["fixed s"] == "7.50" and row["work s"] == "51.00" and row["finish s"] == "1.50"
    assert row["wall s (first start to last end)"] == "63.00"  # 4600 -> 4663
    assert row["between stages s"] == "3.00"
    train = next(r for r in stage_rows(latest) if r["stage"] == "train")
    assert (train["runs"], train["fixed s"], train["total s"]) == (1, "3.00", "23.50")
    assert "1 older record(s)" in report(latest, len(runs) - len(latest))
    assert [row["runner"] for row in run_rows(latest)] == ["cold", "cold", "warm"]
