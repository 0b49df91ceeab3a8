"""Provenance written into the compressed file's header: the params and the code's git revision."""

from __future__ import annotations

import subprocess

from deepcompression.config import Params, to_dict

CODE_PATHS = ("deepcompression", "models", "tasks", "flows", "params.yaml", "dvc.yaml")
"""What makes a run's result: uncommitted edits here mark the revision '-dirty' (dvc.lock and
metrics change during every `dvc repro`, so they do not count)."""


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()


def git_revision() -> str:
    """HEAD's short hash, '-dirty' when the code or params differ from it; 'unknown' outside git."""
    try:
        head = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}-dirty" if dirty else head


def provenance(params: Params) -> dict:
    """The params that produced a file and the code revision that ran them."""
    return {"params": to_dict(params), "git_revision": git_revision()}
