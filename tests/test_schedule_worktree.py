"""Scheduled reruns run what is committed, one at a time, and never touch the user's working tree.

Each test builds a real git + DVC project in tmp_path with one cheap stage (`score@tiny`, a foreach
stage, so its name holds an `@` like the pipeline's `train@lenet5`) and runs the real flow with real
`dvc` commands against the session's Prefect test server.
"""

from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, StateType
from prefect.states import Pending

from runtime.rerun import (
    SKIPPED,
    BranchError,
    WorktreeError,
    checkout_worktree,
    lock_path,
    worktree_lock,
)
from runtime.schedule import check_schedule, rerun_deployment, scheduled_rerun
from runtime.schedule_config import ScheduleConfig

pytestmark = pytest.mark.long(14)

STAGE = "score@tiny"
HOLD_ENV = "RERUN_TEST_HOLD"
"""When set to a folder, the stage touches `started` there and waits for `release` to appear."""

SCORE_PY = f"""\
import json, os, pathlib, sys, time
hold = os.environ.get("{HOLD_ENV}")
if hold:
    pathlib.Path(hold, "started").touch()
    deadline = time.monotonic() + 60
    while not pathlib.Path(hold, "release").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
text = pathlib.Path("input.txt").read_text()
pathlib.Path("metrics").mkdir(exist_ok=True)
metrics = {{"chars": len(text), "detail": {{"lines": text.count("\\n")}}}}
pathlib.Path("metrics/score.json").write_text(json.dumps(metrics))
with open("runs.log", "a") as log:
    log.write(sys.prefix + "\\n")
print("score computed")
"""

DVC_YAML = """\
stages:
  score:
    foreach: [tiny]
    do:
      cmd: python score.py
      deps: [score.py, input.txt]
      metrics:
        - metrics/score.json
"""

GIT_ENV = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
    "DVC_NO_ANALYTICS": "1",
}


def run(command: list[str], cwd: Path) -> str:
    """Run a command in `cwd` without the hold variable; its stdout (fails the test on error)."""
    env = {k: v for k, v in os.environ.items() if k != HOLD_ENV} | GIT_ENV
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def dvc(args: list[str], cwd: Path) -> str:
    """`dvc args` in `cwd` with this venv's dvc."""
    return run([sys.executable, "-m", "dvc", *args], cwd)


def commit(project: Path, message: str) -> str:
    """Commit every change in `project`; the new commit's hash."""
    run(["git", "add", "-A"], project)
    run(["git", "-c", "commit.gpgsign=false", "commit", "-q", "-m", message], project)
    return run(["git", "rev-parse", "HEAD"], project).strip()


def tiny_project(root: Path, stage_script: str = SCORE_PY) -> Path:
    """A git + DVC project on branch `main` with one committed stage `score@tiny`."""
    root.mkdir()
    (root / "score.py").write_text(stage_script)
    (root / "input.txt").write_text("hello\n")
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / ".gitignore").write_text(".prefect/\nruns.log\n")
    run(["git", "init", "-q", "-b", "main"], root)
    dvc(["init", "-q"], root)
    commit(root, "tiny pipeline")
    return root


def far_cron(tz: str) -> str:
    """A daily cron 12 hours away from now, so the server never schedules a run during the test."""
    return f"17 {(datetime.now(ZoneInfo(tz)).hour + 12) % 24} * * *"


def snapshot(tree: Path, cache: bool = False) -> dict[str, str]:
    """Files under `tree` by content hash: the DVC cache if `cache`, else all but it and git's.

    .git/ (where git records the worktree) and .prefect/ (the rerun's own place) are left out; the
    DVC cache is shared with the rerun by design, so it may only gain files.
    """
    found = {}
    for path in sorted(tree.rglob("*")):
        relative = path.relative_to(tree)
        in_cache = relative.parts[:2] == (".dvc", "cache")
        if path.is_file() and relative.parts[0] not in (".git", ".prefect") and in_cache == cache:
            found[str(relative)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return found


def worktree_of(project: Path) -> Path:
    """The default rerun worktree of `project`."""
    return project / ".prefect" / "rerun-worktree"


def runs(tree: Path) -> int:
    """How many times the stage ran in `tree`."""
    log = tree / "runs.log"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_rerun_runs_the_committed_branch_not_uncommitted_edits(prefect_api, tmp_path, caplog):
    project = tiny_project(tmp_path / "project").resolve()
    unreachable = project / "score.py" / "remote"  # under a file: pull and push must fail
    dvc(["remote", "add", "-d", "--local", "broken", str(unreachable)], project)
    (project / "input.txt").write_text("half-edited, uncommitted\n")

    with caplog.at_level(logging.WARNING):
        result = scheduled_rerun(project_dir=str(project))

    head = run(["git", "rev-parse", "HEAD"], project).strip()
    assert (result["branch"], result["commit"]) == ("main", head)
    assert result["stages_run"] == [STAGE]
    assert result["metrics"]["score"]["chars"] == len("hello\n")  # the committed input
    assert runs(worktree_of(project)) == 1 and runs(project) == 0
    assert result["pushed"] is False  # an unreachable remote is a warning, not a failed run
    assert "dvc pull from remote 'broken' failed" in caplog.text
    assert "dvc push to remote 'broken' failed" in caplog.text


def test_rerun_leaves_the_users_tree_and_dvc_lock_untouched(prefect_api, tmp_path):
    project = tiny_project(tmp_path / "project").resolve()
    dvc(["remote", "add", "-d", "store", "../remote"], project)
    assert "../../remote" in (project / ".dvc" / "config").read_text()  # relative to .dvc/
    dvc(["repro"], project)
    commit(project, "results")
    (project / "input.txt").write_text("half-edited, uncommitted\n")
    before, status = snapshot(project), run(["git", "status", "--porcelain"], project)
    cache_before = snapshot(project, cache=True)
    assert runs(project) == 1 and "dvc.lock" in before

    result = scheduled_rerun(project_dir=str(project))

    assert snapshot(project) == before
    assert cache_before.items() <= snapshot(project, cache=True).items()
    assert run(["git", "status", "--porcelain"], project) == status
    # the committed results came from the shared DVC cache instead of being recomputed
    assert result["stages_run"] == [] and result["stages_skipped"] == [STAGE]
    assert result["metrics"]["score"]["chars"] == len("hello\n")
    assert runs(worktree_of(project)) == 0
    assert result["pushed"] is True and any((tmp_path / "remote" / "files").rglob("*"))
    config_local = (worktree_of(project) / ".dvc" / "config.local").read_text()
    assert str(tmp_path / "remote") in config_local  # not the committed "../../remote"
    assert str(project / ".dvc" / "cache") in config_local


def _rerun_in_thread(project: Path, states: list[Any]) -> threading.Thread:
    """Start a scheduled rerun of `project` in a thread; its final state lands in `states`."""

    def target() -> None:
        states.append(scheduled_rerun(project_dir=str(project), push=False, return_state=True))

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _wait_for(path: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} did not appear within {seconds} s"
        time.sleep(0.05)


def test_overlapping_reruns_skip_and_never_block_the_users_repro(
    prefect_api, tmp_path, monkeypatch
):
    project = tiny_project(tmp_path / "project").resolve()
    hold = tmp_path / "hold"
    hold.mkdir()
    monkeypatch.setenv(HOLD_ENV, str(hold))
    states: list[Any] = []
    first = _rerun_in_thread(project, states)
    try:
        _wait_for(hold / "started", 60)
        dvc(["repro"], project)  # the user's own repro is not blocked: DVC locks per worktree
        assert runs(project) == 1

        second = scheduled_rerun(project_dir=str(project), push=False, return_state=True)
        assert second.type == StateType.CANCELLED and second.name == "Skipped"
        assert second.message.startswith(SKIPPED)
        assert str(lock_path(worktree_of(project))) in second.message
    finally:
        (hold / "release").touch()
        first.join(60)
    (state,) = states
    assert state.is_completed(), state
    assert state.result()["stages_run"] == [STAGE]
    assert runs(worktree_of(project)) == 1  # the skipped run never ran the stage


def test_worktree_lock_is_exclusive_and_released(tmp_path):
    tree = tmp_path / "rerun"
    with worktree_lock(tree) as held:
        assert held and f"pid {os.getpid()}" in lock_path(tree).read_text()
        with worktree_lock(tree) as again:
            assert not again
    with worktree_lock(tree) as held:
        assert held


def test_checkout_refuses_unknown_branch_and_foreign_folder(tmp_path):
    project = tiny_project(tmp_path / "project").resolve()
    with pytest.raises(BranchError, match="'nope' has no commit"):
        checkout_worktree.fn(str(project), "nope", str(tmp_path / "wt"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine\n")
    with pytest.raises(WorktreeError, match="not a git worktree"):
        checkout_worktree.fn(str(project), "main", str(foreign))
    with pytest.raises(WorktreeError, match="own working tree"):
        checkout_worktree.fn(str(project), "main", str(project))


def test_served_deployment_cancels_a_tick_while_a_rerun_runs(prefect_api, tmp_path):
    from prefect.client.orchestration import get_client

    project = tiny_project(tmp_path / "project").resolve()
    config = check_schedule(ScheduleConfig(far_cron("UTC"), "UTC", push=False))
    deployment = rerun_deployment(config, project, name=f"serve-{uuid.uuid4().hex[:8]}")
    deployment_id = deployment.apply()

    with get_client(sync_client=True) as client:
        stored = client.read_deployment(deployment_id)
        assert stored.global_concurrency_limit.limit == 1
        assert stored.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.CANCEL_NEW
        assert stored.parameters == {
            "project_dir": str(project),
            "branch": "main",
            "worktree": str(worktree_of(project)),
            "push": False,
        }
        running, tick = (client.create_flow_run_from_deployment(deployment_id) for _ in "ab")
        assert client.set_flow_run_state(running.id, Pending()).state.is_pending()
        client.set_flow_run_state(tick.id, Pending())
        cancelled = client.read_flow_run(tick.id).state
        assert cancelled.type == StateType.CANCELLED
        assert "concurrency limit" in cancelled.message
