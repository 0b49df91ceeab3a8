"""What `make run` is about to do: which stages `dvc repro` will run, and about how long each takes.

Printed before `dvc repro` starts, so an hour-long stage (LeNet-5's search) never comes as a
surprise. The stages come from `dvc status --json` (those whose inputs changed) and `dvc dag
--dot` (those after them, which run when an input they read changes); the times from this
checkout's last timing record of each stage (runs/<model>/timing/, written by every stage), else
from `ESTIMATES_S`, measured on 2 CPU cores (BENCHMARKS.md, README).
`python -m runtime.preview [TARGET ...]`: the targets `dvc repro` is given (none: all).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from runtime.timing import timing_path

ESTIMATES_S: dict[str, float] = {
    "check": 5,
    "data": 10,
    "train@lenet_300_100": 50,
    "train@lenet5": 150,
    "prune@lenet_300_100": 140,
    "prune@lenet5": 290,
    "quantize@lenet_300_100": 30,
    "quantize@lenet5": 120,
    "quantize": 60,
    "encode": 10,
    "evaluate": 20,
    "plots": 15,
    "sensitivity@lenet_300_100": 40,
    "sensitivity@lenet5": 130,
    "sensitivity": 60,
    "search@lenet_300_100": 1200,
    "search@lenet5": 2450,
    "search": 1800,
    "confirm@lenet_300_100": 140,
    "confirm@lenet5": 320,
    "confirm": 300,
}
"""Seconds on 2 CPU cores when this checkout has no record of a stage: by its full name, else by
its kind (the part before @): the stages of the committed run of 2026-12-07 (README.md; the
searches: 128 LeNet-300-100 trials about 20 min, 192 LeNet-5 trials about 40 min), confirm
stages at one point each with the committed recipes (each further point costs as much again)."""
NOTE_ONLY = ("sensitivity", "search", "confirm")
"""Stages that do no work for a model whose `allocation` is `params` (they write a note)."""
NOTE_S = 5.0
NOTE_RECORDS = {
    "sensitivity": "metrics/{model}/sensitivity.json",
    "search": "search/{model}/allocation.json",
    "confirm": "search/{model}/confirmed.json",
}
"""The record each note-only stage writes: it holds `skipped` when the last run wrote a note."""
UNKNOWN_S = 60.0
"""A stage of neither table (one added to dvc.yaml since)."""
LONG_S = 600.0
"""A stage at least this long is named in a warning line."""
EDGE = re.compile(r'^"([^"]+)"\s*->\s*"([^"]+)";?$')


@dataclass(frozen=True)
class Planned:
    """A stage `dvc repro` runs (`certain`) or runs if an input it reads changes, and its time."""

    stage: str
    certain: bool
    seconds: float
    source: str


def must_run(changes: list) -> bool:
    """Whether a stage's `dvc status --json` entry makes it run whatever its upstream writes: it
    always runs, its command changed, an output is missing or changed, or a dep or param changed.
    Deps that are only missing (upstream outputs a fresh clone has not made yet) leave it to the
    bytes the upstream writes: the same as dvc.lock records, and DVC skips it."""
    if "frozen" in changes:
        return False
    for change in changes:
        if isinstance(change, str):
            return True
        for kind, detail in change.items():
            only_missing = kind == "changed deps" and all(v == "deleted" for v in detail.values())
            if not only_missing:
                return True
    return False


def changed_stages(status: dict) -> list[str]:
    """The stages `dvc status --json` reports changed so that they run, in its order."""
    return [name for name, changes in status.items() if changes and must_run(changes)]


def pending_stages(status: dict) -> list[str]:
    """The stages whose only change is missing deps: they run if their upstream's bytes differ."""
    return [name for name, changes in status.items() if changes and not must_run(changes)
            and "frozen" not in changes]  # fmt: skip


def dag_edges(dot: str) -> list[tuple[str, str]]:
    """(upstream, downstream) pairs of `dvc dag --dot`'s output."""
    return [m.groups() for line in dot.splitlines() if (m := EDGE.match(line.strip()))]


def downstream(stages: list[str], edges: list[tuple[str, str]]) -> list[str]:
    """Every stage reached from `stages` along the edges, in first-reached order, less those."""
    after: dict[str, list[str]] = {}
    for up, down in edges:
        after.setdefault(up, []).append(down)
    seen, order, queue = set(stages), [], list(stages)
    while queue:
        for nxt in after.get(queue.pop(0), []):
            if nxt not in seen:
                seen.add(nxt)
                order.append(nxt)
                queue.append(nxt)
    return order


def upstream(targets: list[str], edges: list[tuple[str, str]]) -> set[str]:
    """The targets and every stage they read from, transitively: what `dvc repro TARGETS` may
    run."""
    before: dict[str, list[str]] = {}
    for up, down in edges:
        before.setdefault(down, []).append(up)
    seen, queue = set(targets), list(targets)
    while queue:
        for prev in before.get(queue.pop(), []):
            if prev not in seen:
                seen.add(prev)
                queue.append(prev)
    return seen


def recorded_seconds(root: Path, stage: str) -> float | None:
    """The total seconds of the stage's last completed run in this checkout, if recorded."""
    kind, _, model = stage.partition("@")
    path = timing_path(root, kind, model or None)
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    seconds = record.get("total_seconds")
    return float(seconds) if record.get("completed") and seconds is not None else None


def allocation_of(root: Path, model: str) -> str | None:
    """The model's `allocation` in root/params.yaml, if it can be read."""
    try:
        raw = yaml.safe_load((root / "params.yaml").read_text())
        return raw["models"][model].get("allocation")
    except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
        return None


def last_run_was_note(root: Path, kind: str, model: str) -> bool:
    """Whether the note-only stage's record in this checkout says it did no work (then its
    recorded time is a note's, not what a searched run costs)."""
    try:
        record = json.loads((root / NOTE_RECORDS[kind].format(model=model)).read_text())
    except (KeyError, OSError, ValueError):
        return False
    return isinstance(record, dict) and "skipped" in record


def estimate(root: Path, stage: str) -> tuple[float, str]:
    """(seconds, where the figure comes from) for one stage."""
    kind, _, model = stage.partition("@")
    if kind in NOTE_ONLY and model and allocation_of(root, model) == "params":
        return NOTE_S, "allocation: params, writes a note"
    noted = kind in NOTE_ONLY and bool(model) and last_run_was_note(root, kind, model)
    if not noted and (seconds := recorded_seconds(root, stage)) is not None:
        return seconds, "last run here"
    for key in (stage, kind):
        if key in ESTIMATES_S:
            return ESTIMATES_S[key], "estimate, 2 cores"
    return UNKNOWN_S, "no record: a guess"


def plan(root: Path, status: dict, dot: str, targets: list[str] | None = None) -> list[Planned]:
    """Changed stages first, then those after them (within the targets' pipelines, when given),
    each with its time."""
    edges = dag_edges(dot)
    changed = changed_stages(status)
    after = downstream(changed, edges)
    pending = [s for s in pending_stages(status) if s not in after]
    stages = [(s, True) for s in changed] + [(s, False) for s in after + pending]
    if targets:
        allowed = upstream(targets, edges)
        stages = [(s, certain) for s, certain in stages if s in allowed]
    return [Planned(s, certain, *estimate(root, s)) for s, certain in stages]


def minutes(seconds: float) -> str:
    """`45 s` or `12 min`."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.0f} min"


def report(planned: list[Planned]) -> list[str]:
    """The lines printed before `dvc repro`."""
    if not planned:
        return ["dvc repro: every stage is up to date; nothing will run."]
    lines = ["dvc repro will run (stage, about how long, from where):"]
    for p in planned:
        mark = "  " if p.certain else "? "
        lines.append(f"  {mark}{p.stage:<28} {minutes(p.seconds):>7}  ({p.source})")
    sure = sum(p.seconds for p in planned if p.certain)
    every = sum(p.seconds for p in planned)
    lines.append(f"  about {minutes(sure)} for the changed stages, up to {minutes(every)} in all")
    if any(not p.certain for p in planned):
        lines.append(
            "  ? runs only if an input it reads changes (its upstream writes other bytes than "
            "dvc.lock records)"
        )
    lines += [f"  note: {p.stage} is long (about {minutes(p.seconds)})" for p in planned
              if p.seconds >= LONG_S]  # fmt: skip
    lines.append("  (a stage whose inputs DVC ran before is restored from its run cache instead)")
    return lines


def dvc(*args: str) -> str:
    """stdout of `dvc ARGS` in the current folder (the dvc on PATH, else this interpreter's);
    RuntimeError naming the command otherwise."""
    program = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    done = subprocess.run([program, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"`dvc {' '.join(args)}` failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    """Print the plan for `dvc repro [TARGET ...]`; a preview that fails never stops the run."""
    targets = sys.argv[1:] if argv is None else argv
    try:
        status_args = ["status", "--json", *(["--with-deps", *targets] if targets else [])]
        status = json.loads(dvc(*status_args) or "{}")
        dot = dvc("dag", "--dot")
    except (OSError, RuntimeError, ValueError) as err:
        print(f"(no preview of the stages: {err})")
        return 0
    print("\n".join(report(plan(Path("."), status, dot, targets))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
