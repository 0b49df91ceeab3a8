"""The real `dvc repro` on a copy of the project (one small model): bad params never touch the
outputs, returning to earlier params restores them from DVC's run cache, and a killed prune stage
resumes after its last completed iteration with the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow
MODEL = "lenet_300_100"
CODE = ("deepcompression", "models", "tasks", "flows")


def _run(cmd: list[str], cwd: Path, env: dict, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _small_params(mnist_root: Path, iterations: int = 2) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(
        source="local",
        local_dir=str(mnist_root / "MNIST" / "raw"),
        train_limit=1000,
        val_limit=300,
        test_limit=300,
    )
    section = raw["models"][MODEL]
    section["allocation"] = "params"  # the hand tables: no search run here
    section["train"]["epochs"] = 1
    section["prune"]["iterations"] = iterations
    section["prune"]["retrain"]["epochs"] = 1
    section["quantize"]["finetune"]["epochs"] = 1
    section["quantize"]["engine"] = "sorted"
    raw["models"] = {MODEL: section}
    return raw


@pytest.fixture(scope="module")
def stage_env(prefect_api) -> dict:
    """Environment for stage processes: the venv first on PATH, the test Prefect server."""
    env = dict(os.environ)
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        PREFECT_API_URL=prefect_api,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        DVC_NO_ANALYTICS="1",
        OMP_NUM_THREADS="1",
    )
    env.pop("PYTHONPATH", None)
    return env


def _project_copy(dest: Path, params: dict, env: dict) -> Path:
    """A git + DVC repo holding the project's code, dvc.yaml and the given params."""
    dest.mkdir(parents=True, exist_ok=True)
    for folder in CODE:
        shutil.copytree(ROOT / folder, dest / folder, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "dvc.yaml", dest / "dvc.yaml")
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for cmd in (
        ["git", "init", "-q"],
        [str(BIN / "dvc"), "init", "-q"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"],
    ):
        result = _run(cmd, dest, env)
        assert result.returncode == 0, result.stderr
    return dest


def _outputs(repo: Path) -> dict[str, bytes]:
    files = [
        f"checkpoints/{MODEL}/dense.pt",
        f"checkpoints/{MODEL}/pruned.pt",
        f"checkpoints/{MODEL}/quantized.pt",
        f"compressed/{MODEL}.dcz",
        f"metrics/{MODEL}/prune.json",
        f"plots/{MODEL}/prune.csv",
    ]
    return {f: (repo / f).read_bytes() for f in files}


def _set(repo: Path, path: str, value) -> None:
    raw = yaml.safe_load((repo / "params.yaml").read_text())
    node = raw
    *parents, last = path.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def test_bad_params_touch_nothing_and_old_params_restore_from_the_run_cache(
    tmp_path, mnist_root, stage_env
):
    repo = _project_copy(tmp_path / "repo", _small_params(mnist_root), stage_env)
    dvc = str(BIN / "dvc")
    target = f"encode@{MODEL}"  # check, data, train, prune, quantize, encode: what matters here
    first = _run([dvc, "repro", target], repo, stage_env, timeout=600)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    original = _outputs(repo)
    original_params = (repo / "params.yaml").read_text()

    _set(repo, f"models.{MODEL}.prune.retrain.epochs", -1)
    typo = _run([dvc, "repro", target], repo, stage_env)
    assert typo.returncode != 0
    assert "retrain.epochs" in typo.stdout + typo.stderr
    assert _outputs(repo) == original, "a typo in params must not remove or change any output"

    _set(repo, f"models.{MODEL}.prune.retrain.epochs", 1)
    _set(repo, f"models.{MODEL}.prune.retrain.lr", 0.03)
    changed = _run([dvc, "repro", target], repo, stage_env, timeout=600)
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert (
        _outputs(repo)[f"checkpoints/{MODEL}/pruned.pt"]
        != original[f"checkpoints/{MODEL}/pruned.pt"]
    )

    (repo / "params.yaml").write_text(original_params)
    start = time.perf_counter()
    back = _run([dvc, "repro", target], repo, stage_env)
    seconds = time.perf_counter() - start
    assert back.returncode == 0, back.stderr[-3000:]
    assert f"Stage 'prune@{MODEL}' is cached" in back.stdout, back.stdout[-3000:]
    assert f"Stage 'quantize@{MODEL}' is cached" in back.stdout
    assert _outputs(repo) == original, "restored outputs are the original bytes"
    assert seconds < 60, f"restoring from the run cache took {seconds:.0f} s"


def _prune(root: Path, env: dict) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "flows.run", "prune", "--model", MODEL, "--root", str(root)]
    cmd += ["--params", str(root / "params.yaml")]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def test_a_killed_prune_stage_resumes_with_the_same_bytes(tmp_path, mnist_root, stage_env):
    from flows.params import load_params
    from flows.train import train_flow

    params = _small_params(mnist_root, iterations=3)
    roots = {name: tmp_path / name for name in ("straight", "killed")}
    for root in roots.values():
        root.mkdir()
        (root / "params.yaml").write_text(yaml.safe_dump(params))
        (root / "data").symlink_to(mnist_root)
    load_params(roots["straight"] / "params.yaml", MODEL)
    train_flow(str(roots["straight"] / "params.yaml"), str(roots["straight"]), MODEL)
    dense = roots["straight"] / f"checkpoints/{MODEL}/dense.pt"
    (roots["killed"] / f"checkpoints/{MODEL}").mkdir(parents=True)
    shutil.copy(dense, roots["killed"] / f"checkpoints/{MODEL}/dense.pt")

    straight = _prune(roots["straight"], stage_env)
    assert straight.wait(timeout=300) == 0, straight.stdout.read()[-3000:]

    victim = _prune(roots["killed"], stage_env)
    state = roots["killed"] / f"runs/{MODEL}/resume/prune/state.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and not (state.exists() and victim.poll() is None):
        time.sleep(0.05)
    assert victim.poll() is None, "the stage ended before its first iteration was saved"
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    assert not (roots["killed"] / f"checkpoints/{MODEL}/pruned.pt").exists()

    resumed = _prune(roots["killed"], stage_env)
    log = resumed.communicate(timeout=300)[0]
    assert resumed.returncode == 0, log[-3000:]
    assert "resuming after completed iteration" in log
    for name in (f"checkpoints/{MODEL}/pruned.pt", f"metrics/{MODEL}/prune.json"):
        assert (roots["killed"] / name).read_bytes() == (roots["straight"] / name).read_bytes()
    assert not state.exists(), "resume state is dropped once the stage completes"
