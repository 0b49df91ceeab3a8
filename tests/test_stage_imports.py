"""A stage process imports only what it uses: the start-up cost is guarded without timing anything.

`python -m flows.run STAGE` imports flows.run, then the stage's flow module; each pair is imported
here cleanly (tests/stage_probe.py), and the heavy libraries the stage does not use must be absent
from sys.modules. The timing record that flows.run writes (runtime/timing.py) and the stage flow's
parameter encoding (runtime/stageflow.py) are checked too.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from stage_probe import session_probes

from runtime.timing import PHASES, StageClock, process_age, timing_path

pytestmark = pytest.mark.long(5)

ROOT = Path(__file__).parents[1]
STAGES = ("data", "train", "prune", "quantize", "encode", "evaluate", "plots")
HEAVY: dict[str, tuple[str, ...]] = {
    "torchvision": (),  # only the torchvision data sources and networks, inside their functions
    "sklearn": (),  # the sklearn k-means engine imports it on its first call
    "scipy": (),
    "matplotlib": ("plots",),
    "fastapi": (),  # Prefect imports it to encode parameters; stage flows skip that
    "deepcompression.format.container": ("encode", "evaluate"),  # the file format
}
"""Heavy module -> the only stages whose flow module may import it."""
RUN_ALONE = (
    "import json, sys\n"
    "import flows.run\n"
    "print(json.dumps(sorted(sys.modules)))\n"
)
"""flows.run in a fresh interpreter, with nothing preloaded (stage_probe preloads torch)."""


@pytest.fixture(scope="module")
def loaded(tmp_path_factory, worker_id) -> dict[str, set[str]]:
    """sys.modules after importing flows.run alone and with each stage's flow."""
    probes = session_probes(tmp_path_factory, worker_id)
    hidden = [m for m in HEAVY if m in probes["preloaded"]]
    assert not hidden, f"stage_probe's preload imports {hidden}: the probes cannot see them"
    result = {s: set(probes[f"flows.run flows.{s}"]["modules"]) for s in STAGES}
    alone = subprocess.run(
        [sys.executable, "-c", RUN_ALONE], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert alone.returncode == 0, alone.stderr[-3000:]
    return result | {"run": set(json.loads(alone.stdout))}


@pytest.mark.parametrize("stage", STAGES)
def test_a_stage_imports_no_heavy_library_it_does_not_use(stage, loaded):
    """torchvision, scikit-learn/scipy, matplotlib, FastAPI and the file format stay out of the
    stages that do not use them (each costs tenths of a second to seconds per process)."""
    unused = [m for m, users in HEAVY.items() if stage not in users and m in loaded[stage]]
    assert not unused, f"flows.{stage} imports {unused}: import them where they are used"


def test_flows_run_alone_imports_neither_torch_nor_prefect(loaded):
    """Params errors answer at once, and Prefect reads the stage settings set before its import."""
    assert not {"torch", "prefect"} & loaded["run"]


def test_the_clock_counts_from_the_process_start():
    """The process is older than its first mark; marks keep their first value."""
    age = process_age()
    assert 0.0 < age < 24 * 3600
    clock = StageClock.since_process_start()
    clock.mark("imports")
    first = clock.marks["imports"]
    time.sleep(0.01)
    clock.mark("imports")
    assert clock.marks["imports"] == first >= age - 0.05
    assert abs(clock.started_at - (time.time() - time.perf_counter() + clock.origin)) < 0.05


def test_the_record_splits_fixed_cost_and_work():
    """fixed = start to body, work = the body, total = start to the end; None without a body."""
    clock = StageClock(origin=0.0, started_at=1000.0)
    for phase, at in zip(PHASES, (0.1, 0.2, 1.0, 1.5, 2.0, 2.5, 7.5, 8.0), strict=True):
        clock.mark(phase, at=at)
    record = clock.record("train", "lenet5", completed=True)
    assert (record["fixed_seconds"], record["work_seconds"], record["total_seconds"]) == (
        2.5,
        5.0,
        8.0,
    )
    assert (record["started_at"], record["ended_at"]) == (1000.0, 1008.0)
    assert list(record["phases"]) == list(PHASES)
    failed = StageClock(origin=0.0, started_at=0.0, marks={"params": 1.0, "ended": 1.2})
    record = failed.record("train", "lenet5", completed=False)
    assert (record["fixed_seconds"], record["work_seconds"], record["total_seconds"]) == (
        None,
        None,
        1.2,
    )


def test_timing_files_are_untracked_run_records(tmp_path):
    """runs/<model>/timing/<stage>-process.json; shared stages under runs/shared/."""
    assert timing_path(tmp_path, "train", "lenet5") == (
        tmp_path / "runs" / "lenet5" / "timing" / "train-process.json"
    )
    assert timing_path(tmp_path, "data", None) == (
        tmp_path / "runs" / "shared" / "timing" / "data-process.json"
    )


STAGE_FLOW_PROBE = """
import json, sys
from prefect import Flow
from runtime.stageflow import StageFlow, staged
from runtime.timing import StageClock
from runtime.resilient import flow

@flow(name="probe")
def probe(params_path: str = "params.yaml", root: str = ".", models: list[str] | None = None):
    return [params_path, root, models]

clock = StageClock(origin=0.0, started_at=0.0)
wrapped = staged(probe, clock)
values = [{"params_path": "p.yaml", "root": "/tmp/x", "models": ["a", "b"]},
          {"params_path": "p.yaml", "root": ".", "models": None}]
ours = [wrapped.unit.serialize_parameters(v) for v in values]
fastapi_before = "fastapi" in sys.modules
prefects = [Flow.serialize_parameters(wrapped.unit, v) for v in values]
print(json.dumps({
    "same": ours == prefects, "fastapi_before": fastapi_before,
    "stage_flow": isinstance(wrapped.unit, StageFlow), "original": type(probe.unit).__name__,
    "result": wrapped.fn("p.yaml", ".", None), "marks": sorted(clock.marks),
}))
"""


def test_stage_flows_store_parameters_like_prefect_without_fastapi():
    """The stage's flow copy encodes plain parameters as Prefect does, without importing FastAPI,
    and marks its body's start and end; the stage's own flow object is left unchanged."""
    out = subprocess.run(
        [sys.executable, "-c", STAGE_FLOW_PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    ).stdout
    report = json.loads(out.splitlines()[-1])
    assert report["same"] and not report["fastapi_before"]
    assert report["stage_flow"] and report["original"] == "Flow"
    assert report["result"] == ["p.yaml", ".", None]
    assert report["marks"] == ["body_ended", "body_started"]
