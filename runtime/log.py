"""A logger writing to the Prefect run's log when there is a run, else to Python logging."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from runtime.artifacts import artifact_key
from runtime.monitor import best_effort, keep_progress


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The current Prefect run's logger (shown in the terminal and the UI), else a module logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("deepcompression")


def _val(record: Any, name: str) -> float:
    """`val_<name>` of an epoch record (`test_<name>` before the rename)."""
    return getattr(record, f"val_{name}", None) or getattr(record, f"test_{name}", 0.0)


def log_epoch(
    logger: logging.Logger | logging.LoggerAdapter, stage: str, total: int, record
) -> None:
    """One progress line per epoch: the terminal and the Prefect UI both show it."""
    logger.info(
        "%s epoch %d/%d: lr %.5f  train loss %.4f  val loss %.4f  val error %.2f%%  (%.1f s)",
        stage,
        record.epoch,
        total,
        record.lr,
        record.train_loss,
        _val(record, "loss"),
        100 * _val(record, "error"),
        record.seconds,
    )


def progress_key(stage: str) -> str:
    """The progress artifact's key: 'retrain 2' -> 'progress-retrain-2'."""
    return f"progress-{artifact_key(stage)}"


def _progress_artifact(stage: str) -> Any:
    """A keyed progress artifact at 0 % (None without the API)."""
    return best_effort(
        lambda: create_progress_artifact(
            0.0, key=progress_key(stage), description=f"{stage}: epochs done (%)"
        )
    )


def epoch_reporter(stage: str, total: int) -> Callable:
    """An `on_epoch` callback: a log line per epoch and, inside a task run, a progress artifact."""
    logger = run_logger()
    progress_id = None
    if TaskRunContext.get() is not None and total > 0:
        progress_id = _progress_artifact(stage)

    def report(record) -> None:
        log_epoch(logger, stage, total, record)
        if progress_id is not None:
            value = 100.0 * record.epoch / total
            best_effort(
                lambda: update_progress_artifact(progress_id, value),
                lambda: keep_progress(progress_id, value),
            )

    return report
