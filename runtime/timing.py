"""A stage process's fixed cost (start to its flow's body) and work (the body), in seconds.

`python -m flows.run` marks the end of each phase in seconds since the process started, read from
/proc, so the interpreter's start-up and every import count. The record goes to the untracked
`runs/<model>/timing/<stage>-process.json` (never a DVC output; stages that are not per model,
data and pipeline, under `runs/shared/`); benchmarks/stage_costs.py tabulates the records.
Imports nothing heavy: it is loaded before torch and Prefect.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from runtime.workspace import Workspace

SHARED = "shared"
"""The runs/ folder of stages that are not run per model (data, the whole pipeline)."""
PHASES = (
    "imports",
    "handoff",
    "params",
    "connect",
    "flow_import",
    "body_started",
    "body_ended",
    "ended",
)
"""Marks in order: flows.run imported, the warm runner's child started (warm stages only), params
validated, Prefect API connected, the stage's flow module imported, its body started and ended,
the flow run finished (states reported)."""


def process_age() -> float:
    """Seconds since this process started (/proc/self/stat start time); 0.0 without /proc."""
    try:
        stat = Path("/proc/self/stat").read_text()
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return 0.0
    return max(uptime - start_ticks / os.sysconf("SC_CLK_TCK"), 0.0)


@dataclass
class StageClock:
    """Phase marks of one stage process, in seconds since the process started."""

    origin: float
    """`time.perf_counter()` at the process start."""
    started_at: float
    """Epoch seconds of the process start."""
    marks: dict[str, float] = field(default_factory=dict)
    runner: str = "cold"
    """`warm`: forked by the warm runner (runtime/warm.py); `cold`: its own imports."""
    runner_note: str | None = None
    """Why a stage ran cold (no warm runner, a refusal)."""

    @classmethod
    def since_process_start(cls) -> StageClock:
        """A clock whose zero is this process's start."""
        age = process_age()
        return cls(origin=time.perf_counter() - age, started_at=time.time() - age)

    @classmethod
    def since(cls, started_at: float, runner: str) -> StageClock:
        """A clock whose zero is `started_at` (epoch seconds): the caller's start, for a stage
        the warm runner forked."""
        age = time.time() - started_at
        return cls(origin=time.perf_counter() - age, started_at=started_at, runner=runner)

    def mark(self, phase: str, at: float | None = None) -> None:
        """Note the end of `phase`, now or at perf_counter value `at`; the first mark is kept."""
        now = time.perf_counter() if at is None else at
        self.marks.setdefault(phase, round(now - self.origin, 3))

    def record(self, stage: str, model: str | None, completed: bool) -> dict[str, Any]:
        """Fixed cost (start to body), work (the body) and total seconds, and every mark; fixed
        and work are None when the body did not run (or did not end)."""
        ended = self.marks.get("ended", round(time.perf_counter() - self.origin, 3))
        body_started = self.marks.get("body_started")
        body_ended = self.marks.get("body_ended")
        work = None if body_started is None or body_ended is None else body_ended - body_started
        return {
            "stage": stage,
            "model": model,
            "pid": os.getpid(),
            "completed": completed,
            "started_at": round(self.started_at, 3),
            "ended_at": round(self.started_at + ended, 3),
            "fixed_seconds": body_started,
            "work_seconds": None if work is None else round(work, 3),
            "total_seconds": ended,
            "phases": {p: self.marks[p] for p in PHASES if p in self.marks},
            "runner": self.runner,
            "runner_note": self.runner_note,
        }


def timing_path(root: str | Path, stage: str, model: str | None) -> Path:
    """`runs/<model>/timing/<stage>-process.json` (`runs/shared/...` without a model)."""
    return Workspace(Path(root), model or SHARED).timing(f"{stage}-process")


def write_record(path: Path, record: dict[str, Any]) -> None:
    """Write the record atomically; a failure is a warning, never the stage's failure."""
    from tasks.io import write_bytes_atomic

    try:
        write_bytes_atomic(path, (json.dumps(record, indent=2, sort_keys=True) + "\n").encode())
    except OSError as err:
        print(f"warning: stage timing not written: {err}", file=sys.stderr)
