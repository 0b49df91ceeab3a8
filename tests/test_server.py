"""The project's local server marks killed runs Crashed: heartbeats plus a zombie automation.

A real server (runtime.server.start, services on) gets the automation when it starts; a stage
process (heartbeats on, as every `python -m flows.run` sets them) is killed with SIGKILL, and
the automation must turn its Running flow run into Crashed instead of leaving it Running forever;
a flow run the project did not start (no stage tag) runs on past the window untouched. That the UI
of a server on any port talks to that port's API is in tests/test_ui_browser.py.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from uuid import UUID

import pytest

from runtime.recovery import (
    ZOMBIE_AUTOMATION,
    ZOMBIE_WITHIN,
    api_client,
    ensure_zombie_automation,
)
from runtime.server import LocalServer

REPO = Path(__file__).parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.long(25)]

STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    from runtime.guard import connect, run_stage

    connect()
    from prefect import flow, tags
    from prefect.context import FlowRunContext
    from prefect.settings import get_current_settings


    @flow(name="zombie-check")
    def long_flow() -> None:
        run_id = FlowRunContext.get().flow_run.id
        heartbeat = get_current_settings().flows.heartbeat_frequency
        Path(sys.argv[1]).write_text(f"{run_id} {heartbeat}")
        time.sleep(float(sys.argv[2]))


    with tags(*sys.argv[3:]):
        run_stage(long_flow)
    """
)
TEST_WINDOW = timedelta(seconds=10)
"""The shortest window Prefect allows, so that the tests take seconds."""


def test_start_creates_the_zombie_automation_once(server: LocalServer) -> None:
    again = ensure_zombie_automation(server.api_url)
    with api_client(server.api_url) as client:
        (automation,) = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    assert automation.id == again
    trigger = automation.trigger
    assert trigger.posture == "Proactive" and trigger.within == ZOMBIE_WITHIN
    assert trigger.after == {"prefect.flow-run.heartbeat"}
    assert {"prefect.flow-run.heartbeat", "prefect.flow-run.Completed"} <= trigger.expect
    assert trigger.for_each == {"prefect.resource.id"}
    (action,) = automation.actions
    assert action.type == "change-flow-run-state" and action.state == "CRASHED"


def _wait_for(condition, timeout_s: float, what: str):
    """Poll `condition` until it returns something truthy; fail after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.5)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _start_flow(
    server: LocalServer, folder: Path, seconds: float, *tags: str
) -> tuple[subprocess.Popen, Path]:
    """A process running a flow through `run_stage` (stage settings) for `seconds`, tagged."""
    (folder / "stage.py").write_text(STAGE)
    env = dict(os.environ, PYTHONPATH=str(REPO), PREFECT_API_URL=server.api_url)
    env.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)
    env["PREFECT_HOME"] = str(folder / "client-home")
    marker = folder / "run-id"
    command = [sys.executable, "stage.py", str(marker), str(seconds), *tags]
    return subprocess.Popen(command, cwd=folder, env=env, start_new_session=True), marker


@pytest.fixture(scope="module")
def untagged_run(
    server: LocalServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[subprocess.Popen, Path]]:
    """A flow run without a stage tag, lasting twice the 10-s zombie window: started with the kill
    test's stage, so that both wait out the same window (one wait instead of two)."""
    ensure_zombie_automation(server.api_url, TEST_WINDOW, "test: zombies after 10 s")
    folder = tmp_path_factory.mktemp("untagged")
    process, marker = _start_flow(server, folder, 2 * TEST_WINDOW.total_seconds(), "mine")
    yield process, marker
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_a_stage_killed_with_sigkill_becomes_crashed(
    server: LocalServer, tmp_path: Path, untagged_run: tuple[subprocess.Popen, Path]
) -> None:
    """The `untagged_run` fixture has set the zombie window to 10 s and runs alongside."""
    process, marker = _start_flow(server, tmp_path, 600, "stage:zombie-check")
    try:
        _wait_for(marker.exists, 120, "the flow run to start")
        run_id, heartbeat = marker.read_text().split()
        assert heartbeat == "30", "stage processes send heartbeats"
        time.sleep(3)  # the first heartbeat reaches the server
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()

    with api_client(server.api_url) as client:

        def crashed():
            state = client.read_flow_run(UUID(run_id)).state
            return state if state is not None and state.is_crashed() else None

        assert client.read_flow_run(UUID(run_id)).state.is_running()
        state = _wait_for(crashed, 60, "the automation to mark the killed run Crashed")
    assert "heartbeat" in (state.message or "")


def test_a_flow_run_without_a_stage_tag_outlives_the_window(
    untagged_run: tuple[subprocess.Popen, Path], server: LocalServer
) -> None:
    process, marker = untagged_run
    assert process.wait(timeout=120) == 0
    run_id = marker.read_text().split()[0]
    with api_client(server.api_url) as client:
        states = client.read_flow_run_states(UUID(run_id))
    assert [s.type.value for s in states][-1] == "COMPLETED"
    assert "CRASHED" not in {s.type.value for s in states}, "only the project's runs are watched"
