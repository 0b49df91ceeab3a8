"""The confirm stage: the search's pick, then the front's larger files, run at full length until
a file meets the validation target; what it keeps feeds prune, quantize and encode."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from test_sensitivity import MODEL, small_workspace

import flows.confirm
from deepcompression.search.confirm import Candidate, Confirmation, candidates, keep
from deepcompression.search.space import Allocation, LayerAllocation
from deepcompression.search.study import TrialRecord
from flows.allocation import allocation_path, confirmed_path, read_allocation

LAYERS = ("fc1", "fc2", "fc3")


def allocation(density: float, bits: int) -> Allocation:
    """The same density and bits for every layer of LeNet-300-100, all units kept."""
    return Allocation(
        {layer: LayerAllocation(density, 1.0, bits, None) for layer in LAYERS}, "float32"
    )


def record(number: int, file_bytes: int, val_error: float) -> TrialRecord:
    return TrialRecord(number, file_bytes, val_error, allocation(0.01 * (number + 1), 4))


def row(trial: int, val_error: float, file_bytes: int = 1000) -> Confirmation:
    return Confirmation(trial, 900, 0.5, file_bytes, val_error, val_error)


def test_candidates_start_at_the_pick_and_go_up_in_bytes():
    front = [record(3, 900, 0.05), record(1, 500, 0.09), record(7, 700, 0.07), record(2, 300, 0.2)]
    chosen = front[2]
    assert [c.trial for c in candidates(front, chosen)] == [7, 3]
    assert [c.trial for c in candidates(front, front[3])] == [2, 1, 7, 3]
    assert candidates(front, front[0])[0].allocation == front[0].allocation


def test_todays_tables_are_a_candidate_even_off_the_front_but_never_before_the_pick():
    front = [record(3, 900, 0.05), record(1, 500, 0.09), record(7, 700, 0.07)]
    tables = record(0, 800, 0.08)
    assert [c.trial for c in candidates(front, front[1], tables)] == [1, 7, 0, 3]
    assert [c.trial for c in candidates(front, front[2], front[2])] == [7, 3]
    assert [c.trial for c in candidates(front, front[0], record(0, 600, 0.1))] == [3]
    assert [c.trial for c in candidates(front, front[1], front[0])] == [1, 7, 3]


def test_keep_takes_the_first_row_that_meets_the_target_else_the_lowest_error():
    rows = [row(1, 0.02), row(2, 0.015), row(3, 0.012)]
    assert keep(rows, 0.016) == (rows[1], True)
    assert keep(rows, 0.02) == (rows[0], True)
    assert keep(rows, 0.01) == (rows[2], False)
    with pytest.raises(ValueError, match="front is empty"):
        keep([], 0.01)


def test_a_candidate_survives_its_json_form():
    c = Candidate(4, 1234, 0.0125, allocation(0.05, 3))
    assert Candidate.from_dict(json.loads(json.dumps(c.to_dict()))) == c


@pytest.fixture
def searched_root(tmp_path, mnist_root) -> tuple[Path, Path]:
    """A small workspace whose search record lists three candidates (dense checkpoint untrained)."""
    params = small_workspace(tmp_path, mnist_root)
    raw = yaml.safe_load(params.read_text())
    section = raw["models"][MODEL]
    section["prune"].update(iterations=1)
    section["prune"]["retrain"]["epochs"] = 1
    section["quantize"]["finetune"]["epochs"] = 1
    section["confirm"] = {"target_error": 0.5, "max_points": 3}
    params.write_text(yaml.safe_dump(raw))
    front = [record(5, 400, 0.3), record(8, 600, 0.2), record(9, 800, 0.1)]
    search = {
        "model": MODEL,
        "study": "s",
        "trial": 5,
        "allocation": front[0].allocation.to_dict(),
        "candidates": [c.to_dict() for c in candidates(front, front[0])],
    }
    path = allocation_path(tmp_path, MODEL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(search))
    return tmp_path, params


def _scripted(errors: dict[int, float], calls: list[int], fail_on: int | None = None):
    def confirm_candidate(params_path, workspace, data, candidate):
        if candidate.trial == fail_on:
            raise RuntimeError("killed")
        calls.append(candidate.trial)
        return Confirmation(
            candidate.trial, candidate.file_bytes, candidate.val_error,
            candidate.file_bytes + 10, errors[candidate.trial], errors[candidate.trial],
        )  # fmt: skip

    return confirm_candidate


def _set_target(params: Path, target: float, max_points: int = 3) -> None:
    raw = yaml.safe_load(params.read_text())
    raw["models"][MODEL]["confirm"] = {"target_error": target, "max_points": max_points}
    params.write_text(yaml.safe_dump(raw))


def test_the_stage_moves_along_the_front_until_the_target_holds(searched_root, monkeypatch):
    root, params = searched_root
    calls: list[int] = []
    errors = {5: 0.02, 8: 0.015, 9: 0.01}
    monkeypatch.setattr(flows.confirm, "confirm_candidate", _scripted(errors, calls))
    _set_target(params, 0.016)
    flows.confirm.confirm_flow.fn(str(params), str(root), MODEL)
    kept = json.loads(confirmed_path(root, MODEL).read_text())
    assert calls == [5, 8], "stops at the first file that meets the target"
    assert (kept["trial"], kept["meets_target"], kept["val_error"]) == (8, True, 0.015)
    assert [r["trial"] for r in kept["tried"]] == [5, 8]
    assert read_allocation(root, MODEL) == record(8, 0, 0).allocation


def test_when_no_point_meets_the_target_the_lowest_error_is_kept_and_flagged(
    searched_root, monkeypatch
):
    root, params = searched_root
    calls: list[int] = []
    errors = {5: 0.03, 8: 0.025, 9: 0.028}
    monkeypatch.setattr(flows.confirm, "confirm_candidate", _scripted(errors, calls))
    _set_target(params, 0.01, max_points=3)
    flows.confirm.confirm_flow.fn(str(params), str(root), MODEL)
    kept = json.loads(confirmed_path(root, MODEL).read_text())
    assert calls == [5, 8, 9]
    assert (kept["trial"], kept["meets_target"]) == (8, False)
    _set_target(params, 0.01, max_points=2)
    calls.clear()
    flows.confirm.confirm_flow.fn(str(params), str(root), MODEL)
    assert calls == [5, 8], "max_points bounds the runs"


def test_a_killed_confirmation_resumes_after_its_finished_candidates(searched_root, monkeypatch):
    root, params = searched_root
    errors = {5: 0.03, 8: 0.025, 9: 0.005}
    _set_target(params, 0.01)
    first: list[int] = []
    monkeypatch.setattr(flows.confirm, "confirm_candidate", _scripted(errors, first, fail_on=9))
    with pytest.raises(RuntimeError, match="killed"):
        flows.confirm.confirm_flow.fn(str(params), str(root), MODEL)
    assert first == [5, 8] and not confirmed_path(root, MODEL).exists()
    second: list[int] = []
    monkeypatch.setattr(flows.confirm, "confirm_candidate", _scripted(errors, second))
    flows.confirm.confirm_flow.fn(str(params), str(root), MODEL)
    assert second == [9], "the two finished candidates are not run again"
    assert json.loads(confirmed_path(root, MODEL).read_text())["trial"] == 9


@pytest.mark.slow
def test_the_real_chain_confirms_and_prune_then_uses_the_kept_allocation(searched_root):
    from flows.prune import prune_flow

    root, params = searched_root
    _set_target(params, 1.0)
    kept = flows.confirm.confirm_flow.fn(str(params), str(root), MODEL)
    assert kept["trial"] == 5 and kept["meets_target"] and len(kept["tried"]) == 1
    assert kept["file_bytes"] > 0 and 0.0 <= kept["val_error"] <= 1.0
    assert not (root / "runs" / MODEL / "confirm").exists(), "scratch roots are removed"
    prune_flow.fn(str(params), str(root), MODEL)
    metrics = json.loads((root / "metrics" / MODEL / "prune.json").read_text())
    assert kept["pruned_val_error"] == metrics["val_error"], "the same computation, same result"
    for layer, choice in read_allocation(root, MODEL).layers.items():
        assert metrics["layers"][layer]["density"] == pytest.approx(choice.density, abs=1e-3)


def test_with_allocation_params_the_stage_writes_why_it_did_nothing(tmp_path):
    raw = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    raw["models"][MODEL]["allocation"] = "params"
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    record = flows.confirm.confirm_flow.fn(str(params), str(tmp_path), MODEL)
    assert "allocation is 'params'" in record["skipped"]
    assert json.loads(confirmed_path(tmp_path, MODEL).read_text()) == record
