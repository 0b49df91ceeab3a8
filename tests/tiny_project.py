"""Small copies of the project for the end-to-end tests: params.yaml cut down to one model on a
slice of MNIST, and a git + DVC repository of the code with its own params."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import yaml

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
DVC = str(BIN / "dvc")


def mnist_slice_params(
    mnist_root: Path, model: str, limits: tuple[int, int, int], iterations: int = 2
) -> dict:
    """params.yaml with only `model`, trained on the first (train, val, test) `limits` images of
    the local MNIST: hand allocation tables (no search), one epoch for training and for each
    retraining, `iterations` pruning rounds. Callers change what their test is about."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    train_limit, val_limit, test_limit = limits
    raw["data"].update(
        source="local",
        local_dir=str(mnist_root / "MNIST" / "raw"),
        train_limit=train_limit,
        val_limit=val_limit,
        test_limit=test_limit,
    )
    section = raw["models"][model]
    raw["models"] = {model: section}
    section["allocation"] = "params"
    section["train"]["epochs"] = 1
    section["prune"]["iterations"] = iterations
    section["prune"]["retrain"]["epochs"] = 1
    return raw


def run(cmd: list[str], cwd: Path, env: dict, timeout: float = 600) -> subprocess.CompletedProcess:
    """`cmd` in `cwd` with `env`, its output captured as text."""
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def project_copy(
    dest: Path,
    folders: Sequence[str],
    params: dict,
    env: dict,
    dvc_yaml: Callable[[Path], str] | None = None,
) -> Path:
    """A git + DVC repo in `dest` holding the project's `folders`, `params` as params.yaml and
    dvc.yaml (the project's own, or `dvc_yaml` of the copied repo), all committed."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in folders:
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    text = (ROOT / "dvc.yaml").read_text() if dvc_yaml is None else dvc_yaml(dest)
    (dest / "dvc.yaml").write_text(text)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        [DVC, "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        result = run(cmd, dest, env)
        assert result.returncode == 0, result.stderr
    return dest
