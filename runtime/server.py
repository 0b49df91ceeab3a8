"""The project's one local Prefect server: start it when none answers, stop it, report on it.

Every DVC stage runs in its own process; without a server each would start a temporary one (5-17 s
each) and its runs would vanish with it. One local server (SQLite under .prefect/) records them all.
Once it answers, `start` makes sure of the zombie-run automation (runs whose heartbeats stop are
marked Crashed) and catches up what stages recorded under .prefect/pending/ while it was away.
`python -m runtime.server start` also starts the warm stage runner (runtime/warm.py), from which
stages fork with torch and Prefect already imported; `stop` stops both.
Usage: python -m runtime.server start|stop|status
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from runtime.handoff import SOCKET as WARM_SOCKET

HOST = "127.0.0.1"
PORT_ENV = "DC_PREFECT_PORT"
DEFAULT_PORT = 4200
STATE_DIR = Path(".prefect")
START_TIMEOUT_S = 90.0
WARM_TIMEOUT_S = 120.0


def local_port() -> int:
    """The local server's port: $DC_PREFECT_PORT (the Makefile's PORT), else 4200.

    Read when a server is described, not at import: a stage forked from the warm runner gets its
    caller's environment, so the variable may differ between the two (runtime/environment.py).
    """
    value = os.environ.get(PORT_ENV) or str(DEFAULT_PORT)
    if not value.isdigit() or not 0 < int(value) < 65536:
        raise ValueError(
            f"{PORT_ENV}={value!r} is not a TCP port; set it to e.g. 4200 (make PORT=)"
        )
    return int(value)


@dataclass(frozen=True)
class LocalServer:
    """Where one local Prefect server listens and keeps its database, pid file and log."""

    port: int = field(default_factory=local_port)
    home: Path = STATE_DIR
    host: str = HOST
    ui: bool = True

    @property
    def api_url(self) -> str:
        """The REST API's base URL."""
        return f"http://{self.host}:{self.port}/api"

    @property
    def ui_url(self) -> str:
        """The UI's URL."""
        return f"http://{self.host}:{self.port}"

    @property
    def pid_file(self) -> Path:
        """The server's process group id, written by `start`."""
        return self.home / "server.pid"

    @property
    def log_file(self) -> Path:
        """The server's stdout and stderr."""
        return self.home / "server.log"

    @property
    def automation_mark(self) -> Path:
        """The identity of the server (URL and pid) on which the zombie automation was made."""
        return self.home / "automation.ok"

    @property
    def pending_dir(self) -> Path:
        """What stages could not record while this server was away (runtime/monitor.py)."""
        return self.home / "pending"


def is_healthy(api_url: str | None = None, timeout: float = 2.0) -> bool:
    """True when a Prefect API answers its health check at `api_url` (default: the local one)."""
    api_url = api_url or LocalServer().api_url
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _spawn(server: LocalServer) -> subprocess.Popen:
    """Start `prefect server start` detached (own session), its output appended to the log."""
    server.home.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PREFECT_HOME=str(server.home.resolve()))
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env["PREFECT_SERVER_UI_API_URL"] = server.api_url  # the UI's API: this port, not 4200
    env.pop("PREFECT_UI_API_URL", None)
    if not server.ui:
        env["PREFECT_SERVER_UI_ENABLED"] = "false"
    env.pop("PREFECT_API_URL", None)
    command = [sys.executable, "-m", "prefect", "server", "start"]
    command += ["--host", server.host, "--port", str(server.port)]
    with server.log_file.open("ab") as log:
        return subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )


def _wait_healthy(server: LocalServer, process: subprocess.Popen, timeout_s: float) -> None:
    """Poll the health check until it answers; fail early when the server process exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_healthy(server.api_url):
            return
        if process.poll() is not None:
            raise RuntimeError(
                f"Prefect server exited early (code {process.returncode}); see {server.log_file}"
            )
        time.sleep(0.5)
    raise RuntimeError(
        f"Prefect server did not answer at {server.api_url} in {timeout_s:.0f} s; "
        f"see {server.log_file}"
    )


def start(
    timeout_s: float = START_TIMEOUT_S,
    server: LocalServer | None = None,
    prepare: bool = True,
    recheck: bool = False,
) -> str:
    """Start a detached local server (unless one answers), wait for it, then `prepare` it.

    The zombie automation is checked once per server this project started (its pid file): stage
    processes skip the check (0.3-0.5 s each) that `runtime.server start` already made, unless
    `recheck`. `server` defaults to the local one (`local_port`).
    """
    server = server or LocalServer()
    if not is_healthy(server.api_url):
        process = _spawn(server)
        server.pid_file.write_text(str(process.pid))
        _wait_healthy(server, process, timeout_s)
    if prepare:
        identity = _identity(server)
        known = not recheck and identity is not None and _read(server.automation_mark) == identity
        prepared = prepare_server(server.api_url, server.pending_dir, automation=not known)
        if prepared is not None and identity is not None and not known:
            server.automation_mark.write_text(identity)
    return server.api_url


def _identity(server: LocalServer) -> str | None:
    """The server this project started (URL and pid file), if there is one."""
    pid = _read(server.pid_file)
    return None if pid is None else f"{server.api_url} pid {pid.strip()}"


def _read(path: Path) -> str | None:
    """A small file's text; None when it cannot be read."""
    try:
        return path.read_text()
    except OSError:
        return None


def prepare_server(
    api_url: str, pending: Path | None = None, automation: bool = True
) -> list[str] | None:
    """The zombie-run automation (created if missing; unless not `automation`) and the catch-up
    of pending records.

    Returns the flow run ids caught up, None when the set-up failed: a failure is a warning (it
    must never stop a stage).
    """
    try:
        from runtime.recovery import describe_replayed, ensure_zombie_automation, replay_pending

        if automation:
            ensure_zombie_automation(api_url)
        replayed = replay_pending(api_url, pending)
    except Exception as err:  # monitoring set-up never stops the work
        print(f"warning: Prefect server set-up incomplete: {err}", file=sys.stderr)
        return None
    if replayed:
        print(describe_replayed(replayed), file=sys.stderr)
    return replayed


def stop(server: LocalServer | None = None, grace_s: float = 10.0) -> bool:
    """Stop the server this project started (by its pid file); True if one was stopped.

    SIGTERM first; SIGKILL when it has not exited after `grace_s` seconds.
    """
    server = server or LocalServer()
    if not server.pid_file.exists():
        return False
    pid = int(server.pid_file.read_text())
    server.pid_file.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True


def ensure_api_url(server: LocalServer | None = None) -> str:
    """Point this process at a Prefect API: the one already configured, else the local server.

    A configured URL that is the local server's is restarted when it does not answer (a server
    killed during an earlier stage comes back, and catches up what that stage kept).
    """
    server = server or LocalServer()
    configured = os.environ.get("PREFECT_API_URL")
    if configured and configured.rstrip("/") != server.api_url:
        return configured
    url = start(server=server)
    os.environ["PREFECT_API_URL"] = url
    return url


def warm_answers(socket_path: Path = WARM_SOCKET) -> bool:
    """True when a warm stage runner listens at `socket_path` (relative to the project root)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(str(socket_path))
        except OSError:
            return False
    return True


def start_warm(timeout_s: float = WARM_TIMEOUT_S, home: Path = STATE_DIR) -> bool:
    """Start the warm stage runner (runtime/warm.py) in the project root unless one started in
    this environment answers (one started in another is restarted), and wait until it answers;
    False (stages then run cold) when it does not answer in time."""
    from runtime.environment import env_digest

    socket_path = home / WARM_SOCKET.name
    if warm_answers(socket_path):
        if _read(socket_path.with_suffix(".env")) == env_digest(dict(os.environ)):
            return True
        stop_warm(home)
        deadline = time.monotonic() + 10.0
        while warm_answers(socket_path) and time.monotonic() < deadline:
            time.sleep(0.1)
    home.mkdir(parents=True, exist_ok=True)
    with (home / "warm.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "runtime.warm"],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    (home / "warm.pid").write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        if warm_answers(socket_path):
            return True
        time.sleep(0.2)
    return warm_answers(socket_path)


def stop_warm(home: Path = STATE_DIR) -> bool:
    """Stop the warm stage runner (SIGTERM; stages it forked run on); True if one was running."""
    pid_file = home / "warm.pid"
    if not pid_file.exists():
        return False
    pid = int(pid_file.read_text())
    pid_file.unlink()
    try:
        if b"runtime.warm" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False  # that pid is another process by now
        os.kill(pid, signal.SIGTERM)
    except (ProcessLookupError, FileNotFoundError):
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    """Command line: start | stop | status (the server and the warm stage runner)."""
    parser = argparse.ArgumentParser(prog="python -m runtime.server", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    try:
        local = LocalServer()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.command == "start":
        print(f"Prefect server up: UI {local.ui_url}  API {start(recheck=True, server=local)}")
        warm = start_warm()
        print("warm stage runner " + ("up" if warm else "not up: stages import torch themselves"))
    elif args.command == "stop":
        print(
            "Prefect server stopped"
            if stop(local)
            else "no Prefect server of this project was running"
        )
        print("warm stage runner stopped" if stop_warm() else "no warm stage runner was running")
    else:
        healthy = is_healthy(local.api_url)
        print(f"Prefect server at {local.api_url}: {'up' if healthy else 'down'}")
        print(f"warm stage runner: {'up' if warm_answers() else 'down'}")
        return 0 if healthy else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
