"""The real `dvc repro` on a copy of the project (one small model): bad params never touch the
outputs, returning to earlier params restores them from DVC's run cache, and a killed prune stage
resumes after its last completed iteration with the same bytes as an uninterrupted run.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from test_warm import Warm
from tiny_project import DVC, ROOT, mnist_slice_params, project_copy, run

pytestmark = [pytest.mark.slow, pytest.mark.long(65)]
MODEL = "lenet_300_100"
CODE = ("deepcompression", "models", "tasks", "flows")


def _small_params(mnist_root: Path, iterations: int = 2) -> dict:
    """One model on 1,000 training images, quantized by the sorted engine in one epoch."""
    raw = mnist_slice_params(mnist_root, MODEL, (1000, 300, 300), iterations)
    section = raw["models"][MODEL]
    section["quantize"]["finetune"]["epochs"] = 1
    section["quantize"]["engine"] = "sorted"
    return raw


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
    repo = project_copy(tmp_path / "repo", CODE, _small_params(mnist_root), stage_env)
    runner = Warm(repo, stage_env)  # as `make run` does: stages fork from it, not import anew
    runner.start()
    try:
        _repro_then_typo_then_restore(repo, stage_env)
    finally:
        runner.stop()


def _repro_then_typo_then_restore(repo: Path, stage_env: dict) -> None:
    target = f"encode@{MODEL}"  # check, data, train, prune, quantize, encode: what matters here
    first = run([DVC, "repro", target], repo, stage_env)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    timing = json.loads((repo / "runs" / MODEL / "timing" / "prune-process.json").read_text())
    assert timing["runner"] == "warm", timing
    original = _outputs(repo)
    original_params = (repo / "params.yaml").read_text()

    _set(repo, f"models.{MODEL}.prune.retrain.epochs", -1)
    typo = run([DVC, "repro", target], repo, stage_env, timeout=300)
    assert typo.returncode != 0
    assert "retrain.epochs" in typo.stdout + typo.stderr
    assert _outputs(repo) == original, "a typo in params must not remove or change any output"

    _set(repo, f"models.{MODEL}.prune.retrain.epochs", 1)
    _set(repo, f"models.{MODEL}.prune.retrain.lr", 0.03)
    changed = run([DVC, "repro", target], repo, stage_env)
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert (
        _outputs(repo)[f"checkpoints/{MODEL}/pruned.pt"]
        != original[f"checkpoints/{MODEL}/pruned.pt"]
    )

    (repo / "params.yaml").write_text(original_params)
    start = time.perf_counter()
    back = run([DVC, "repro", target], repo, stage_env, timeout=300)
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
