"""Scheduled reruns: a deployment that runs `dvc repro` on a cron schedule and reports what changed.

`dvc repro` reruns only the stages whose code, data or params changed, so a scheduled run with
nothing new trains nothing (`stages_run: []`). The cron comes from the `schedule:` section of
params.yaml (default "0 3 * * *" UTC) unless `--cron` / `--timezone` override it.

Usage (from the repository root):
  python -m flows.schedule serve [--cron CRON] [--timezone TZ]   # this process runs the schedule
  python -m flows.schedule deploy --pool POOL [--cron CRON]      # a process pool's workers do
For work pools there is also prefect.yaml (`prefect deploy --all`); start a worker with
`prefect worker start --pool POOL`. Runs are recorded on the project's local Prefect server.
"""

from __future__ import annotations

import argparse
import os
import sys
import zoneinfo
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectNotFound
from prefect.schedules import Cron, Schedule
from prefect.settings import PREFECT_API_URL, temporary_settings

from deepcompression.config import ConfigError, ScheduleConfig, from_dict
from flows.server import ensure_api_url
from tasks.schedule import check_project_dir, publish_rerun_report, read_metrics, run_dvc_repro

CODE_ROOT = Path(__file__).resolve().parents[1]
"""The repository holding this flow's code (a worker's flow run starts here)."""

ENTRYPOINT = "flows/schedule.py:scheduled_rerun"
DEPLOYMENT_NAME = "nightly"
FLOW_NAME = "scheduled-rerun"


class ScheduleError(ValueError):
    """The cron expression or time zone of the rerun schedule is not valid."""


@flow(name=FLOW_NAME)
def scheduled_rerun(project_dir: str = ".", targets: list[str] | None = None) -> dict[str, Any]:
    """`dvc repro [targets]` in `project_dir`, then publish its metrics and which stages reran."""
    project = check_project_dir(project_dir)
    outcome = run_dvc_repro(str(project), targets)
    metrics = read_metrics(str(project))
    publish_rerun_report(outcome, metrics, str(project))
    return {
        "project_dir": str(project),
        "targets": targets,
        **outcome.to_dict(),
        "metrics": metrics,
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
    """Only the `schedule:` section of a params file (defaults when absent), type-checked.

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
    return from_dict(ScheduleConfig, raw.get("schedule") or {}, "schedule")


def resolve_schedule(
    params_path: str | Path = "params.yaml", cron: str | None = None, timezone: str | None = None
) -> ScheduleConfig:
    """params.yaml's `schedule` section (defaults when absent), overridden by `cron`/`timezone`.

    Without `cron` the params file must exist; with it, a missing file just means default values.
    """
    use_file = cron is None or Path(params_path).is_file()
    base = read_schedule_section(params_path) if use_file else ScheduleConfig()
    return check_schedule(
        ScheduleConfig(cron=cron or base.cron, timezone=timezone or base.timezone)
    )


def rerun_parameters(project_dir: str | Path, targets: list[str] | None) -> dict[str, Any]:
    """Deployment parameters: the project folder made absolute, and the dvc targets if any."""
    parameters: dict[str, Any] = {"project_dir": str(Path(project_dir).resolve())}
    if targets:
        parameters["targets"] = list(targets)
    return parameters


def cron_schedule(config: ScheduleConfig) -> Schedule:
    """The Prefect cron schedule of `config`."""
    return Cron(config.cron, timezone=config.timezone)


def serve(
    config: ScheduleConfig,
    project_dir: str | Path = ".",
    targets: list[str] | None = None,
    name: str = DEPLOYMENT_NAME,
) -> None:
    """Register the deployment and run its schedule in this process until interrupted."""
    scheduled_rerun.serve(
        name=name,
        schedule=cron_schedule(config),
        parameters=rerun_parameters(project_dir, targets),
        description=f"dvc repro on cron {config.cron!r} ({config.timezone})",
        tags=["scheduled-rerun"],
    )


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
    ensure_process_pool(pool)
    source_flow = scheduled_rerun.from_source(source=str(CODE_ROOT), entrypoint=ENTRYPOINT)
    return source_flow.deploy(
        name=name,
        work_pool_name=pool,
        schedule=cron_schedule(config),
        parameters=rerun_parameters(project_dir, targets),
        description=f"dvc repro on cron {config.cron!r} ({config.timezone})",
        tags=["scheduled-rerun"],
        concurrency_limit=1,
        print_next_steps=False,
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m flows.schedule",
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
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    api_url = ensure_api_url()
    os.environ["PREFECT_API_URL"] = api_url
    with temporary_settings(updates={PREFECT_API_URL: api_url}):
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
