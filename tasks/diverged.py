"""What a stage says when its training diverges: which training, and the setting to change."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from deepcompression.config import RunConfig
from deepcompression.training import TrainingDiverged


@contextmanager
def name_the_fix(what: str, setting: str, run: RunConfig) -> Iterator[None]:
    """Re-raise a TrainingDiverged inside with ``what`` diverged and the ``setting`` (a
    params.yaml key) to lower; the stage writes no output."""
    try:
        yield
    except TrainingDiverged as err:
        raise TrainingDiverged(
            err.epoch,
            err.loss,
            err.lr,
            what,
            f"run.seed {run.seed}; no output was written. Lower {setting} (or try another "
            "run.seed)",
        ) from err
