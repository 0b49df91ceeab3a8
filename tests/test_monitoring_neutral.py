"""Monitoring never changes a result: a stage writes the same bytes whether its Prefect server is
up, configured but down, or absent (the stage then starts one of its own).

This is what lets dvc.yaml leave runtime/ out of every stage's deps (tests/test_dvc_stages.py):
no change to how a run is watched can alter what it computes. Warm and cold stage processes are
compared in tests/test_warm.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from tiny_project import mnist_slice_params

from runtime.server import LocalServer, stop

MODEL = "lenet5"
OUTPUTS = (
    "checkpoints/lenet5/dense.pt",
    "checkpoints/lenet5/pruned.pt",
    "metrics/lenet5/train.json",
    "metrics/lenet5/prune.json",
    "plots/lenet5/train.csv",
    "plots/lenet5/prune.csv",
)
pytestmark = [pytest.mark.slow, pytest.mark.long(44)]


def _stage_env(**overrides: str) -> dict[str, str]:
    """The caller's environment without any Prefect URL or port, cold stages, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "DC_PREFECT_PORT")}
    env.update(DC_WARM_STAGES="0", PREFECT_SERVER_ANALYTICS_ENABLED="false", **overrides)
    return env


def _run(workspace: Path, stage: str, env: dict[str, str]) -> None:
    """`python -m flows.run STAGE` in `workspace` (its own .prefect folder), which must exit 0."""
    command = [sys.executable, "-m", "flows.run", stage, "--root", ".", "--params", "params.yaml"]
    command += ["--model", MODEL]
    done = subprocess.run(
        command, cwd=workspace, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]


def _digests(workspace: Path) -> dict[str, str]:
    """md5 of every output the train and prune stages write."""
    return {p: hashlib.md5((workspace / p).read_bytes()).hexdigest() for p in OUTPUTS}


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, mnist_root) -> Path:
    """A workspace with params and the data stage's output, copied by each case: `data` links to
    the session's MNIST root, which the data stage's own functions wrote (tests/conftest.py)."""
    workspace = tmp_path_factory.mktemp("prepared")
    params = mnist_slice_params(mnist_root, MODEL, (600, 200, 200))
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    (workspace / "data").symlink_to(mnist_root, target_is_directory=True)
    return workspace


def _workspace(prepared: Path, tmp_path: Path, name: str) -> Path:
    workspace = tmp_path / name
    shutil.copytree(prepared, workspace, symlinks=True)
    return workspace


def test_outputs_are_identical_with_the_server_up_down_and_absent(
    prepared, tmp_path, server, free_port
):
    """Train and prune write identical bytes under a live server, a configured URL nobody
    answers, and no server at all (the stage starts the project's local one itself)."""
    results = {}
    cases = {
        "up": _stage_env(PREFECT_API_URL=server.api_url),
        "down": _stage_env(PREFECT_API_URL=f"http://127.0.0.1:{free_port}/api"),
        "absent": _stage_env(DC_PREFECT_PORT=str(free_port)),
    }
    for name, env in cases.items():
        workspace = _workspace(prepared, tmp_path, name)
        try:
            for stage in ("train", "prune"):
                _run(workspace, stage, env)
        finally:
            if name == "absent":
                started = LocalServer(port=free_port, home=workspace / ".prefect")
                assert stop(started), "the stage was to start a local server of its own"
        results[name] = _digests(workspace)
    assert results["up"] == results["down"] == results["absent"]
