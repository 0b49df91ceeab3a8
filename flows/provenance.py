"""Provenance written into the compressed file's header, derived from the inputs alone.

The same params and the same code give the same bytes, whatever the git history: the header
records a hash of the params and of the code that writes the file (the encode stage's code deps
in dvc.yaml, i.e. its import closure; the code upstream acts through the weights it hands on),
and of the numeric stack it ran on (the pinned settings in force, torch's, MKL's and oneDNN's
versions, the device), never a commit. So an edit to code the encode stage does not import
changes no file, and DVC's deps of encode are all the code its bytes depend on. The git
revision goes to the untracked timing file instead. Runs whose numerics could differ never
share a hash (or a DVC cache entry).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import yaml

from deepcompression.config import RunParams
from deepcompression.numerics import numerics_record
from deepcompression.schema import to_dict
from deepcompression.training import resolve_device
from runtime.workspace import PROJECT_ROOT

CODE_DIRS = ("deepcompression", "models")
"""Without a dvc.yaml (an installed copy), the code hashed: the library and the networks."""
FILE_STAGE = "encode"
"""The stage that writes the file, whose code deps the hash covers."""
DIGEST_HEX = 8
"""Hex digits of each hash the file records: sha256's first 4 bytes, as a git short hash names a
commit (a run identifier, not an integrity check: the file has its CRC32s); version 8 of the
format stores them in 4 bytes each."""


def file_code(root: Path = PROJECT_ROOT, stage: str = FILE_STAGE) -> list[str]:
    """The .py files of a stage (by default the one that writes the file), relative to `root`,
    sorted: the code deps dvc.yaml lists for it (tests/test_dvc_stages.py holds them to its
    import closure), or without a dvc.yaml every .py file under CODE_DIRS."""
    stages = root / "dvc.yaml"
    if stages.is_file():
        entry = yaml.safe_load(stages.read_text())["stages"][stage]
        return sorted(d for d in entry.get("do", entry)["deps"] if d.endswith(".py"))
    found = (p for folder in CODE_DIRS for p in (root / folder).rglob("*.py"))
    return sorted(p.relative_to(root).as_posix() for p in found)


def code_sha256(root: Path = PROJECT_ROOT, stage: str = FILE_STAGE) -> str:
    """sha256 over the relative path and content of each file of `file_code`."""
    digest = hashlib.sha256()
    for name in file_code(root, stage):
        digest.update(name.encode() + b"\0")
        digest.update(hashlib.sha256((root / name).read_bytes()).digest())
    return digest.hexdigest()


def numerics(params: RunParams) -> dict:
    """The numeric settings in force and the library versions, for `params.run.device`: what
    each stage's metrics record (deepcompression/numerics.py)."""
    return numerics_record(resolve_device(params.run.device).type)


def build_sha256(params: RunParams, stage: str = FILE_STAGE) -> str:
    """sha256 of a stage's code (code_sha256) and the numerics it runs with."""
    record = json.dumps(numerics(params), sort_keys=True).encode()
    return hashlib.sha256(code_sha256(stage=stage).encode() + b"\0" + record).hexdigest()


def file_params(params: RunParams) -> dict:
    """The params that shape the file: all of the model's, less the test limit (evaluate only)."""
    values = to_dict(params)
    values["data"].pop("test_limit")
    return values


def provenance(params: RunParams) -> dict:
    """The params that produced a file (unless `encode.provenance` is `hashes`), their hash and
    the hash of the library code with its numerics (`code_sha256`, from build_sha256), each
    cut to DIGEST_HEX digits. The model is the header's arch, so it is not repeated here."""
    values = file_params(params)
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
    record = {
        "params_sha256": digest[:DIGEST_HEX],
        "code_sha256": build_sha256(params)[:DIGEST_HEX],
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
