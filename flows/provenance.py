"""Provenance written into the compressed file's header: the params and the code's git revision."""

from __future__ import annotations

import subprocess

from deepcompression.config import Params, to_dict


def git_revision() -> str:
    """`git describe --always --dirty` of the working tree, or 'unknown' outside a git checkout."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--abbrev=12"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def provenance(params: Params) -> dict:
    """The params that produced a file and the code revision that ran them."""
    return {"params": to_dict(params), "git_revision": git_revision()}
