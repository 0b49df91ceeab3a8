"""A Prefect outage never stops a stage: a real server is killed in the middle of a flow.

The stage process (runtime.resilient tasks under runtime.guard, like `python -m flows.run`) must
keep computing, write its outputs, warn once and exit 0 within seconds; once the server is back, the
run is caught up (Completed, its artifacts created) instead of staying Running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

from runtime.monitor import PendingRecord
from runtime.recovery import OUTAGE_MESSAGE, STRANDED_MESSAGE, api_client
from runtime.server import LocalServer, ensure_api_url, start, stop

REPO = Path(__file__).parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.long(25)]

STAGE = textwrap.dedent(
    """
    import json, os, signal, sys, time
    from pathlib import Path
    from types import SimpleNamespace

    from runtime.guard import connect, run_stage

    connect()
    from prefect import flow

    from runtime.artifacts import publish_report
    from tasks.io import write_json
    from runtime.log import epoch_reporter
    from runtime.resilient import task

    SERVER_PID, KILL_AT, OUT = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])


    @task(task_run_name="square-{i}")
    def square(i: int) -> int:
        report = epoch_reporter(f"square {i}", 1)
        if i == KILL_AT:
            os.killpg(int(SERVER_PID.read_text()), signal.SIGKILL)
            Path(f"{OUT}.killed").write_text(repr(time.time()))
        report(SimpleNamespace(epoch=1, lr=0.1, train_loss=0.5, val_loss=0.25, val_error=0.0625,
                               seconds=0.0))
        return i * i


    @flow(name="outage-check")
    def outage_flow(n: int) -> list[int]:
        squares = [square(i) for i in range(1, n + 1)]
        write_json(OUT, {"squares": squares})
        rows = [{"i": i, "square": s} for i, s in enumerate(squares, start=1)]
        publish_report("outage", "Squares", rows, {"val_error": 0.0625}, rows_title="Per call")
        return squares


    run_stage(outage_flow, n=4)
    """
)


FLAKY_STAGE = textwrap.dedent(
    """
    import json, sys
    from pathlib import Path

    import httpx

    from runtime.guard import connect, run_stage

    connect()
    from prefect import flow
    from prefect.context import FlowRunContext
    from prefect.task_engine import SyncTaskRunEngine

    from runtime.resilient import task

    OUT = Path(sys.argv[1])
    begin_run = SyncTaskRunEngine.begin_run


    def busy_once(engine):
        # one transient 503 for square-2, after its engine recorded the task run (Pending)
        if engine.task_run.name == "square-2" and not OUT.with_suffix(".failed").exists():
            OUT.with_suffix(".failed").write_text("503")
            request = httpx.Request("POST", "http://api/task_runs/")
            response = httpx.Response(503, request=request)
            raise httpx.HTTPStatusError("503 busy", request=request, response=response)
        return begin_run(engine)


    SyncTaskRunEngine.begin_run = busy_once


    @task(task_run_name="square-{i}")
    def square(i: int) -> int:
        return i * i


    @flow(name="flaky-check")
    def flaky_flow(n: int) -> list[int]:
        squares = [square(i) for i in range(1, n + 1)]
        run = str(FlowRunContext.get().flow_run.id)
        OUT.write_text(json.dumps({"run": run, "squares": squares}))
        return squares


    run_stage(flaky_flow, n=3)
    """
)


def run_stage(local: LocalServer, workdir: Path, kill_at: int) -> tuple[subprocess.Popen, str]:
    """Run the stage script against `local`; returns the finished process and its output."""
    script = workdir / "stage.py"
    script.write_text(STAGE)
    env = dict(os.environ, PYTHONPATH=str(REPO), PREFECT_API_URL=local.api_url)
    env.update(DC_PENDING_DIR=str(local.pending_dir), OMP_NUM_THREADS="1")
    env["PREFECT_HOME"] = str(workdir / "client-home")
    args = [str(local.pid_file), str(kill_at), str(workdir / "squares.json")]
    process = subprocess.run(
        [sys.executable, str(script), *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return process, process.stdout + process.stderr


def test_killed_server_mid_flow_loses_no_work_and_is_caught_up(
    unprepared_server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    process, output = run_stage(unprepared_server, tmp_path, kill_at=2)
    exited = time.time()
    killed = float((tmp_path / "squares.json.killed").read_text())
    print(f"{output}\n(exited {exited - killed:.1f} s after the server was killed)")  # -rP

    assert process.returncode == 0, output
    assert json.loads((tmp_path / "squares.json").read_text()) == {"squares": [1, 4, 9, 16]}
    assert exited - killed < 30, f"took {exited - killed:.0f} s to finish after the outage"
    warnings = [line for line in output.splitlines() if "is unreachable" in line]
    assert len(warnings) == 1, output
    assert "Traceback" not in output and len(output.splitlines()) < 40, output
    assert "not recorded in Prefect" in output

    (pending,) = unprepared_server.pending_dir.glob("*-*-*-*-*.json")
    record = PendingRecord.load(pending)
    assert record.state == "COMPLETED"
    assert record.unrecorded_tasks == ["square-3", "square-4"]
    assert {a["key"] for a in record.artifacts} == {"outage-report", "outage-metrics"}

    stop(unprepared_server, grace_s=1)
    monkeypatch.setenv("PREFECT_API_URL", unprepared_server.api_url)
    ensure_api_url(unprepared_server)  # the next stage restarts the server, which catches up

    assert list(unprepared_server.pending_dir.glob("*.json")) == []
    with api_client(unprepared_server.api_url) as client:
        state = client.read_flow_run(UUID(record.flow_run_id)).state
        artifacts = client.read_artifacts()
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[UUID(record.flow_run_id)]))
        )
    assert state is not None and state.is_completed(), state
    assert OUTAGE_MESSAGE in (state.message or "")
    run_artifacts = {a.key for a in artifacts if str(a.flow_run_id) == record.flow_run_id}
    assert {"outage-report", "outage-metrics", "progress-square-1"} <= run_artifacts
    assert any("square 4 epoch 1/1" in log.message for log in logs), "kept logs are sent"


def test_a_transient_api_error_finishes_the_task_run_and_says_what_happened(
    unprepared_server: LocalServer, tmp_path: Path
) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    start(timeout_s=120, server=unprepared_server, prepare=False)  # the other test stopped it
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY_STAGE)
    env = dict(os.environ, PYTHONPATH=str(REPO), PREFECT_API_URL=unprepared_server.api_url)
    env.update(
        DC_PENDING_DIR=str(unprepared_server.pending_dir), PREFECT_HOME=str(tmp_path / "home")
    )
    out = tmp_path / "squares.json"
    done = subprocess.run(
        [sys.executable, str(script), str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    result = json.loads(out.read_text())
    assert result["squares"] == [1, 4, 9] and out.with_suffix(".failed").exists()
    assert "is unreachable" not in output, output
    assert list(unprepared_server.pending_dir.glob("*.json")) == [], "the stage caught itself up"

    run_id = UUID(result["run"])
    runs = FlowRunFilter(id=FlowRunFilterId(any_=[run_id]))
    with api_client(unprepared_server.api_url) as client:
        deadline = time.monotonic() + 20
        while True:
            states = {t.name: t.state for t in client.read_task_runs(flow_run_filter=runs)}
            if len(states) == 3 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        artifacts = [a for a in client.read_artifacts() if a.flow_run_id == run_id]
        flow_state = client.read_flow_run(run_id).state
    assert flow_state is not None and flow_state.is_completed()
    # the engine left square-2's record Pending under its first name, square-<dynamic key>
    stranded = [state for state in states.values() if state.message == STRANDED_MESSAGE]
    assert len(states) == 3 and len(stranded) == 1, states
    assert all(state.is_completed() for state in states.values()), states
    (note,) = [a.data for a in artifacts if a.type == "markdown"]
    assert "failed Prefect API call" in note and "while the API answered" in note, note
    assert "unreachable" not in note and "square-2: COMPLETED" in note, note
