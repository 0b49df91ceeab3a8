"""The project's one local Prefect server: start it when none answers, stop it, report on it.

Every DVC stage runs in its own process; without a server each would start a temporary one (5-17 s
each) and its runs would vanish with it. One local server (SQLite under .prefect/) records them all.
Usage: python -m flows.server start|stop|status
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

HOST = "127.0.0.1"
PORT = int(os.environ.get("DC_PREFECT_PORT", "4200"))
API_URL = f"http://{HOST}:{PORT}/api"
UI_URL = f"http://{HOST}:{PORT}"
STATE_DIR = Path(".prefect")
PID_FILE = STATE_DIR / "server.pid"
LOG_FILE = STATE_DIR / "server.log"
START_TIMEOUT_S = 90.0


def is_healthy(api_url: str = API_URL, timeout: float = 2.0) -> bool:
    """True when a Prefect API answers its health check at `api_url`."""
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def start(timeout_s: float = START_TIMEOUT_S) -> str:
    """Start a detached local server (unless one answers) and wait for its health check."""
    if is_healthy():
        return API_URL
    STATE_DIR.mkdir(exist_ok=True)
    env = dict(os.environ, PREFECT_HOME=str(STATE_DIR.resolve()))
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.pop("PREFECT_API_URL", None)
    with LOG_FILE.open("ab") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                HOST,
                "--port",
                str(PORT),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
    PID_FILE.write_text(str(process.pid))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if is_healthy():
            return API_URL
        if process.poll() is not None:
            raise RuntimeError(
                f"Prefect server exited early (code {process.returncode}); see {LOG_FILE}"
            )
        time.sleep(0.5)
    raise RuntimeError(
        f"Prefect server did not answer at {API_URL} in {timeout_s:.0f} s; see {LOG_FILE}"
    )


def stop() -> bool:
    """Stop the server this project started (by its pid file); True if one was stopped."""
    if not PID_FILE.exists():
        return False
    pid = int(PID_FILE.read_text())
    PID_FILE.unlink()
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    for _ in range(50):
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.2)
    os.killpg(pid, signal.SIGKILL)
    return True


def ensure_api_url() -> str:
    """Point this process at a Prefect API: the one already configured, else the local server."""
    configured = os.environ.get("PREFECT_API_URL")
    if configured:
        return configured
    url = start()
    os.environ["PREFECT_API_URL"] = url
    return url


def main(argv: list[str] | None = None) -> int:
    """Command line: start | stop | status."""
    parser = argparse.ArgumentParser(prog="python -m flows.server", description=__doc__)
    parser.add_argument("command", choices=["start", "stop", "status"])
    args = parser.parse_args(argv)
    if args.command == "start":
        print(f"Prefect server up: UI {UI_URL}  API {start()}")
    elif args.command == "stop":
        print(
            "Prefect server stopped" if stop() else "no Prefect server of this project was running"
        )
    else:
        healthy = is_healthy()
        print(f"Prefect server at {API_URL}: {'up' if healthy else 'down'}")
        return 0 if healthy else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
