"""Running one stage's flow so that monitoring never stops the work.

`connect` points the process at the project's server (catching up what earlier stages could not
record); `run_stage` runs the flow under runtime/monitor.py's outage handling: when the API goes
away the flow's body still runs to the end and writes its outputs, the process logs one warning
and one line of what it could not record, and exits 0 when the body finished. Imports no Prefect
at module level, so that the stage settings reach Prefect before it reads the environment.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from runtime.server import LocalServer, ensure_api_url, is_healthy


def connect() -> str | None:
    """Stage settings, the API URL (local server started if needed) and the catch-up."""
    from runtime.monitor import stage_environment

    stage_environment()
    refresh_prefect_settings()
    try:
        url = ensure_api_url()
    except (RuntimeError, OSError) as err:
        print(f"warning: {err}; the stage runs without Prefect records", file=sys.stderr)
        os.environ.setdefault("PREFECT_API_URL", LocalServer().api_url)  # never a temporary one
        refresh_prefect_settings()
        return None
    refresh_prefect_settings()
    if is_healthy(url, timeout=1.0):
        catch_up(url)
    return url


def refresh_prefect_settings() -> None:
    """Prefect's settings from the environment as it is now, if Prefect has read it before.

    Prefect reads its settings when it is imported: in a stage forked by the warm runner that was
    the runner's environment, and without PREFECT_API_URL the local server's URL is set only after
    the server check has imported Prefect. Either way the stage's runs must go where the
    environment says. Does nothing before Prefect is imported.
    """
    global _SETTINGS_ENV
    if "prefect.context" not in sys.modules:
        return
    environment = {k: v for k, v in os.environ.items() if k.startswith("PREFECT_")}
    if environment == _SETTINGS_ENV:
        return
    import prefect.context
    from prefect.logging.configuration import setup_logging
    from prefect.settings import Settings

    current = prefect.context.GLOBAL_SETTINGS_CONTEXT.settings
    fresh = Settings()
    _SETTINGS_ENV = environment
    if fresh == current:
        return
    prefect.context.refresh_global_settings_context()
    if fresh.logging != current.logging or fresh.home != current.home:
        setup_logging()


_SETTINGS_ENV: dict[str, str] | None = None
"""The PREFECT_* variables Prefect's settings were last checked against (None: never)."""


def catch_up(url: str) -> None:
    """Replay pending records of `url`; a failure is a warning, never the stage's failure."""
    from runtime.recovery import describe_replayed, replay_pending

    try:
        replayed = replay_pending(url)
    except Exception as err:  # the catch-up must never stop a stage
        print(f"warning: could not catch up pending Prefect records: {err}", file=sys.stderr)
        return
    if replayed:
        print(describe_replayed(replayed), file=sys.stderr)


@contextmanager
def _offline_logging() -> Iterator[None]:
    """Without a run context, the stage's progress lines go to the terminal."""
    log = logging.getLogger("deepcompression")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s | %(levelname)-7s | %(message)s"))
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level)


def _report_unrecorded() -> None:
    """One line per run of what could not be recorded; caught up now when the API is back."""
    from runtime.monitor import api_answers, api_url, records, summary

    kept = records()
    for record in kept:
        print(f"warning: {summary(record)}", file=sys.stderr)
    url = api_url()
    if kept and url and api_answers():
        catch_up(url)


def run_stage(stage_flow: Any, **parameters: Any) -> Any:
    """Run `stage_flow(**parameters)` resiliently; returns its value, raises its body's errors."""
    from runtime.monitor import api_answers, go_offline, is_offline, monitoring
    from runtime.resilient import resilient

    with monitoring():
        if not is_offline() and not api_answers():
            go_offline("no answer at the start of the stage")
        try:
            with _offline_logging() if is_offline() else nullcontext():
                return resilient(stage_flow)(**parameters)
        finally:
            _report_unrecorded()
