"""What the local server gets once it answers: the zombie-run automation and the catch-up.

- Zombie runs: stage processes send flow-run heartbeats (every 30 s); an automation on the
  project's server marks a run Crashed when its heartbeats stop (a stage killed with kill -9).
- Catch-up: a stage that lost the API kept what it could not record in .prefect/pending/
  (runtime/monitor.py); `replay_pending` sets the stale run's final state, creates its missing
  artifacts and logs, then deletes the record.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.actions import ArtifactCreate, ArtifactUpdate, LogCreate
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import State

from runtime.monitor import PendingRecord, pending_dir

ZOMBIE_AUTOMATION = "deepcompression: crash flow runs whose heartbeats stopped"
ZOMBIE_WITHIN = timedelta(seconds=90)
FINAL_EVENTS = ("Completed", "Failed", "Cancelled", "Crashed")
OUTAGE_MESSAGE = "finished while the Prefect API was unreachable"
ENDED_MESSAGE = "the stage process ended while the Prefect API was unreachable"

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
    """Prefect's zombie-run automation: no heartbeat nor final state `within` -> Crashed."""
    trigger = EventTrigger(
        after={"prefect.flow-run.heartbeat"},
        expect={"prefect.flow-run.heartbeat", *(f"prefect.flow-run.{s}" for s in FINAL_EVENTS)},
        match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
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
        description="Marks a flow run Crashed when its heartbeats stop (e.g. kill -9).",
        trigger=trigger,
        actions=[action],
    )


def _same(existing: AutomationCore, wanted: AutomationCore) -> bool:
    """True when an automation already has the wanted trigger and actions."""
    keep = {"trigger", "actions"}
    return existing.model_dump(mode="json", include=keep) == wanted.model_dump(
        mode="json", include=keep
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
    lines = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    for start in range(0, len(lines), 200):
        client.create_logs([LogCreate(**entry) for entry in lines[start : start + 200]])


def _outage_note(client: SyncPrefectClient, record: PendingRecord) -> None:
    """A markdown artifact on the run: when the API went away and what ran unrecorded."""
    tasks = "".join(f"\n- {name}" for name in record.unrecorded_tasks) or " none"
    markdown = (
        f"# Recorded after a Prefect API outage\n\nThe API became unreachable at {record.since} "
        f"({record.reason}); the stage kept computing.\n\nTask runs without a record:{tasks}\n"
    )
    client.create_artifact(
        ArtifactCreate(
            type="markdown",
            data=markdown,
            description="what the run could not record while the API was away",
            flow_run_id=UUID(record.flow_run_id),
        )
    )


def replay_record(client: SyncPrefectClient, record: PendingRecord, folder: Path) -> None:
    """Catch one pending record up on the server, then delete its files."""
    _final_state(client, record)
    _task_states(client, record)
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
