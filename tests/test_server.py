"""The project's local server marks killed runs Crashed: heartbeats plus a zombie automation.

A real server (runtime.server.start, services on) gets the automation when it starts; a stage
process (heartbeats on, as every `python -m flows.run` sets them) is killed with SIGKILL, and
the automation must turn its Running flow run into Crashed instead of leaving it Running forever.
"""

from __future__ import annotations

import os
import signal
import socket
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
from runtime.server import LocalServer, start, stop

REPO = Path(__file__).parents[1]
pytestmark = pytest.mark.slow

STAGE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path

    from runtime.guard import connect, run_stage

    connect()
    from prefect import flow
    from prefect.context import FlowRunContext
    from prefect.settings import get_current_settings


    @flow(name="zombie-check")
    def long_flow() -> None:
        run_id = FlowRunContext.get().flow_run.id
        heartbeat = get_current_settings().flows.heartbeat_frequency
        Path(sys.argv[1]).write_text(f"{run_id} {heartbeat}")
        time.sleep(600)


    run_stage(long_flow)
    """
)


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A real local server (services on, no UI) started like `python -m runtime.server start`."""
    home = tmp_path_factory.mktemp("zombies") / ".prefect"
    local = LocalServer(port=free_port(), home=home, ui=False)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    start(timeout_s=120, server=local)
    yield local
    stop(local, grace_s=1)


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


def test_a_stage_killed_with_sigkill_becomes_crashed(server: LocalServer, tmp_path: Path) -> None:
    # the same automation with the shortest window Prefect allows, so the test takes seconds
    ensure_zombie_automation(server.api_url, timedelta(seconds=10), "test: zombies after 10 s")
    (tmp_path / "stage.py").write_text(STAGE)
    env = dict(os.environ, PYTHONPATH=str(REPO), PREFECT_API_URL=server.api_url)
    env.pop("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", None)
    env["PREFECT_HOME"] = str(tmp_path / "client-home")
    marker = tmp_path / "run-id"
    process = subprocess.Popen(
        [sys.executable, "stage.py", str(marker)], cwd=tmp_path, env=env, start_new_session=True
    )
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
