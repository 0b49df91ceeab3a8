"""Prefect tasks of the scheduled rerun: a git worktree at a branch's commit, `dvc repro` there.

A rerun never runs in the working tree people edit. It checks out the latest commit of a branch in
its own git worktree (`checkout_worktree`), points that worktree at the project's DVC cache and
remotes (`link_dvc_cache`), restores the committed outputs (`restore_outputs`), runs `dvc repro`
(only stages whose code, data or params changed rerun; the output says which ran and which were
skipped), and pushes the results to the default DVC remote (`push_results`). `worktree_lock` keeps
two reruns out of one worktree. DVC's own repo lock lives in each worktree's `.dvc/tmp`, so a rerun
never blocks `dvc repro` in the project's working tree.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.settings import PREFECT_API_URL

from deepcompression.report import markdown_table
from runtime.log import run_logger
from runtime.runinfo import process_tag

TAIL_LINES = 40
"""How many of dvc's last output lines a failed run's error message quotes."""

METRICS_GLOB = "metrics/*.json"

SKIPPED = "skipped: previous rerun still running"
"""The message of a rerun that found its worktree locked by another one (state `Skipped`)."""

_ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
_RAN = re.compile(r"^Running stage '(?P<stage>.+)':$")
_SKIPPED = re.compile(r"^(?:Stage )?'(?P<stage>.+)' didn't change, skipping$")
_RESTORED = re.compile(r"^Stage '(?P<stage>.+)' is cached - skipping run, checking out outputs$")


class ProjectDirError(ValueError):
    """`project_dir` is not a folder holding a DVC pipeline (dvc.yaml)."""


class DvcReproError(RuntimeError):
    """`dvc repro` exited with a non-zero status; the message quotes the end of its output."""


class MetricsFileError(ValueError):
    """A metrics JSON file could not be read as a JSON object."""


class GitError(RuntimeError):
    """A git command failed; the message quotes it and its error output."""


class BranchError(ValueError):
    """The branch to rerun cannot be found or named (unknown branch, detached HEAD)."""


class WorktreeError(ValueError):
    """The configured worktree folder cannot be used as the rerun's git worktree."""


@dataclass(frozen=True)
class ReproOutcome:
    """Which stages one `dvc repro` ran, skipped as unchanged, or restored from dvc's run cache."""

    stages_run: tuple[str, ...] = ()
    stages_skipped: tuple[str, ...] = ()
    stages_restored: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, list[str]]:
        """Plain lists, for the flow's return value and the artifacts."""
        return {key: list(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Checkout:
    """The worktree a rerun runs in, and the branch and commit checked out there."""

    path: str
    branch: str
    commit: str


@dataclass(frozen=True)
class DvcLink:
    """What a worktree takes from the project's DVC setup: cache, default remote, remote urls."""

    cache_dir: str
    remote: str | None = None
    remote_urls: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class DvcRun:
    """One finished dvc command: its exit status, cleaned output lines and duration."""

    returncode: int
    lines: tuple[str, ...]
    seconds: float

    def tail(self) -> str:
        """The last output lines, for error and warning messages."""
        return "\n".join(self.lines[-TAIL_LINES:]) or "(no output)"


def clean_line(line: str) -> str:
    """One output line without colour codes and surrounding whitespace."""
    return _ANSI_ESCAPE.sub("", line).strip()


def parse_repro_output(lines: Iterable[str]) -> ReproOutcome:
    """Classify stages from `dvc repro` output lines (each stage once, in first-seen order)."""
    found: dict[str, list[str]] = {"run": [], "skipped": [], "restored": []}
    for raw in lines:
        line = clean_line(raw)
        for kind, pattern in (("run", _RAN), ("skipped", _SKIPPED), ("restored", _RESTORED)):
            match = pattern.match(line)
            if match and match["stage"] not in found[kind]:
                found[kind].append(match["stage"])
                break
    return ReproOutcome(tuple(found["run"]), tuple(found["skipped"]), tuple(found["restored"]))


def check_project_dir(project_dir: str | Path) -> Path:
    """The absolute project folder; ProjectDirError unless it exists and holds a dvc.yaml."""
    path = Path(project_dir).expanduser().resolve()
    if not (path / "dvc.yaml").is_file():
        raise ProjectDirError(
            f"{path} has no dvc.yaml: set the flow parameter project_dir to the folder of the "
            "DVC pipeline (the repository root)"
        )
    return path


def git(args: list[str], cwd: str | Path) -> str:
    """Run `git args` in `cwd` and return its stripped output; GitError when it fails."""
    env = dict(os.environ, GIT_TERMINAL_PROMPT="0")
    done = subprocess.run(
        ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise GitError(f"git {' '.join(args)} failed in {cwd}: {done.stderr.strip()}")
    return done.stdout.strip()


def current_branch(project: str | Path) -> str:
    """The branch checked out in `project`; BranchError when HEAD is detached or not a repo."""
    try:
        return git(["symbolic-ref", "--quiet", "--short", "HEAD"], project)
    except GitError:
        raise BranchError(
            f"{project} has no branch checked out (detached HEAD, or not a git repository); "
            "set schedule.branch to the branch whose commits the reruns run"
        ) from None


def branch_commit(project: str | Path, branch: str) -> str:
    """The full hash of `branch`'s latest commit in `project`; BranchError when it is unknown."""
    try:
        return git(["rev-parse", "--verify", "--quiet", f"{branch}^{{commit}}"], project)
    except GitError:
        raise BranchError(
            f"branch {branch!r} has no commit in {project}; commit to it or set schedule.branch "
            "to an existing branch"
        ) from None


def worktree_path(project: str | Path, worktree: str | Path) -> Path:
    """The absolute worktree folder: `worktree` as is if absolute, else inside `project`."""
    return (Path(project) / Path(worktree).expanduser()).resolve()


def lock_path(worktree: str | Path) -> Path:
    """The lock file of a worktree: next to it, `<worktree>.lock`."""
    path = Path(worktree)
    return path.with_name(f"{path.name}.lock")


def lock_owner(worktree: str | Path) -> str:
    """Who holds the worktree's lock, as its holder wrote it (pid and start time)."""
    try:
        return lock_path(worktree).read_text().strip() or "another rerun"
    except OSError:
        return "another rerun"


@contextmanager
def worktree_lock(worktree: str | Path) -> Iterator[bool]:
    """Hold the worktree's file lock while inside; yields False at once when another holds it.

    The lock is an flock(2) on `<worktree>.lock`: the system drops it when its process ends, so a
    crashed rerun never leaves a stale lock behind.
    """
    path = lock_path(worktree)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            handle.truncate(0)
            handle.write(f"pid {os.getpid()} since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC\n")
            handle.flush()
            yield True
        finally:
            handle.truncate(0)
            fcntl.flock(handle, fcntl.LOCK_UN)


def _common_dir(path: str | Path) -> str:
    return git(["rev-parse", "--path-format=absolute", "--git-common-dir"], path)


def _check_worktree_of(tree: Path, project: Path) -> None:
    """WorktreeError unless `tree` is a linked worktree of `project`'s repository."""
    if tree == project:
        raise WorktreeError(
            f"schedule.worktree {tree} is the project's own working tree; a rerun needs a "
            "separate folder, e.g. '.prefect/rerun-worktree'"
        )
    try:
        same = _common_dir(tree) == _common_dir(project)
    except GitError:
        same = False
    if not same:
        raise WorktreeError(
            f"{tree} exists but is not a git worktree of {project}; remove it (it is recreated) "
            "or set schedule.worktree to another folder"
        )


@task(name="git-worktree", cache_policy=NO_CACHE)
def checkout_worktree(project_dir: str, branch: str, worktree: str) -> Checkout:
    """Create or update the rerun's worktree at `branch`'s latest commit (detached, forced clean).

    Tracked files are reset to the commit (a previous rerun's dvc.lock included); untracked,
    ignored outputs stay, so dvc can tell which of them still match.
    """
    logger = run_logger()
    project = Path(project_dir).resolve()
    tree = Path(worktree).resolve()
    commit = branch_commit(project, branch)
    if tree.exists():
        _check_worktree_of(tree, project)
        git(["checkout", "--quiet", "--force", "--detach", commit], tree)
    else:
        git(["worktree", "prune"], project)
        git(["worktree", "add", "--quiet", "--detach", str(tree), commit], project)
    check_project_dir(tree)
    logger.info("worktree %s at %s (%s)", tree, commit[:12], branch)
    return Checkout(str(tree), branch, commit)


def dvc_link(project: str | Path) -> DvcLink:
    """The project's DVC cache folder, default remote and local remote folders, all absolute."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        remotes = {
            name: str(conf["url"])
            for name, conf in repo.config["remote"].items()
            if "://" not in str(conf["url"])
        }
        return DvcLink(repo.cache.local_cache_dir, repo.config["core"].get("remote"), remotes)


def write_dvc_config_local(worktree: str | Path, link: DvcLink) -> Path:
    """Write the worktree's `.dvc/config.local`: the shared cache, the same remotes; its path."""
    from configobj import ConfigObj

    path = Path(worktree) / ".dvc" / "config.local"
    config = ConfigObj(encoding="utf-8")
    config.filename = str(path)
    config["cache"] = {"dir": link.cache_dir}
    if link.remote:
        config["core"] = {"remote": link.remote}
    for name, url in link.remote_urls.items():
        config[f'remote "{name}"'] = {"url": url}
    config.write()
    return path


@task(name="link-dvc-cache", cache_policy=NO_CACHE)
def link_dvc_cache(project_dir: str, worktree: str) -> DvcLink:
    """Make the worktree use the project's DVC cache and remotes (relative remote paths fixed)."""
    link = dvc_link(project_dir)
    path = write_dvc_config_local(worktree, link)
    run_logger().info("%s: cache %s, default remote %s", path, link.cache_dir, link.remote)
    return link


def dvc_command(args: Iterable[str]) -> list[str]:
    """`dvc args` run by this interpreter, so the venv's dvc is the one used."""
    return [sys.executable, "-m", "dvc", *args]


def repro_command(targets: Iterable[str] | None = None) -> list[str]:
    """`dvc repro [targets]` run by this interpreter."""
    return dvc_command(["repro", *(targets or [])])


def repro_env(
    base: Mapping[str, str], api_url: str | None = None, code_dir: str | None = None
) -> dict[str, str]:
    """`base` with this venv's bin first on PATH (stage cmds call its python), unbuffered output.

    Drops the `PREFECT__*` runtime keys of the current run so each stage's own flow run is a new,
    separate run rather than one that claims this run's id; `api_url` (this run's Prefect API)
    makes the stages record their runs on the same server. `code_dir` goes first on PYTHONPATH,
    so stages import the worktree's code, not the editable install's working tree.
    """
    env = {k: v for k, v in base.items() if not k.startswith("PREFECT__")}
    if api_url:
        env["PREFECT_API_URL"] = api_url
    if code_dir:
        rest = base.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{code_dir}{os.pathsep}{rest}" if rest else code_dir
    bin_dir = str(Path(sys.executable).parent)
    env["PATH"] = f"{bin_dir}{os.pathsep}{base['PATH']}" if base.get("PATH") else bin_dir
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("DVC_NO_ANALYTICS", "1")
    env.setdefault("DC_WHEEL_CACHE", str(Path(__file__).resolve().parents[1] / ".cache" / "wheels"))
    return env


def stream_dvc(
    args: list[str], cwd: str | Path, started: Callable[[int], object] | None = None
) -> DvcRun:
    """Run `dvc args` in `cwd`, logging each output line; its status and lines. `started` gets
    the dvc process's pid as soon as it runs."""
    logger = run_logger()
    command = dvc_command(args)
    logger.info("running dvc %s in %s", " ".join(args), cwd)
    lines: list[str] = []
    start = time.monotonic()
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=repro_env(os.environ, PREFECT_API_URL.value(), str(cwd)),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
    ) as process:
        assert process.stdout is not None
        if started is not None:
            started(process.pid)
        for raw in process.stdout:
            line = clean_line(raw)
            if line:
                logger.info("dvc | %s", line)
                lines.append(line)
    return DvcRun(process.returncode, tuple(lines), time.monotonic() - start)


@task(name="dvc-restore", cache_policy=NO_CACHE)
def restore_outputs(worktree: str, remote: str | None) -> bool:
    """Restore the commit's outputs: `dvc pull` from `remote`, else `dvc checkout` from the cache.

    Failures are warnings (True only when all was restored): `dvc repro` recomputes what is missing.
    """
    logger = run_logger()
    if remote:
        pulled = stream_dvc(["pull", "--run-cache"], worktree)
        if pulled.returncode == 0:
            return True
        logger.warning(
            "dvc pull from remote %r failed (status %d); restoring from the local DVC cache "
            "instead. Last output lines:\n%s",
            remote,
            pulled.returncode,
            pulled.tail(),
        )
    restored = stream_dvc(["checkout"], worktree)
    if restored.returncode != 0:
        logger.warning(
            "dvc checkout could not restore every output (status %d); dvc repro recomputes "
            "what is missing. Last output lines:\n%s",
            restored.returncode,
            restored.tail(),
        )
    return restored.returncode == 0


@task(name="dvc-push", cache_policy=NO_CACHE)
def push_results(worktree: str, remote: str | None) -> bool:
    """`dvc push --run-cache` to the default remote; a warning (False) when none or it fails."""
    logger = run_logger()
    if not remote:
        logger.warning(
            "push is set but the project has no default DVC remote: the results stay in the "
            "local DVC cache; add one with `dvc remote add -d NAME URL`"
        )
        return False
    pushed = stream_dvc(["push", "--run-cache"], worktree)
    if pushed.returncode != 0:
        logger.warning(
            "dvc push to remote %r failed (status %d): the results stay in the local DVC cache; "
            "check that the remote is reachable, then run `dvc push --run-cache` in %s. "
            "Last output lines:\n%s",
            remote,
            pushed.returncode,
            worktree,
            pushed.tail(),
        )
    return pushed.returncode == 0


def tag_with_invocation(dvc_pid: int) -> str | None:
    """Give the current flow run (the rerun) the `repro:` tag that the stage runs of the `dvc`
    process `dvc_pid` (started by this rerun) get (runtime/runinfo.py): the UI then finds the
    rerun with its stages. A failure is a warning: a missing tag never stops the rerun."""
    tag = process_tag(dvc_pid)
    if tag is None:
        run_logger().warning("could not tag this rerun: dvc (process %d) has exited", dvc_pid)
        return None
    if not ensure_tag(tag):
        return None
    run_logger().info("this rerun's stage runs are tagged %s", tag)
    return tag


def ensure_tag(tag: str) -> bool:
    """Add `tag` to the current flow run unless it is there (True when it is, after); a server
    error is a warning."""
    from prefect.client.orchestration import get_client
    from prefect.context import FlowRunContext, TaskRunContext

    task_ctx, flow_ctx = TaskRunContext.get(), FlowRunContext.get()
    run_id = task_ctx.task_run.flow_run_id if task_ctx else flow_ctx and flow_ctx.flow_run.id
    if run_id is None:
        return False
    try:
        with get_client(sync_client=True) as client:
            tags = client.read_flow_run(UUID(str(run_id))).tags
            if tag not in tags:
                client.update_flow_run(UUID(str(run_id)), tags=[*tags, tag])
    except Exception as err:  # the tag is for people; the rerun goes on without it
        run_logger().warning("could not tag this rerun %s: %s", tag, err)
        return False
    return True


@task(name="dvc-repro", cache_policy=NO_CACHE)
def run_dvc_repro(project_dir: str, targets: list[str] | None = None) -> ReproOutcome:
    """Run `dvc repro` in `project_dir`, log each output line, say which stages ran or skipped."""
    cwd = check_project_dir(project_dir)
    done = stream_dvc(["repro", *(targets or [])], cwd, tag_with_invocation)
    if done.returncode != 0:
        raise DvcReproError(
            f"dvc repro exited with status {done.returncode} after {done.seconds:.1f} s in "
            f"{cwd}; fix the failing stage and rerun. Last output lines:\n{done.tail()}"
        )
    outcome = parse_repro_output(done.lines)
    run_logger().info(
        "dvc repro done in %.1f s: ran %s, skipped %s, restored %s",
        done.seconds,
        list(outcome.stages_run),
        list(outcome.stages_skipped),
        list(outcome.stages_restored),
    )
    return outcome


def flatten_metrics(metrics: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested metrics as one level of dotted keys; lists become JSON text."""
    flat: dict[str, Any] = {}
    for key, value in metrics.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_metrics(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value)
        else:
            flat[name] = value
    return flat


@task(name="read-metrics", cache_policy=NO_CACHE)
def read_metrics(project_dir: str) -> dict[str, dict[str, Any]]:
    """Every `metrics/*.json` of the project, keyed by file stem and flattened to dotted keys."""
    found: dict[str, dict[str, Any]] = {}
    for path in sorted(check_project_dir(project_dir).glob(METRICS_GLOB)):
        try:
            payload = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise MetricsFileError(
                f"{path} is not readable JSON ({err}); rerun its stage"
            ) from None
        if not isinstance(payload, dict):
            raise MetricsFileError(
                f"{path} holds a JSON {type(payload).__name__}, not an object; "
                "write metrics as a JSON object of name: value"
            )
        found[path.stem] = flatten_metrics(payload)
    return found


def metric_rows(metrics: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per metric: {"file", "metric", "value"} (the `rerun-metrics` table)."""
    return [
        {"file": stem, "metric": name, "value": value}
        for stem, values in metrics.items()
        for name, value in values.items()
    ]


def _stage_list(stages: Iterable[str]) -> str:
    names = [f"`{s}`" for s in stages]
    return ", ".join(names) if names else "none"


def _source_lines(checkout: Checkout | None, pushed: bool | None) -> str:
    """The report's lines on what was checked out and whether the results were pushed."""
    lines = ""
    if checkout is not None:
        lines += f"- **commit**: `{checkout.commit[:12]}` of branch `{checkout.branch}`\n"
        lines += f"- **worktree**: `{checkout.path}`\n"
    if pushed is not None:
        lines += f"- **pushed to the DVC remote**: {'yes' if pushed else 'no (see the log)'}\n"
    return lines


def rerun_markdown(
    outcome: ReproOutcome,
    metrics: Mapping[str, Mapping[str, Any]],
    project_dir: str,
    checkout: Checkout | None = None,
    pushed: bool | None = None,
) -> str:
    """The `rerun-report` markdown: what ran on which commit, what was skipped, every metric."""
    verdict = (
        "Nothing changed: no stage ran, nothing was trained."
        if not outcome.stages_run
        else f"{len(outcome.stages_run)} stage(s) reran because their code, data or params changed."
    )
    return (
        f"# Scheduled rerun of `{project_dir}`\n\n{verdict}\n\n"
        f"{_source_lines(checkout, pushed)}"
        f"- **stages run**: {_stage_list(outcome.stages_run)}\n"
        f"- **stages skipped (unchanged)**: {_stage_list(outcome.stages_skipped)}\n"
        f"- **stages restored from run cache**: {_stage_list(outcome.stages_restored)}\n\n"
        f"## Metrics\n\n{markdown_table(metric_rows(metrics))}"
    )


@task(name="publish-rerun-report", cache_policy=NO_CACHE)
def publish_rerun_report(
    outcome: ReproOutcome,
    metrics: Mapping[str, Mapping[str, Any]],
    project_dir: str,
    checkout: Checkout | None = None,
    pushed: bool | None = None,
) -> None:
    """Attach the `rerun-metrics` table and the `rerun-report` markdown to the flow run."""
    create_table_artifact(
        key="rerun-metrics",
        table=metric_rows(metrics),
        description="scheduled rerun: every metric of metrics/*.json",
    )
    create_markdown_artifact(
        key="rerun-report",
        markdown=rerun_markdown(outcome, metrics, project_dir, checkout, pushed),
        description="scheduled rerun: commit, stages run and skipped, metrics",
    )
