"""Which environment variables a warm stage runner and its callers must agree on.

A stage forked from the runner inherits what the runner imported under its environment; a caller
whose import-time variables differ gets a cold process instead (runtime/warm.py refuses it).
"""

from __future__ import annotations

import hashlib
import json

from deepcompression.numerics import pinned_env
from runtime.handoff import DISABLE_ENV

RUNTIME_ENV = frozenset(
    {"PATH", "PWD", "OLDPWD", "SHLVL", "_", "TERM", "COLUMNS", "LINES", DISABLE_ENV}
    | {"MAKEFLAGS", "MAKELEVEL", "MFLAGS", "MAKEOVERRIDES"}
    | {"PORT", "MODEL", "PYTHON", "DC_PREFECT_PORT"}
)
RUNTIME_PREFIXES = ("PREFECT_", "DVC_")
"""Variables read at run time only (or, Prefect's, re-read by the child): these may differ
between the runner and a caller; any other difference refuses the caller. PORT, MODEL and PYTHON
are the Makefile's (`make ui PORT=4341` passes them to its commands), which no Python code reads;
DC_PREFECT_PORT, the local server's port, is read when a stage describes its server."""


def import_time_env(env: dict[str, str]) -> dict[str, str]:
    """The variables that must be equal in the runner and its callers."""
    return {
        key: value
        for key, value in env.items()
        if key not in RUNTIME_ENV and not key.startswith(RUNTIME_PREFIXES)
    }


def env_digest(env: dict[str, str]) -> str:
    """A digest of `env`'s import-time variables, written next to the socket: `runtime.server
    start` restarts a runner started in another environment (whose callers it would refuse).
    Both pin the numerics before comparing (flows.run and the runner set them at their start)."""
    canonical = json.dumps(import_time_env(pinned_env(env)), sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()
