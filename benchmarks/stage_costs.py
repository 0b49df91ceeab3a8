"""Per DVC stage: fixed cost (process start to the flow body) vs work; the pipeline wall time.

    .venv/bin/python -m benchmarks.stage_costs [ROOT] [--max-gap 60] [--all]

Reads the untracked timing records that `python -m flows.run` writes for every stage process,
runs/<model>/timing/<stage>-process.json (runs/shared/ for the data stage; runtime/timing.py), and
prints markdown tables: one row per stage run in the order they ran, then per stage over the
models, then the pipeline's totals and its wall time from the first stage's start to the last
stage's end (the rest of the wall time is DVC's own work and the processes' exits). A stage's
total = fixed (imports and set-up) + work (the flow's body) + finish (the flow run's end); its
runner is `warm` when the warm stage runner forked it (runtime/warm.py), else `cold`.

Stages that DVC skipped keep the record of an earlier run: only the latest run is shown, i.e. the
records chained back from the newest one with at most --max-gap seconds between one's end and
the next one's start (--all shows every record). The `check` stage and `flows.run pipeline`
(one process for every stage) are not counted.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from deepcompression.report import markdown_table

STAGE_ORDER = ("data", "train", "prune", "quantize", "encode", "evaluate", "plots")


@dataclass(frozen=True)
class StageRun:
    """One stage process's timing record."""

    stage: str
    model: str
    started_at: float
    ended_at: float
    fixed: float | None
    work: float | None
    total: float
    completed: bool
    runner: str = "cold"
    """`warm`: forked by the warm stage runner (runtime/warm.py); `cold`: its own imports."""

    @property
    def finish(self) -> float | None:
        """Body end to stage end: the flow run's final state, heartbeat stop and log flush."""
        if self.fixed is None or self.work is None:
            return None
        return self.total - self.fixed - self.work

    @classmethod
    def from_record(cls, record: dict, folder: str) -> StageRun:
        """From a runtime/timing.py record; `folder` (runs/<folder>/) names the model if absent."""
        return cls(
            stage=record["stage"],
            model=record.get("model") or folder,
            started_at=record["started_at"],
            ended_at=record["ended_at"],
            fixed=record.get("fixed_seconds"),
            work=record.get("work_seconds"),
            total=record["total_seconds"],
            completed=bool(record.get("completed")),
            runner=record.get("runner") or "cold",
        )


def read_runs(root: Path) -> list[StageRun]:
    """Every DVC stage's timing record under `root`/runs, oldest first."""
    runs = []
    for path in (root / "runs").glob("*/timing/*-process.json"):
        run = StageRun.from_record(json.loads(path.read_text()), path.parents[1].name)
        if run.stage in STAGE_ORDER:
            runs.append(run)
    return sorted(runs, key=lambda r: r.started_at)


def latest_run(runs: Sequence[StageRun], max_gap: float) -> list[StageRun]:
    """The records of the latest pipeline run: chained back from the newest, gaps <= max_gap."""
    chosen: list[StageRun] = []
    for run in sorted(runs, key=lambda r: r.ended_at, reverse=True):
        if chosen and min(r.started_at for r in chosen) - run.ended_at > max_gap:
            break
        chosen.append(run)
    return sorted(chosen, key=lambda r: r.started_at)


def seconds(value: float | None) -> str:
    """`1.23`, or `n/a` for a phase that did not happen (the body of a failed stage)."""
    return "n/a" if value is None else f"{value:.2f}"


def share(part: float | None, total: float) -> str:
    """`part` as a percentage of `total`."""
    return "n/a" if part is None or total <= 0 else f"{100 * part / total:.0f}%"


def run_rows(runs: Sequence[StageRun]) -> list[dict]:
    """One row per stage process, in the order they ran."""
    return [
        {
            "stage": r.stage,
            "model": r.model,
            "started": time.strftime("%H:%M:%S", time.localtime(r.started_at)),
            "fixed s": seconds(r.fixed),
            "work s": seconds(r.work),
            "finish s": seconds(r.finish),
            "total s": seconds(r.total),
            "fixed share": share(r.fixed, r.total),
            "runner": r.runner,
            "completed": r.completed,
        }
        for r in runs
    ]


def _sum(values: Sequence[float | None]) -> float | None:
    """Sum, or None if any value is missing."""
    return None if any(v is None for v in values) else sum(v for v in values if v is not None)


def stage_rows(runs: Sequence[StageRun]) -> list[dict]:
    """Per stage over its models: runs, summed fixed cost, work and total, mean fixed cost."""
    rows = []
    for stage in STAGE_ORDER:
        mine = [r for r in runs if r.stage == stage]
        if not mine:
            continue
        fixed, total = _sum([r.fixed for r in mine]), sum(r.total for r in mine)
        rows.append(
            {
                "stage": stage,
                "runs": len(mine),
                "fixed s": seconds(fixed),
                "mean fixed s": seconds(None if fixed is None else fixed / len(mine)),
                "work s": seconds(_sum([r.work for r in mine])),
                "finish s": seconds(_sum([r.finish for r in mine])),
                "total s": seconds(total),
                "fixed share": share(fixed, total),
            }
        )
    return rows


def pipeline_row(runs: Sequence[StageRun]) -> dict:
    """Totals over the stage processes and the wall time from first start to last end."""
    total = sum(r.total for r in runs)
    wall = max(r.ended_at for r in runs) - min(r.started_at for r in runs)
    fixed = _sum([r.fixed for r in runs])
    return {
        "stage runs": len(runs),
        "fixed s": seconds(fixed),
        "work s": seconds(_sum([r.work for r in runs])),
        "finish s": seconds(_sum([r.finish for r in runs])),
        "total s": seconds(total),
        "fixed share": share(fixed, total),
        "wall s (first start to last end)": seconds(wall),
        "between stages s": seconds(wall - total),
    }


def report(runs: Sequence[StageRun], skipped: int) -> str:
    """The three tables as markdown."""
    parts = [
        "Stage processes\n",
        markdown_table(run_rows(runs)),
        "Per stage\n",
        markdown_table(stage_rows(runs)),
        "Pipeline\n",
        markdown_table([pipeline_row(runs)]),
    ]
    if skipped:
        parts.append(f"({skipped} older record(s) not in this run: see --all)")
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    """Print the tables for a workspace root."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage_costs", description=__doc__)
    parser.add_argument("root", nargs="?", default=".", type=Path, help="workspace root")
    parser.add_argument("--max-gap", type=float, default=60.0, help="seconds between stages")
    parser.add_argument("--all", action="store_true", help="every record, not the latest run")
    args = parser.parse_args(argv)
    runs = read_runs(args.root)
    if not runs:
        raise SystemExit(f"no {args.root}/runs/*/timing/*-process.json: run the pipeline first")
    shown = runs if args.all else latest_run(runs, args.max_gap)
    print(report(shown, len(runs) - len(shown)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
