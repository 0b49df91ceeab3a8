"""With `allocation: params` the sensitivity, search and confirm stages do no work: no data, no
dense checkpoint, no training; they write small constant records and figures saying why (DVC needs
every declared output), and the final plots stage draws the same note for the missing front."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

import flows.confirm
import flows.search
import flows.sensitivity
from flows.allocation import allocation_path, confirmed_path
from flows.plots import FINAL_PARETO, write_final_pareto
from flows.skipped import skipped_png
from runtime.workspace import Workspace

ROOT = Path(__file__).parents[1]
MODEL = "lenet5"


def _forbidden(*_args, **_kwargs):
    raise AssertionError("a stage with allocation: params must not load data or train")


@pytest.fixture
def params_root(tmp_path, monkeypatch) -> Path:
    """A root whose params.yaml has `allocation: params` for the model; nothing else is there."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"][MODEL]["allocation"] = "params"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for module, name in (
        (flows.sensitivity, "load_data"),
        (flows.sensitivity, "sensitivity_point"),
        (flows.sensitivity, "dense_error"),
        (flows.search, "search_trial"),
        (flows.search, "open_study"),
    ):
        monkeypatch.setattr(module, name, _forbidden)
    return tmp_path


def _run_both(root: Path) -> Workspace:
    params = str(root / "params.yaml")
    flows.sensitivity.sensitivity_flow.fn(params, str(root), MODEL)
    flows.search.search_flow.fn(params, str(root), MODEL)
    flows.confirm.confirm_flow.fn(params, str(root), MODEL)
    return Workspace(root, MODEL)


def test_sensitivity_and_search_write_why_they_did_nothing(params_root):
    workspace = _run_both(params_root)
    for path in (workspace.metrics("sensitivity"), workspace.metrics("search_front")):
        record = json.loads(path.read_text())
        assert record["model"] == MODEL
        assert f"models.{MODEL}.allocation is 'params'" in record["skipped"]
    for path in (allocation_path(params_root, MODEL), confirmed_path(params_root, MODEL)):
        chosen = json.loads(path.read_text())
        assert "allocation" not in chosen and "skipped" in chosen
    csv = workspace.metrics("search_front").with_suffix(".csv").read_text()
    assert csv == "file_bytes,val_error\n"
    for png in ("sensitivity.png", "pareto.png"):
        assert workspace.plot(png).read_bytes().startswith(b"\x89PNG")
    assert not workspace.checkpoint("dense").exists(), "nothing needed the dense model"


def test_skipped_outputs_are_the_same_bytes_every_run(params_root):
    workspace = _run_both(params_root)
    files = [workspace.metrics("sensitivity"), workspace.plot("pareto.png")]
    first = [p.read_bytes() for p in files]
    _run_both(params_root)
    assert [p.read_bytes() for p in files] == first


def test_the_final_pareto_of_a_skipped_search_is_a_note(params_root):
    workspace = _run_both(params_root)
    workspace.metrics("evaluate").write_text("{}")
    out = write_final_pareto(workspace)
    assert out == workspace.plot(FINAL_PARETO)
    reason = json.loads(workspace.metrics("search_front").read_text())["skipped"]
    assert out.read_bytes() == skipped_png(reason)
