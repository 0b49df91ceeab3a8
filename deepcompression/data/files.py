"""Reading the files of a source or of a prepared folder: every OS error becomes a DataError
naming the file (a missing prepared file says to run the data stage first)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from deepcompression.data.checksums import HASH_CHUNK_BYTES
from deepcompression.data.errors import DataError


def read_source_file(path: Path) -> bytes:
    """A source file's bytes; an unreadable one is an error naming it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}).") from None


def hash_file(path: Path) -> str:
    """The sha256 of a source file's bytes as stored, read in chunks; errors name it."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    return digest.hexdigest()


def read_stage_file(path: Path) -> bytes:
    """A file the data stage wrote; a missing one says to run the data stage first."""
    if not path.is_file():
        raise DataError(f"{path} not found; run the data stage first (dvc repro data).")
    return path.read_bytes()


def open_stage_file(path: Path) -> BinaryIO:
    """A file the data stage wrote, open for reading; a missing one says to run the data stage."""
    if not path.is_file():
        raise DataError(f"{path} not found; run the data stage first (dvc repro data).")
    return open(path, "rb")


def stage_reader(folder: Path) -> Callable[[str], bytes]:
    """read(file name) of a prepared folder, for the loaders of deepcompression.data.prepared."""
    folder = Path(folder)
    return lambda name: read_stage_file(folder / name)


def stage_opener(folder: Path) -> Callable[[str], BinaryIO]:
    """open(file name) of a prepared folder, for the splits data.prepared streams."""
    folder = Path(folder)
    return lambda name: open_stage_file(folder / name)
