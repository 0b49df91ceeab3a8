"""tasks/io.py: stage outputs get the usual file mode, and a full disk names the file it hit."""

from __future__ import annotations

import errno
import io
import os
import stat
from pathlib import Path

import pytest

from tasks import io as task_io
from tasks.io import write_bytes_atomic, write_json


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_outputs_are_world_readable_under_the_usual_umask(tmp_path: Path) -> None:
    previous = os.umask(0o022)
    try:
        write_bytes_atomic(tmp_path / "checkpoints" / "pruned.pt", b"weights")
        write_json(tmp_path / "metrics" / "prune.json", {"density": 0.08})
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "checkpoints" / "pruned.pt") == 0o644
    assert _mode(tmp_path / "metrics" / "prune.json") == 0o644


def test_mode_follows_the_umask(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        write_bytes_atomic(tmp_path / "private.bin", b"x")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "private.bin") == 0o600


def test_full_disk_names_the_path_and_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "checkpoints" / "pruned.pt"
    write_bytes_atomic(target, b"previous checkpoint")

    def full_disk(*args: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    class FullDiskFile(io.FileIO):
        write = full_disk

    # every way of writing the bytes hits the full disk: os.write, or a file object's write
    monkeypatch.setattr(task_io.os, "write", full_disk)
    monkeypatch.setattr(task_io.os, "fdopen", lambda fd, *a, **k: FullDiskFile(fd, "wb"))
    with pytest.raises(OSError) as caught:
        write_bytes_atomic(target, b"new checkpoint" * 1000)
    monkeypatch.undo()

    assert caught.value.errno == errno.ENOSPC
    assert str(caught.value) == f"[Errno 28] No space left on device: writing {target}"
    assert target.read_bytes() == b"previous checkpoint"
    assert sorted(p.name for p in target.parent.iterdir()) == ["pruned.pt"]


def test_partial_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_write = os.write
    monkeypatch.setattr(task_io.os, "write", lambda fd, data: real_write(fd, bytes(data[:3])))
    write_bytes_atomic(tmp_path / "out.bin", b"0123456789")
    assert (tmp_path / "out.bin").read_bytes() == b"0123456789"
