"""What the local server gets once it answers: the zombie-run automation and the catch-up.

- Zombie runs: every flow run the project starts (stage runs, tagged `stage:<name>`, and scheduled
  reruns, tagged `scheduled-rerun`) sends a heartbeat every HEARTBEAT_S seconds; an automation on
  the project's server marks such a run Crashed when three heartbeats in a row are missing (a
  stage killed with kill -9). Other flow runs on the server (Prefect's default heartbeat is 180 s)
  are left alone.
- Catch-up: a stage that lost the API (or had one API call fail while the server answered) kept
  what it could not record in .prefect/pending/ (runtime/monitor.py); `replay_pending` sets the
  stale run's final state and those of its task runs (one whose engine failed before its body is
  left Pending by the engine), creates its missing artifacts and logs, then deletes the record.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate, LogCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    TaskRunFilter,
    TaskRunFilterState,
    TaskRunFilterStateType,
)
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import State

from runtime.monitor import HEARTBEAT_S, STUCK_FINISH, PendingRecord, pending_dir

ZOMBIE_AUTOMATION = "deepcompression: crash flow runs whose heartbeats stopped"
ZOMBIE_WITHIN = timedelta(seconds=3 * HEARTBEAT_S)
WATCHED_TAGS = ("stage:*", "scheduled-rerun")
"""Tags of the flow runs the project starts with HEARTBEAT_S heartbeats (a trailing * matches any
rest): stage runs (flows/run.py) and scheduled reruns (runtime/schedule.py's deployment)."""
FINAL_EVENTS = ("Completed", "Failed", "Cancelled", "Crashed")
OUTAGE_MESSAGE = "finished while the Prefect API was unreachable"
ENDED_MESSAGE = "the stage process ended while the Prefect API was unreachable"
STRANDED_MESSAGE = "its engine failed talking to the Prefect API before the task ran; it ran anyway"
UNFINISHED = [StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING]

logger = logging.getLogger("deepcompression.recovery")


@contextmanager
def api_client(api_url: str) -> Iterator[SyncPrefectClient]:
    """A sync Prefect client for `api_url`."""
    with (
        temporary_settings(updates={PREFECT_API_URL: api_url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def zombie_automation(
    within: timedelta = ZOMBIE_WITHIN, name: str = ZOMBIE_AUTOMATION
) -> AutomationCore:
    """Prefect's zombie-run automation for the project's flow runs (WATCHED_TAGS): no heartbeat
    nor final state `within` -> Crashed."""
    tags = ResourceSpecification(
        {
            "prefect.resource.role": "tag",
            "prefect.resource.id": [f"prefect.tag.{tag}" for tag in WATCHED_TAGS],
        }
    )
    trigger = EventTrigger(
        after={"prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in FINAL_EVENTS)},
        match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
        match_related=tags,
        for_each={"prefect.resource.id"},
        posture=Posture.Proactive,
        threshold=1,
        within=within,
    )
    action = ChangeFlowRunState(
        state=StateType.CRASHED,
        message=f"no heartbeat for {within.total_seconds():.0f} s: the flow run's process died",
    )
    return AutomationCore(
        name=name,
        description="Marks a stage run or scheduled rerun Crashed when its heartbeats stop "
        "(e.g. kill -9).",
        trigger=trigger,
        actions=[action],
    )


def _canonical(value: object) -> object:
    """`value` (JSON data) with every list sorted: sets dump as lists in hash-seed order."""
    if isinstance(value, dict):
        return {key: _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        items = [_canonical(item) for item in value]
        return sorted(items, key=lambda item: json.dumps(item, sort_keys=True))
    return value


def _same(existing: AutomationCore, wanted: AutomationCore) -> bool:
    """True when an automation already has the wanted trigger and actions, whatever the order in
    which its sets were stored (or this process's PYTHONHASHSEED)."""
    keep = {"trigger", "actions"}
    return _canonical(existing.model_dump(mode="json", include=keep)) == _canonical(
        wanted.model_dump(mode="json", include=keep)
    )


def ensure_zombie_automation(
    api_url: str, within: timedelta = ZOMBIE_WITHIN, name: str = ZOMBIE_AUTOMATION
) -> UUID:
    """Create the zombie-run automation unless one of that name matches; returns its id."""
    wanted = zombie_automation(within, name)
    with api_client(api_url) as client:
        existing = client.read_automations_by_name(name)
        for automation in existing:
            if _same(automation, wanted):
                return automation.id
        for automation in existing:
            client.delete_automation(automation.id)
        return client.create_automation(wanted)


def _owner_alive(record: PendingRecord) -> bool:
    """True while another live process (the one offline) may still add to the record."""
    if record.pid == os.getpid():
        return False
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _final_state(client: SyncPrefectClient, record: PendingRecord) -> None:
    """Set the run's recorded final state, or Crashed when its process ended unfinished."""
    current = client.read_flow_run(UUID(record.flow_run_id)).state
    if record.state is None:
        if current is not None and current.is_final():
            return
        state = State(type=StateType.CRASHED, message=ENDED_MESSAGE)
    else:
        message = OUTAGE_MESSAGE + (f": {record.message}" if record.message else "")
        state = State(type=StateType(record.state), message=message)
    client.set_flow_run_state(record.flow_run_id, state, force=True)


def _not_found(err: Exception) -> bool:
    """True for the API's 'no such run' answer."""
    if isinstance(err, ObjectNotFound):
        return True
    return isinstance(err, PrefectHTTPStatusError) and err.response.status_code == 404


def _task_states(client: SyncPrefectClient, record: PendingRecord) -> None:
    """Final states of task runs whose engine lost the API (unknown runs are skipped)."""
    for task_run_id, state in record.task_runs.items():
        try:
            client.set_task_run_state(
                UUID(task_run_id), State(type=StateType(state), message=OUTAGE_MESSAGE), force=True
            )
        except (ObjectNotFound, PrefectHTTPStatusError) as err:
            if _not_found(err):
                continue
            raise


def _stranded_tasks(client: SyncPrefectClient, record: PendingRecord) -> None:
    """Final states of the run's unfinished task runs that the record names as stranded (by run
    name, or the engine's first name for them, `<task>-<dynamic key>`)."""
    if not record.stranded_tasks:
        return
    unfinished = client.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[UUID(record.flow_run_id)])),
        task_run_filter=TaskRunFilter(
            state=TaskRunFilterState(type=TaskRunFilterStateType(any_=UNFINISHED))
        ),
    )
    for stranded in record.stranded_tasks:
        named = re.compile(rf"{re.escape(stranded['task'])}(-\w+)?")
        for task_run in unfinished:
            if task_run.name == stranded["run"] or named.fullmatch(task_run.name):
                state = State(type=StateType(stranded["state"]), message=STRANDED_MESSAGE)
                client.set_task_run_state(task_run.id, state, force=True)
                unfinished.remove(task_run)
                break


def _artifacts(client: SyncPrefectClient, record: PendingRecord) -> None:
    """Create the kept markdown/table artifacts and the latest progress values."""
    for kept in record.artifacts:
        client.create_artifact(
            ArtifactCreate(
                key=kept.get("key"),
                type=kept["kind"],
                data=kept["data"],
                description=kept.get("description"),
                flow_run_id=UUID(record.flow_run_id),
                task_run_id=UUID(kept["task_run_id"]) if kept.get("task_run_id") else None,
            )
        )
    for artifact_id, progress in record.progress.items():
        client.update_artifact(UUID(artifact_id), ArtifactUpdate(data=progress))


def _logs(client: SyncPrefectClient, record: PendingRecord, folder: Path) -> None:
    """Send the kept API logs in batches."""
    path = record.logs_path(folder)
    if not path.exists():
        return
    kept = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    lines = [entry for entry in kept if not str(entry.get("message")).startswith(STUCK_FINISH)]
    for start in range(0, len(lines), 200):
        client.create_logs([LogCreate(**entry) for entry in lines[start : start + 200]])


def _outage_note(client: SyncPrefectClient, record: PendingRecord) -> None:
    """A markdown artifact on the run: what happened to the API (an outage, or a failed call
    while it answered) and what ran unrecorded."""
    tasks = "".join(f"\n- {name}" for name in record.unrecorded_tasks) or " none"
    stranded = "".join(f"\n- {t['run']}: {t['state']}" for t in record.stranded_tasks)
    if record.offline:
        title = "Recorded after a Prefect API outage"
        what = f"The API became unreachable at {record.since} ({record.reason})"
    else:
        title = "Recorded after a failed Prefect API call"
        what = f"An API call failed at {record.since} ({record.reason}) while the API answered"
    markdown = (
        f"# {title}\n\n{what}; the stage kept computing.\n\nTask runs without a record:{tasks}\n"
    )
    if stranded:
        markdown += f"\nTask runs whose engine failed before they ran, finished here:{stranded}\n"
    client.create_artifact(
        ArtifactCreate(
            type="markdown",
            data=markdown,
            description="what the run could not record while the API failed",
            flow_run_id=UUID(record.flow_run_id),
        )
    )


def replay_record(client: SyncPrefectClient, record: PendingRecord, folder: Path) -> None:
    """Catch one pending record up on the server, then delete its files."""
    _final_state(client, record)
    _task_states(client, record)
    _stranded_tasks(client, record)
    _artifacts(client, record)
    _logs(client, record, folder)
    _outage_note(client, record)
    record.logs_path(folder).unlink(missing_ok=True)
    record.path(folder).unlink(missing_ok=True)


def _records(api_url: str, folder: Path) -> list[PendingRecord]:
    """Pending records of this API whose writing process is done."""
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = PendingRecord.load(path)
        except (OSError, ValueError, TypeError):
            logger.warning("skipping unreadable pending record %s", path)
            continue
        if record.api_url.rstrip("/") == api_url.rstrip("/") and not _owner_alive(record):
            found.append(record)
    return found


def replay_pending(api_url: str, folder: Path | None = None) -> list[str]:
    """Replay every finished pending record of `api_url`; returns the flow run ids caught up."""
    folder = folder or pending_dir()
    done: list[str] = []
    records = _records(api_url, folder)
    if not records:
        return done
    with api_client(api_url) as client:
        for record in records:
            try:
                replay_record(client, record, folder)
            except (ObjectNotFound, PrefectHTTPStatusError) as err:
                if not _not_found(err):
                    raise
                logger.warning("flow run %s not on %s: record dropped", record.flow_run_id, api_url)
                record.path(folder).unlink(missing_ok=True)
                record.logs_path(folder).unlink(missing_ok=True)
                continue
            done.append(record.flow_run_id)
    return done


def describe_replayed(ids: list[str]) -> str:
    """A line for the terminal."""
    runs = ", ".join(ids)
    return f"caught up {len(ids)} flow run(s) that ran while the API was unreachable: {runs}"
