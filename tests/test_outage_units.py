"""The pieces of outage handling, without a server: what a resilient call returns, what is kept.

An unreachable API is a URL on a port nobody listens on; the Prefect engine is replaced by a
stand-in that runs the function and then fails the way the real one does (httpx.ConnectError).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect import task as prefect_task
from prefect.exceptions import PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings

from runtime import monitor
from runtime.resilient import Resilient, resilient, task


def dead_url() -> str:
    """An API URL on a port nobody listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}/api"


@pytest.fixture(autouse=True)
def unreachable_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every test starts online, against an API that does not answer, pending records in tmp."""
    monkeypatch.setenv(monitor.PENDING_DIR_ENV, str(tmp_path / "pending"))
    monitor.reset()
    with temporary_settings({PREFECT_API_URL: dead_url()}):
        yield
    monitor.reset()


class Engine:
    """Stands in for the Prefect engine: optionally runs the function, then loses the API."""

    def __init__(self, fn, runs_body: bool, error: Exception | None = None) -> None:
        self.fn, self.runs_body, self.calls = fn, runs_body, 0
        self.error = error or httpx.ConnectError("[Errno 111] Connection refused")

    def __call__(self, *args, **kwargs):
        self.calls += 1
        if self.runs_body:
            self.fn(*args, **kwargs)
        raise self.error


def counting_task() -> tuple[Resilient, list[int]]:
    """A resilient task squaring its input, and the list of inputs its body saw."""
    seen: list[int] = []

    @task(name="square", task_run_name="square-{x}")
    def square(x: int) -> int:
        seen.append(x)
        return x * x

    return square, seen


def test_a_value_computed_before_the_api_failed_is_returned_without_rerunning(caplog) -> None:
    square, seen = counting_task()
    square._engine = Engine(square._engine.fn, runs_body=True)
    with caplog.at_level(logging.WARNING, logger="deepcompression.monitor"):
        assert square(3) == 9
        assert square(4) == 16  # offline now: straight to the function
    assert seen == [3, 4] and square._engine.calls == 1
    assert monitor.is_offline()
    warnings = [r for r in caplog.records if r.name == "deepcompression.monitor"]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()


def test_a_body_that_never_ran_runs_directly() -> None:
    square, seen = counting_task()
    square._engine = Engine(square._engine.fn, runs_body=False)
    assert square(5) == 25
    assert seen == [5]


def test_the_body_s_own_error_is_raised_not_the_api_error() -> None:
    @task
    def broken() -> None:
        raise ValueError("bad input")

    broken._engine = Engine(broken._engine.fn, runs_body=True)
    with pytest.raises(ValueError, match="bad input"):
        broken()


def test_other_engine_errors_are_not_swallowed() -> None:
    square, seen = counting_task()
    square._engine = Engine(square._engine.fn, runs_body=False, error=RuntimeError("engine bug"))
    with pytest.raises(RuntimeError, match="engine bug"):
        square(2)
    assert seen == [] and not monitor.is_offline()


def test_wrapping_keeps_the_task_s_face() -> None:
    square, _ = counting_task()
    assert square.name == "square" and square.fn(6) == 36
    assert resilient(square) is square
    plain = prefect_task(lambda: 1)
    assert isinstance(resilient(plain), Resilient) and resilient(plain).fn() == 1


def _status_error(code: int) -> PrefectHTTPStatusError:
    request = httpx.Request("POST", "http://api/flow_runs/")
    return PrefectHTTPStatusError("x", request=request, response=httpx.Response(code))


def test_api_errors_are_transport_failures_and_5xx_only() -> None:
    chained = RuntimeError("wrapped")
    chained.__cause__ = httpx.ReadTimeout("slow")
    assert monitor.is_api_error(httpx.ConnectError("refused"))
    assert monitor.is_api_error(_status_error(503)) and monitor.is_api_error(chained)
    assert not monitor.is_api_error(_status_error(404))
    assert not monitor.is_api_error(ValueError("no"))
    assert not monitor.is_api_error(OSError(28, "No space left on device"))


def test_best_effort_skips_the_call_offline_and_keeps_what_it_skipped() -> None:
    kept, made = [], []

    def fail() -> None:
        made.append(1)
        raise httpx.ConnectError("refused")

    def bug() -> None:
        raise ValueError("a bug, not an outage")

    with pytest.raises(ValueError):
        monitor.best_effort(bug)
    assert monitor.best_effort(fail, lambda: kept.append("first")) is None
    assert monitor.best_effort(lambda: made.append(2), lambda: kept.append("second")) is None
    assert made == [1] and kept == ["first", "second"] and monitor.is_offline()


def test_the_outage_filter_drops_repeated_api_failures_once_offline() -> None:
    monitor.go_offline("test")
    outage = monitor._OutageFilter()

    def record(name: str, level: int, message: str, exc: BaseException | None = None):
        exc_info = (type(exc), exc, None) if exc else None
        return logging.LogRecord(name, level, __file__, 1, message, None, exc_info)

    events = record("prefect.events.clients", logging.WARNING, "Unable to connect to 'ws://'")
    engine = record("prefect.flow_runs", logging.ERROR, "boom", httpx.ConnectError("refused"))
    progress = record("prefect.task_runs", logging.INFO, "train epoch 3/30: ...")
    failure = record("prefect.task_runs", logging.ERROR, "bad", ValueError("bad input"))
    assert not outage.filter(events) and not outage.filter(engine)
    assert outage.filter(progress) and outage.filter(failure)


def test_the_engine_s_stuck_finish_lines_are_never_shown() -> None:
    outage = monitor._OutageFilter()
    for message in ("Finished in state Pending()", "Finished in state Running()"):
        stuck = logging.LogRecord(
            "prefect.task_runs", logging.ERROR, __file__, 1, message, None, None
        )
        assert not outage.filter(stuck), "the catch-up sets the real state"
    done = logging.LogRecord(
        "prefect.task_runs", logging.INFO, __file__, 1, "Finished in state Completed()", None, None
    )
    assert outage.filter(done)


def test_a_stage_whose_api_is_down_from_the_start_runs_offline(caplog) -> None:
    from prefect import flow

    from runtime.guard import run_stage

    square, seen = counting_task()

    @flow(name="offline-stage")
    def stage(n: int) -> list[int]:
        return [square(i) for i in range(n)]

    with caplog.at_level(logging.WARNING, logger="deepcompression.monitor"):
        assert run_stage(stage, n=3) == [0, 1, 4]
    assert seen == [0, 1, 2]
    assert len([r for r in caplog.records if r.name == "deepcompression.monitor"]) == 1


def test_the_engine_s_stuck_finish_line_is_not_kept_for_the_replay(tmp_path: Path) -> None:
    run = "0b7d2b44-0000-4000-8000-000000000001"
    monitor.go_offline("test")
    for message in ("train epoch 1/1: ...", "Finished in state Running()"):
        monitor.keep_log({"flow_run_id": run, "message": message, "level": 20})
    (record,) = monitor.records()
    kept = record.logs_path(monitor.pending_dir()).read_text()
    assert record.logs == 1 and "train epoch" in kept and "Finished in state" not in kept


def test_a_failed_call_while_the_api_answers_is_not_called_an_outage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(monitor, "api_answers", lambda timeout=1.0: True)
    square, seen = counting_task()
    square._engine = Engine(square._engine.fn, runs_body=False, error=httpx.ReadTimeout("slow"))
    run = ("0b7d2b44-0000-4000-8000-000000000002", "flaky")
    monkeypatch.setattr(monitor, "current_flow_run", lambda: run)
    assert square(7) == 49 and seen == [7] and not monitor.is_offline()
    (record,) = monitor.records()
    assert record.stranded_tasks == [{"task": "square", "run": "square-7", "state": "COMPLETED"}]
    assert record.unrecorded_tasks == []
    assert not record.offline and "ReadTimeout: slow" in record.reason
