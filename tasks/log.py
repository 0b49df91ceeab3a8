"""A logger writing to the Prefect run's log when there is a run, else to Python logging."""

from __future__ import annotations

import logging
from collections.abc import Callable

from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.context import TaskRunContext
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """The current Prefect run's logger (shown in the terminal and the UI), else a module logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("deepcompression")


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
        record.val_loss,
        100 * record.val_error,
        record.seconds,
    )


def epoch_reporter(stage: str, total: int) -> Callable:
    """An `on_epoch` callback: a log line per epoch and, inside a task run, a progress artifact."""
    logger = run_logger()
    progress_id = None
    if TaskRunContext.get() is not None and total > 0:
        progress_id = create_progress_artifact(0.0, description=f"{stage}: epochs done (%)")

    def report(record) -> None:
        log_epoch(logger, stage, total, record)
        if progress_id is not None:
            update_progress_artifact(progress_id, 100.0 * record.epoch / total)

    return report
