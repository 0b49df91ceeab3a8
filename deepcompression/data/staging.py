"""Writing a data folder atomically: files go to a fresh folder next to the target, synced to disk
and swapped into place by rename, so a failed run leaves the previous folder as it was."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def write_atomically(target: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a fresh folder next to ``target``, then swap it into place by rename.

    File names may hold '/' for subfolders (``raw/train-images-idx3-ubyte``).
    """
    with staged(target) as staging:
        for name, data in files.items():
            path = staging / name
            if path.parent != staging:
                path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.write_bytes(data)


@contextlib.contextmanager
def staged(target: Path) -> Iterator[Path]:
    """A fresh folder next to ``target`` to write into: when the block succeeds its files are
    synced to disk and it is swapped into place by rename; when it raises it is removed and
    ``target`` is left as it was."""
    parent = target.parent
    created = [folder for folder in (parent, *parent.parents) if not folder.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=parent))
    backup: Path | None = None
    try:
        staging.chmod(0o755)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        _sync_files(staging)
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


def create_file(folder: Path, name: str) -> BinaryIO:
    """A new file `name` in `folder`, open for binary writing (its writer closes it)."""
    return open(folder / name, "wb")


def _sync_files(folder: Path) -> None:
    """fsync every file under ``folder``, so that the swap publishes only complete files."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
