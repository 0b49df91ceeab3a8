"""Scheduled reruns: a deployment that runs `dvc repro` on a cron schedule and reports what changed.

A rerun runs what is committed, never the working tree people edit: the latest commit of
`schedule.branch` (default: the branch checked out at serve/deploy time), checked out in its own git
worktree (`schedule.worktree`, default .prefect/rerun-worktree) that shares the project's DVC cache.
`dvc repro` there reruns only the stages whose code, data or params changed, so a rerun with
nothing new trains nothing (`stages_run: []`); with `schedule.push` the results go to the default
DVC remote. Reruns run one at a time: the deployment's concurrency limit is 1 with the CANCEL_NEW
strategy (a tick that comes while a rerun still runs is Cancelled), and a file lock on the worktree
makes any other overlapping run end at once in the state `Skipped` (type Cancelled). The cron comes
from the `schedule:` section of params.yaml unless `--cron` / `--timezone` override it.

Usage (from the repository root):
  python -m runtime.schedule serve [--cron CRON] [--timezone TZ]   # this process runs the schedule
  python -m runtime.schedule deploy --pool POOL [--cron CRON]      # a process pool's workers do
For work pools there is also prefect.yaml (`prefect deploy --all`); start a worker with
`prefect worker start --pool POOL`. Runs are recorded on the project's local Prefect server.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import zoneinfo
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect import flow
from prefect import serve as serve_deployments
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectNotFound
from prefect.schedules import Cron, Schedule
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelled, State

from deepcompression.config import ConfigError
from runtime.log import run_logger
from runtime.monitor import HEARTBEAT_ENV, HEARTBEAT_S
from runtime.rerun import (
    SKIPPED,
    check_project_dir,
    checkout_worktree,
    current_branch,
    link_dvc_cache,
    lock_owner,
    lock_path,
    publish_rerun_report,
    push_results,
    read_metrics,
    restore_outputs,
    run_dvc_repro,
    worktree_lock,
    worktree_path,
)
from runtime.schedule_config import ScheduleConfig, schedule_section
from runtime.server import ensure_api_url

CODE_ROOT = Path(__file__).resolve().parents[1]
"""The repository holding this flow's code (a worker's flow run starts here)."""

ENTRYPOINT = "runtime/schedule.py:scheduled_rerun"
DEPLOYMENT_NAME = "nightly"
FLOW_NAME = "scheduled-rerun"
DEFAULT_WORKTREE = ScheduleConfig().worktree

RERUN_CONCURRENCY = ConcurrencyLimitConfig(
    limit=1, collision_strategy=ConcurrencyLimitStrategy.CANCEL_NEW
)
"""One rerun at a time; a tick that comes while one runs is Cancelled, not queued (a queued rerun
would only repeat the same `dvc repro` once the first is done: the next tick catches up instead)."""

RERUN_TAG = "scheduled-rerun"
"""The deployment's tag, so its runs' tag: runtime/recovery.py's zombie automation watches them."""
RERUN_ENV = {HEARTBEAT_ENV: str(HEARTBEAT_S)}
"""Each rerun's process sends heartbeats as often as the zombie automation expects (Prefect's
default, 180 s, would get a running rerun marked Crashed)."""
RERUN_JOB_VARIABLES = {"env": RERUN_ENV}


class ScheduleError(ValueError):
    """The cron expression or time zone of the rerun schedule is not valid."""


def rerun_name() -> str:
    """`rerun-<branch>-<UTC date and time of its tick>`: how a rerun is found on the runs page.

    The tick's scheduled time, not the clock: a runner picks a run up a few seconds early, and
    two ticks must not share a name."""
    from prefect.runtime import flow_run

    branch = flow_run.parameters.get("branch") or "checked-out-branch"
    when = flow_run.scheduled_start_time or datetime.now(UTC)
    return f"rerun-{branch}-{when.astimezone(UTC):%Y-%m-%d-%H%M}"


@flow(name=FLOW_NAME, flow_run_name=rerun_name)
def scheduled_rerun(
    project_dir: str = ".",
    targets: list[str] | None = None,
    branch: str | None = None,
    worktree: str = DEFAULT_WORKTREE,
    push: bool = True,
) -> dict[str, Any] | State:
    """`dvc repro` of `branch`'s latest commit in its own worktree, one at a time; report it.

    `branch` None means the branch checked out in `project_dir`; `worktree` is relative to it.
    A run that finds the worktree locked by another ends at once in the state `Skipped`. The run
    gets its `dvc repro`'s `repro:` tag, which its stage runs carry too.
    """
    project = check_project_dir(project_dir)
    tree = worktree_path(project, worktree)
    with worktree_lock(tree) as held:
        if not held:
            return skipped_state(tree)
        return rerun_in_worktree(project, tree, branch or current_branch(project), targets, push)


def skipped_state(tree: Path) -> State:
    """The final state of a run that found `tree` locked: Cancelled, named `Skipped`."""
    message = f"{SKIPPED} ({lock_owner(tree)} holds {lock_path(tree)}); this run did nothing"
    run_logger().warning(message)
    return Cancelled(name="Skipped", message=message)


def rerun_in_worktree(
    project: Path, tree: Path, branch: str, targets: list[str] | None, push: bool
) -> dict[str, Any]:
    """Check out `branch` in `tree`, restore, `dvc repro`, push, publish; what ran, and metrics."""
    checkout = checkout_worktree(str(project), branch, str(tree))
    link = link_dvc_cache(str(project), str(tree))
    restore_outputs(str(tree), link.remote)
    outcome = run_dvc_repro(str(tree), targets)
    metrics = read_metrics(str(tree))
    pushed = push_results(str(tree), link.remote) if push else None
    publish_rerun_report(outcome, metrics, str(project), checkout, pushed)
    return {
        "project_dir": str(project),
        "worktree": checkout.path,
        "branch": checkout.branch,
        "commit": checkout.commit,
        "targets": targets,
        **outcome.to_dict(),
        "metrics": metrics,
        "pushed": pushed,
    }


def check_schedule(config: ScheduleConfig) -> ScheduleConfig:
    """`config` when its cron is a valid 5-field expression and its time zone is an IANA name."""
    fix = "write 5 fields: minute hour day-of-month month day-of-week, e.g. '0 3 * * *'"
    if len(config.cron.split()) != 5:
        raise ScheduleError(f"schedule.cron {config.cron!r} does not have 5 fields; {fix}")
    try:
        Cron(config.cron, timezone=config.timezone)
    except ValueError as err:
        raise ScheduleError(f"schedule.cron {config.cron!r} is not valid ({err}); {fix}") from None
    try:
        zoneinfo.ZoneInfo(config.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(
            f"schedule.timezone {config.timezone!r} is not a known time zone; "
            "use an IANA name such as 'UTC' or 'Europe/Berlin'"
        ) from None
    return config


def read_schedule_section(params_path: str | Path) -> ScheduleConfig:
    """Only the `schedule:` section of a params file, type-checked.

    The rest of the file is not validated here: a long-running `serve` must not refuse to start
    over a stage's params, which each scheduled `dvc repro` reads (and checks) afresh.
    """
    path = Path(params_path)
    if not path.is_file():
        raise ConfigError(f"{path} not found; run from the project root or pass --params")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, not {type(raw).__name__}")
    return schedule_section(raw)


def resolve_schedule(
    params_path: str | Path = "params.yaml", cron: str | None = None, timezone: str | None = None
) -> ScheduleConfig:
    """params.yaml's `schedule` section, its cron and time zone overridden by `cron`/`timezone`.

    Without `cron` the params file must exist; with it, a missing file just means default values.
    """
    use_file = cron is None or Path(params_path).is_file()
    base = read_schedule_section(params_path) if use_file else ScheduleConfig()
    return check_schedule(
        dataclasses.replace(base, cron=cron or base.cron, timezone=timezone or base.timezone)
    )


def rerun_parameters(
    config: ScheduleConfig, project_dir: str | Path, targets: list[str] | None
) -> dict[str, Any]:
    """Deployment parameters: absolute project and worktree, the branch (now current if unset)."""
    project = Path(project_dir).resolve()
    parameters: dict[str, Any] = {
        "project_dir": str(project),
        "branch": config.branch or current_branch(project),
        "worktree": str(worktree_path(project, config.worktree)),
        "push": config.push,
    }
    if targets:
        parameters["targets"] = list(targets)
    return parameters


def _description(config: ScheduleConfig, parameters: dict[str, Any]) -> str:
    return (
        f"dvc repro of branch {parameters['branch']!r} in {parameters['worktree']}, "
        f"one at a time, on cron {config.cron!r} ({config.timezone})"
    )


def cron_schedule(config: ScheduleConfig) -> Schedule:
    """The Prefect cron schedule of `config`."""
    return Cron(config.cron, timezone=config.timezone)


def rerun_deployment(
    config: ScheduleConfig,
    project_dir: str | Path = ".",
    targets: list[str] | None = None,
    name: str = DEPLOYMENT_NAME,
) -> RunnerDeployment:
    """The served deployment: the cron schedule, one run at a time (RERUN_CONCURRENCY)."""
    parameters = rerun_parameters(config, project_dir, targets)
    return scheduled_rerun.to_deployment(
        name=name,
        schedule=cron_schedule(config),
        parameters=parameters,
        concurrency_limit=RERUN_CONCURRENCY,
        description=_description(config, parameters),
        tags=[RERUN_TAG],
    )


def serve(
    config: ScheduleConfig,
    project_dir: str | Path = ".",
    targets: list[str] | None = None,
    name: str = DEPLOYMENT_NAME,
) -> None:
    """Register the deployment and run its schedule in this process until interrupted (its runs
    inherit this process's environment and settings: `main` sets RERUN_ENV in both)."""
    serve_deployments(rerun_deployment(config, project_dir, targets, name))


def ensure_process_pool(pool: str) -> None:
    """Create the process work pool `pool` unless it exists."""
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))


def deploy(
    config: ScheduleConfig,
    pool: str,
    project_dir: str | Path = ".",
    targets: list[str] | None = None,
    name: str = DEPLOYMENT_NAME,
) -> UUID:
    """Create or update the deployment on process work pool `pool`; its workers run the schedule.

    The flow code is loaded from this repository (CODE_ROOT), where each worker run starts.
    """
    parameters = rerun_parameters(config, project_dir, targets)
    ensure_process_pool(pool)
    source_flow = scheduled_rerun.from_source(source=str(CODE_ROOT), entrypoint=ENTRYPOINT)
    return source_flow.deploy(
        name=name,
        work_pool_name=pool,
        schedule=cron_schedule(config),
        parameters=parameters,
        description=_description(config, parameters),
        tags=[RERUN_TAG],
        job_variables=RERUN_JOB_VARIABLES,
        concurrency_limit=RERUN_CONCURRENCY,
        print_next_steps=False,
    )


def serve_settings(api_url: str) -> dict[Any, Any]:
    """Prefect settings of the serving process, which its rerun processes inherit: the API and
    the heartbeat of RERUN_ENV (settings it sets win over the environment in a served run)."""
    return {PREFECT_API_URL: api_url, "flows.heartbeat_frequency": HEARTBEAT_S}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m runtime.schedule",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=["serve", "deploy"])
    parser.add_argument("--cron", help="cron expression (default: params.yaml schedule.cron)")
    parser.add_argument("--timezone", help="IANA time zone (default: schedule.timezone)")
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--project-dir", default=".", help="DVC project folder (default .)")
    parser.add_argument("--target", action="append", dest="targets", help="dvc repro target")
    parser.add_argument("--name", default=DEPLOYMENT_NAME, help="deployment name")
    parser.add_argument("--pool", help="process work pool (deploy only)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command line: validate the schedule, point at the local Prefect server, serve or deploy."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "deploy" and not args.pool:
        parser.error("deploy needs --pool NAME (a process work pool; it is created if missing)")
    try:
        config = resolve_schedule(args.params, args.cron, args.timezone)
        check_project_dir(args.project_dir)
        rerun_parameters(config, args.project_dir, args.targets)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    api_url = ensure_api_url()
    os.environ.update(RERUN_ENV, PREFECT_API_URL=api_url)
    with temporary_settings(updates=serve_settings(api_url)):
        if args.command == "serve":
            serve(config, args.project_dir, args.targets, args.name)
            return 0
        deployment_id = deploy(config, args.pool, args.project_dir, args.targets, args.name)
    print(
        f"deployment {FLOW_NAME}/{args.name} ({deployment_id}) on pool {args.pool!r}: "
        f"cron {config.cron!r} {config.timezone}\n"
        f"start a worker: prefect worker start --pool {args.pool}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
