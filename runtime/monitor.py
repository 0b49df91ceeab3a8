"""Monitoring that never stops the work: an unreachable Prefect API switches the process offline.

When an API call fails and the API's health check does not answer either, the process logs ONE
warning and carries on without Prefect: project tasks and flows run their functions directly
(runtime/resilient.py), artifacts, progress and API logs are kept in a pending record under
.prefect/pending/ instead of sent, and runtime/recovery.py replays that record (final state,
artifacts, logs) once the server answers again.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

from tasks.io import write_bytes_atomic

T = TypeVar("T")

PENDING_DIR_ENV = "DC_PENDING_DIR"
DEFAULT_PENDING_DIR = Path(".prefect") / "pending"
HEALTH_TIMEOUT_S = 1.0
MAX_PENDING_LOGS = 10_000
HEARTBEAT_S = 30
"""Seconds between the heartbeats of every flow run the project starts (Prefect's default: 180);
runtime/recovery.py's zombie automation crashes such a run after three missing ones."""
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
# Stage processes: an outage is noticed in seconds (not ~73 s of retries), heartbeats feed the
# zombie-run automation. Environment values win; (env, setting, default).
STAGE_SETTINGS = (
    ("PREFECT_CLIENT_MAX_RETRIES", "client.max_retries", "1"),
    ("PREFECT_API_REQUEST_TIMEOUT", "api.request_timeout", "10"),
    (HEARTBEAT_ENV, "flows.heartbeat_frequency", str(HEARTBEAT_S)),
)
NOISY_LOGGERS = ("prefect.events", "prefect._internal", "prefect.client")
STUCK_FINISH = ("Finished in state Running", "Finished in state Pending")
"""How the engine ends a run whose state it could not report: not shown, sent, kept nor replayed
(the catch-up sets the real final state)."""

logger = logging.getLogger("deepcompression.monitor")


@dataclass
class _Status:
    """Whether this process has given up on the API, and why."""

    offline: bool = False
    reason: str = ""
    failed_call: str = ""
    """The latest API error while the API still answered (the process stayed online)."""
    lock: threading.RLock = field(default_factory=threading.RLock)


_STATUS = _Status()


@dataclass
class PendingRecord:
    """What one flow run could not record (the API was away, or one call failed while it answered:
    `offline`); replayed by runtime.recovery."""

    flow_run_id: str
    api_url: str
    pid: int
    since: str
    reason: str
    flow_name: str = ""
    state: str | None = None
    message: str = ""
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    progress: dict[str, float] = field(default_factory=dict)
    task_runs: dict[str, str] = field(default_factory=dict)
    unrecorded_tasks: list[str] = field(default_factory=list)
    stranded_tasks: list[dict[str, str]] = field(default_factory=list)
    """Task runs whose engine failed before their body (the engine leaves their record Pending,
    named `<task>-<dynamic key>`): {"task", "run" (the run's name), "state" (of the body, run
    directly)}."""
    logs: int = 0
    offline: bool = True

    def path(self, folder: Path) -> Path:
        """This record's JSON file in `folder`."""
        return folder / f"{self.flow_run_id}.json"

    def logs_path(self, folder: Path) -> Path:
        """The JSON-lines file of this run's kept API logs."""
        return folder / f"{self.flow_run_id}.logs.jsonl"

    def save(self, folder: Path) -> Path:
        """Write the record atomically; returns its path."""
        path = self.path(folder)
        write_bytes_atomic(path, (json.dumps(asdict(self), indent=1) + "\n").encode())
        return path

    @classmethod
    def load(cls, path: Path) -> PendingRecord:
        """Read a record written by `save`."""
        return cls(**json.loads(path.read_text()))


_RECORDS: dict[str, PendingRecord] = {}


def pending_dir() -> Path:
    """Where pending records go: $DC_PENDING_DIR, else .prefect/pending under the working dir."""
    return Path(os.environ.get(PENDING_DIR_ENV) or DEFAULT_PENDING_DIR)


def api_url() -> str | None:
    """The API URL this process talks to (None: Prefect's own temporary server)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()


def api_answers(timeout: float = HEALTH_TIMEOUT_S) -> bool:
    """True when the API's health check answers within `timeout` (or no URL is configured)."""
    url = api_url()
    if not url:
        return True
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=timeout) as reply:
            return reply.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def is_offline() -> bool:
    """True once this process found the API unreachable."""
    return _STATUS.offline


def is_api_error(exc: BaseException) -> bool:
    """A transport failure talking to the API, or a 5xx answer (following `raise ... from`)."""
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, httpx.TransportError):
            return True
        if isinstance(seen, httpx.HTTPStatusError) and seen.response.status_code >= 500:
            return True
        seen = seen.__cause__
    return False


def describe(exc: BaseException) -> str:
    """`ConnectError: [Errno 111] Connection refused`."""
    return f"{type(exc).__name__}: {exc}"


def go_offline(reason: str) -> None:
    """Switch this process offline and log the one warning (later calls do nothing)."""
    with _STATUS.lock:
        if _STATUS.offline:
            return
        _STATUS.offline, _STATUS.reason = True, reason
    logger.warning(
        "Prefect API at %s is unreachable (%s): the stage keeps computing and writes its "
        "outputs; what its run cannot record is kept in %s/ and caught up when the server "
        "answers again (next `python -m flows.run` or `python -m runtime.server start`)",
        api_url(),
        reason,
        pending_dir(),
    )


def absorb_api_error(exc: BaseException) -> bool:
    """True for an API error (the caller goes on without it); offline when no health answer."""
    if not is_api_error(exc):
        return False
    if not is_offline() and not api_answers():
        go_offline(describe(exc))
    elif not is_offline():
        _STATUS.failed_call = describe(exc)
    return True


def reset() -> None:
    """Back online with no records (tests, or a process that starts a new stage)."""
    with _STATUS.lock:
        _STATUS.offline, _STATUS.reason, _STATUS.failed_call = False, "", ""
        _RECORDS.clear()


def current_flow_run() -> tuple[str, str] | None:
    """(flow run id, flow name) of the run this code is in, if any."""
    from prefect.context import FlowRunContext, TaskRunContext

    flow_ctx = FlowRunContext.get()
    if flow_ctx is not None and flow_ctx.flow_run is not None:
        return str(flow_ctx.flow_run.id), flow_ctx.flow.name
    task_ctx = TaskRunContext.get()
    if task_ctx is not None and task_ctx.task_run.flow_run_id is not None:
        return str(task_ctx.task_run.flow_run_id), ""
    return None


def keep(update: Callable[[PendingRecord], None], run: tuple[str, str] | None = None) -> None:
    """Apply `update` to the pending record of `run` (default: the current flow run) and save."""
    run = run or current_flow_run()
    if run is None:
        return
    with _STATUS.lock:
        record = _RECORDS.get(run[0])
        if record is None:
            record = _RECORDS[run[0]] = PendingRecord(
                flow_run_id=run[0],
                api_url=api_url() or "",
                pid=os.getpid(),
                since=_now(),
                reason=_STATUS.reason or _STATUS.failed_call or "API errors",
                flow_name=run[1],
                offline=_STATUS.offline,
            )
        if _STATUS.offline and not record.offline:  # a failed call first, then the outage
            record.offline, record.since, record.reason = True, _now(), _STATUS.reason
        record.flow_name = record.flow_name or run[1]
        update(record)
        record.save(pending_dir())


def _now() -> str:
    """Local time as the records write it."""
    return time.strftime("%Y-%m-%d %H:%M:%S")


def keep_artifact(kind: str, **fields: Any) -> None:
    """Keep a markdown/table artifact (with its run ids) for the catch-up."""
    from prefect.context import TaskRunContext

    task_ctx = TaskRunContext.get()
    task_run_id = str(task_ctx.task_run.id) if task_ctx is not None else None
    keep(lambda r: r.artifacts.append({"kind": kind, "task_run_id": task_run_id, **fields}))


def keep_progress(artifact_id: Any, progress: float) -> None:
    """Keep a progress artifact's latest value."""
    keep(lambda r: r.progress.__setitem__(str(artifact_id), progress))


def keep_task_state(task_run_id: str, state: str) -> None:
    """Keep the final state of a task run whose engine could not report it."""
    keep(lambda r: r.task_runs.__setitem__(task_run_id, state))


def keep_unrecorded_task(name: str) -> None:
    """Note a task that ran without any task run record."""
    keep(lambda r: r.unrecorded_tasks.append(name))


def keep_stranded_task(task: str, run: str, state: str) -> None:
    """Note a run `run` of task `task` whose engine failed before its body, which then ran
    directly to `state`."""
    keep(lambda r: r.stranded_tasks.append({"task": task, "run": run, "state": state}))


def keep_final_state(run: tuple[str, str], state: str, message: str = "") -> None:
    """Keep the final state of a flow run whose engine could not report it."""

    def update(record: PendingRecord) -> None:
        record.state, record.message = state, message

    keep(update, run)


def keep_log(log: dict[str, Any]) -> None:
    """Append one API log (a LogCreate dict) to its run's JSON-lines file (bounded)."""
    run_id = log.get("flow_run_id")
    if not run_id or str(log.get("message", "")).startswith(STUCK_FINISH):
        return
    with _STATUS.lock:
        record = _RECORDS.get(str(run_id))
        if record is None:
            keep(lambda r: None, (str(run_id), ""))
            record = _RECORDS[str(run_id)]
        if record.logs >= MAX_PENDING_LOGS:
            return
        record.logs += 1
        entry = {k: v for k, v in log.items() if not k.startswith("__")}
        with record.logs_path(pending_dir()).open("a") as handle:
            handle.write(json.dumps(entry) + "\n")


def records() -> list[PendingRecord]:
    """This process's pending records."""
    with _STATUS.lock:
        return list(_RECORDS.values())


def forget(record: PendingRecord) -> None:
    """Drop a record from this process once it has been replayed."""
    with _STATUS.lock:
        _RECORDS.pop(record.flow_run_id, None)


def best_effort(call: Callable[[], T], kept: Callable[[], None] | None = None) -> T | None:
    """Make an API call unless offline; an API error is absorbed and `kept` keeps what is lost."""
    if not is_offline():
        try:
            return call()
        except Exception as exc:
            if not absorb_api_error(exc):
                raise
    if kept is not None:
        kept()
    return None


def summary(record: PendingRecord) -> str:
    """One line: what the run could not record, and where it is kept."""
    counts = {
        "artifact(s)": len(record.artifacts),
        "progress update(s)": len(record.progress),
        "task run(s) that ran unrecorded": len(record.unrecorded_tasks),
        "task run(s) whose engine failed before they ran": len(record.stranded_tasks),
        "log line(s)": record.logs,
    }
    parts = [f"final state {record.state or 'unknown'}"]
    parts += [f"{n} {what}" for what, n in counts.items() if n]
    return (
        f"not recorded in Prefect for flow run {record.flow_run_id}: {', '.join(parts)} "
        f"(kept in {record.path(pending_dir())})"
    )


class _OutageFilter(logging.Filter):
    """Drops the engine's and clients' repeated API-failure records once the API is gone."""

    def filter(self, record: logging.LogRecord) -> bool:
        """False for an API-error traceback or a client/events warning while offline."""
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None and absorb_api_error(exc) and is_offline():
            return False
        if record.name.startswith(NOISY_LOGGERS) and record.levelno >= logging.WARNING:
            if not is_offline() and not api_answers():
                go_offline(f"{record.name}: {record.getMessage()[:120]}")
            return not is_offline()
        return not record.getMessage().startswith(STUCK_FINISH)


def _api_log_sink(log: dict[str, Any]) -> None:
    """Send an API log as Prefect does, or keep it for the catch-up while offline."""
    from prefect.logging.handlers import APILogWorker

    if str(log.get("message", "")).startswith(STUCK_FINISH):
        return
    if is_offline():
        keep_log(log)
    else:
        APILogWorker.instance().send(log)


def _console_handlers() -> list[logging.Handler]:
    """The handlers Prefect prints through (root and prefect._internal)."""
    roots = [logging.getLogger(), logging.getLogger("prefect._internal")]
    return [handler for log in roots for handler in log.handlers]


def stage_settings() -> dict[str, str]:
    """Prefect settings for stage processes (environment values win)."""
    return {setting: os.environ.get(env, default) for env, setting, default in STAGE_SETTINGS}


def stage_environment() -> None:
    """Default the stage settings in the environment (before Prefect is imported)."""
    for env, _, default in STAGE_SETTINGS:
        os.environ.setdefault(env, default)


@contextmanager
def monitoring() -> Iterator[None]:
    """Stage settings, the outage log filter and the offline-aware API log sink, for a stage."""
    from prefect.logging.handlers import set_api_log_sink
    from prefect.settings import temporary_settings

    outage_filter = _OutageFilter()
    handlers = _console_handlers()
    raise_exceptions = logging.raiseExceptions
    for handler in handlers:
        handler.addFilter(outage_filter)
    logging.raiseExceptions = False  # no "--- Error logging to API ---" from a failed batch
    set_api_log_sink(_api_log_sink)
    try:
        with temporary_settings(updates=stage_settings()):
            yield
    finally:
        set_api_log_sink(None)
        logging.raiseExceptions = raise_exceptions
        for handler in handlers:
            handler.removeFilter(outage_filter)
