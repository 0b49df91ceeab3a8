"""File helpers for tasks: atomic writes, JSON/CSV outputs and checkpoints on disk."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from deepcompression.checkpoint import Checkpoint


def _umask() -> int:
    """The process umask: from /proc where there is one (no change), else set and restored."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_fd(fd: int, data: bytes) -> None:
    """Write all of `data` to `fd`, then fsync it."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
    os.fsync(fd)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, then rename: readers never see half a file.

    The file gets mode 0666 less the umask (0644 usually), like any other tool's output; a failed
    write (a full disk) names `path` and leaves the previous file as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        try:
            os.fchmod(fd, 0o666 & ~_umask())
            _write_fd(fd, data)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as err:
        Path(tmp).unlink(missing_ok=True)
        raise OSError(err.errno, f"{err.strerror or err}: writing {path}") from err
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, payload: Mapping[str, Any]) -> None:
    """Pretty, key-sorted JSON (what `dvc metrics` reads)."""
    write_bytes_atomic(path, (json.dumps(payload, indent=2, sort_keys=True) + "\n").encode())


def write_csv(path: Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Rows of dicts as CSV with a header (what `dvc plots` reads)."""
    buffer = io.StringIO()
    if rows:
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    write_bytes_atomic(path, buffer.getvalue().encode())


def save_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """Write a checkpoint atomically."""
    write_bytes_atomic(path, checkpoint.to_bytes())


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint; a missing file says which stage makes it."""
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run the stage that writes it first (dvc repro)")
    return Checkpoint.from_bytes(path.read_bytes())
