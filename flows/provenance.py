"""Provenance written into the compressed file's header, derived from the inputs alone.

The same params and the same library code give the same bytes, whatever the git history: the
header records a hash of the params and of the code that shapes the file (`deepcompression/`
and `models/`, and the numeric stack it ran on: the pinned settings in force, torch's, MKL's and
oneDNN's versions, the device), never a commit. The git revision goes to the untracked timing
file instead. Runs whose numerics could differ never share a hash (or a DVC cache entry).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

from deepcompression.config import RunParams
from deepcompression.numerics import numerics_record
from deepcompression.schema import to_dict
from deepcompression.training import resolve_device
from runtime.workspace import PROJECT_ROOT

CODE_DIRS = ("deepcompression", "models")
"""The code whose every byte can change the file: the library and the network definitions."""


def code_sha256(root: Path = PROJECT_ROOT) -> str:
    """sha256 over the relative path and content of every .py file under CODE_DIRS, sorted."""
    digest = hashlib.sha256()
    for folder in CODE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def numerics(params: RunParams) -> dict:
    """The numeric settings in force and the library versions, for `params.run.device`: what
    each stage's metrics record (deepcompression/numerics.py)."""
    return numerics_record(resolve_device(params.run.device).type)


def build_sha256(params: RunParams) -> str:
    """sha256 of the library code (code_sha256) and the numerics it runs with."""
    record = json.dumps(numerics(params), sort_keys=True).encode()
    return hashlib.sha256(code_sha256().encode() + b"\0" + record).hexdigest()


def file_params(params: RunParams) -> dict:
    """The params that shape the file: all of the model's, less the test limit (evaluate only)."""
    values = to_dict(params)
    values["data"].pop("test_limit")
    return values


def provenance(params: RunParams) -> dict:
    """The params that produced a file (unless `encode.provenance` is `hashes`), their hash and
    the hash of the library code with its numerics (`code_sha256`, from build_sha256)."""
    values = file_params(params)
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
    record = {
        "model": params.model.name,
        "params_sha256": digest,
        "code_sha256": build_sha256(params),
    }
    if params.encode.provenance != "hashes":
        record["params"] = values
    return record


def git_revision() -> str:
    """HEAD's short hash, for the timing record; 'unknown' outside git."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short=12", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
            cwd=PROJECT_ROOT,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
