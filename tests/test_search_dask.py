"""The search stage on a real dask.distributed local cluster (2 worker processes) through
prefect-dask's DaskTaskRunner, recorded in the session's Prefect server; then the prune stage
taking its chosen allocation once the confirm stage has kept it."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import yaml
from test_sensitivity import MODEL, small_workspace

from deepcompression.search.space import Allocation
from deepcompression.search.study import TrialRecord, dominates

pytestmark = [pytest.mark.slow, pytest.mark.long(20)]


def _write_sensitivity(root: Path) -> None:
    """A small sensitivity record (the search reads the dense error and the points)."""
    points = [
        {"layer": layer, "axis": axis, "value": value, "val_error": 0.5}
        for layer in ("fc1", "fc2", "fc3")
        for axis, value in (("density", 0.1), ("bits", 4))
    ]
    path = root / "metrics" / MODEL / "sensitivity.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"dense_val_error": 0.5, "points": points}))


_EARLIER: set = set()
"""Ids of trial task runs other test modules left in the session's server before this one."""


def _trial_runs():
    """This module's search trial task runs in the session's Prefect server (other modules' runs,
    in `_EARLIER`, left out), with the flow run each belongs to."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import TaskRunFilter, TaskRunFilterTags

    async def read():
        async with get_client() as client:
            runs = await client.read_task_runs(
                task_run_filter=TaskRunFilter(tags=TaskRunFilterTags(all_=["search"]))
            )
            runs = [r for r in runs if r.id not in _EARLIER]
            flows = {r.flow_run_id: await client.read_flow_run(r.flow_run_id) for r in runs}
            return [(run, flows[run.flow_run_id]) for run in runs]

    return asyncio.run(read())


@pytest.fixture(scope="module")
def searched(tmp_path_factory, mnist_root, prefect_api):
    """Two trials on two Dask worker processes; returns (root, params path, flow run state)."""
    from flows.search import search_flow

    _EARLIER.update(run.id for run, _ in _trial_runs())
    root = tmp_path_factory.mktemp("search")
    params = small_workspace(root, mnist_root, trials=2, workers=2, iterations=1)
    _write_sensitivity(root)
    state = search_flow(str(params), str(root), MODEL, return_state=True)
    return root, params, state


def test_trials_run_on_dask_workers_as_task_runs(searched):
    root, _, state = searched
    assert state.is_completed(), state.message
    runs = _trial_runs()
    assert sorted(run.name for run, _ in runs) == ["trial-0", "trial-1"]
    for run, flow_run in runs:
        assert run.state.is_completed()
        assert any(tag.startswith("fc1:d=") for tag in run.tags)
        assert flow_run.name == f"search-trials-{MODEL}"  # the subflow on the Dask runner
        assert flow_run.parent_task_run_id is not None
    front = json.loads((root / "metrics" / MODEL / "search_front.json").read_text())
    assert front["trials"] == 2
    records = [
        TrialRecord(r["trial"], r["file_bytes"], r["val_error"], Allocation({}))
        for r in front["front"]
    ]
    assert not any(dominates(a, b) for a in records for b in records)
    assert (root / "metrics" / MODEL / "search_front.csv").is_file()
    assert (root / "plots" / MODEL / "pareto.png").read_bytes().startswith(b"\x89PNG")


def test_a_rerun_resumes_the_finished_study_without_new_trials(searched):
    from flows.search import search_flow

    root, params, _ = searched
    state = search_flow(str(params), str(root), MODEL, return_state=True)
    assert state.is_completed(), state.message
    assert len(_trial_runs()) == 2  # the study in runs/<model>/search/ already holds both


def test_the_prune_stage_uses_the_searched_densities(searched):
    from flows.confirm import confirm_flow
    from flows.prune import prune_flow

    root, params, _ = searched
    chosen = json.loads((root / "search" / MODEL / "allocation.json").read_text())
    allocation = Allocation.from_dict(chosen["allocation"])
    raw = yaml.safe_load(params.read_text())
    section = raw["models"][MODEL]
    section["allocation"] = "searched"
    section["prune"].update(iterations=1)
    section["prune"]["retrain"]["epochs"] = 1
    section["quantize"]["finetune"]["epochs"] = 1
    section["confirm"] = {"target_error": 1.0, "max_points": 1}
    params.write_text(yaml.safe_dump(raw))
    confirmed = confirm_flow(str(params), str(root), MODEL)
    assert confirmed["trial"] == chosen["trial"] and confirmed["meets_target"]
    state = prune_flow(str(params), str(root), MODEL, return_state=True)
    assert state.is_completed(), state.message
    metrics = json.loads((root / "metrics" / MODEL / "prune.json").read_text())
    assert all(choice.units == 1.0 for choice in allocation.layers.values())  # both seeds
    for layer, choice in allocation.layers.items():
        assert metrics["layers"][layer]["density"] == pytest.approx(choice.density, abs=1e-3)
