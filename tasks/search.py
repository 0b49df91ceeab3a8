"""Prefect task: one compression-search trial, run on a Dask worker (its parameters in its tags).

Workers load the data themselves, once per process, from the prepared folder (the flow sends
only its path), and set torch's thread count so that workers x threads fit the cores.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.data.load import load_training
from deepcompression.data.tensors import ImageTensors
from deepcompression.inference import stored_input
from deepcompression.numerics import pin_torch
from deepcompression.search.space import Allocation
from deepcompression.search.trial import TrialSettings, run_trial
from deepcompression.training import resolve_device
from runtime.log import run_logger
from runtime.resilient import task


@dataclass(frozen=True)
class TrialData:
    """Where a worker finds the prepared data, and the part of it trials use."""

    folder: str
    mnist: bool
    val_size: int
    train_limit: int | None
    val_limit: int | None


_LOADED: dict[TrialData, ImageTensors] = {}
"""Data already loaded by this worker process."""


def worker_data(source: TrialData) -> ImageTensors:
    """The training and validation splits, loaded once per worker process and cut to limits."""
    if source not in _LOADED:
        data = load_training(Path(source.folder), source.val_size, mnist=source.mnist)
        n_train = min(source.train_limit or len(data.train_y), len(data.train_y))
        n_val = min(source.val_limit or len(data.val_y), len(data.val_y))
        _LOADED.clear()
        _LOADED[source] = data.subset(n_train, n_val)
    return _LOADED[source]


def compress_trial(
    number: int,
    dense: bytes,
    allocation: dict,
    settings: TrialSettings,
    source: TrialData,
    provenance: dict,
    device: str,
    threads: int,
) -> dict:
    """Compress the dense checkpoint to `allocation`: exact file bytes and validation error
    (`threads` > 0 sets torch's thread count, deterministic algorithms on)."""
    if threads > 0:
        pin_torch(threads)
    target = resolve_device(device)
    data = worker_data(source).as_tuple(target)
    outcome = run_trial(
        Checkpoint.from_bytes(dense), Allocation.from_dict(allocation), settings, data,
        provenance, target, stored_input(Path(source.folder), mnist=source.mnist),
    )  # fmt: skip
    run_logger().info(
        "trial %d: %d bytes, validation error %.2f%%",
        number,
        outcome.file_bytes,
        100 * outcome.val_error,
    )
    return {
        "file_bytes": outcome.file_bytes,
        "val_error": outcome.val_error,
        "densities": outcome.densities,
        "index_bits": outcome.index_bits,
        "units_kept": outcome.units_kept,
    }


search_trial = task(name="search-trial", task_run_name="trial-{number}", cache_policy=NO_CACHE)(
    compress_trial
)
"""The Prefect task around `compress_trial` (kept importable by name: Dask workers unpickle the
function by reference)."""
