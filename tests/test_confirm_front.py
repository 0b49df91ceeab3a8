"""benchmarks.confirm_front: each trial's scratch root runs the real stages, never evaluate."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from benchmarks.confirm_front import STAGES, scratch_root
from deepcompression.config import ConfigError
from deepcompression.search.space import Allocation
from deepcompression.search.study import TrialRecord

REPO = Path(__file__).resolve().parents[1]
MODEL = "lenet_300_100"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with the repository's params, a dense checkpoint and a data folder."""
    folder = tmp_path / "project"
    (folder / "checkpoints" / MODEL).mkdir(parents=True)
    (folder / "checkpoints" / MODEL / "dense.pt").write_bytes(b"dense checkpoint bytes")
    (folder / "data" / "MNIST").mkdir(parents=True)
    shutil.copyfile(REPO / "params.yaml", folder / "params.yaml")
    monkeypatch.chdir(folder)
    return folder


def _record() -> TrialRecord:
    chosen = json.loads((REPO / "search" / MODEL / "allocation.json").read_text())
    allocation = Allocation.from_dict(chosen["allocation"])
    return TrialRecord(number=7, file_bytes=1234, val_error=0.02, allocation=allocation)


def test_scratch_root_holds_the_trial_params_checkpoint_and_data(project: Path) -> None:
    record = _record()
    root = scratch_root(project / "scratch", MODEL, record, [f"models.{MODEL}.prune.iterations=2"])
    params = yaml.safe_load((root / "params.yaml").read_text())["models"][MODEL]
    assert params["allocation"] == "searched"
    assert params["prune"]["iterations"] == 2
    written = json.loads((root / "search" / MODEL / "confirmed.json").read_text())
    assert written["trial"] == 7
    assert Allocation.from_dict(written["allocation"]) == record.allocation
    dense = root / "checkpoints" / MODEL / "dense.pt"
    assert dense.read_bytes() == b"dense checkpoint bytes"
    assert (root / "data" / "MNIST").resolve() == (project / "data" / "MNIST").resolve()


def test_a_second_run_replaces_the_scratch_root(project: Path) -> None:
    first = scratch_root(project / "scratch", MODEL, _record(), [])
    (first / "metrics").mkdir()
    again = scratch_root(project / "scratch", MODEL, _record(), [])
    assert again == first and not (again / "metrics").exists()


def test_a_bad_override_fails_before_any_stage(project: Path) -> None:
    with pytest.raises(ConfigError, match="iterations"):
        scratch_root(project / "scratch", MODEL, _record(), [f"models.{MODEL}.prune.iterations=0"])


def test_the_test_split_is_never_read() -> None:
    assert STAGES == ("prune", "quantize", "encode")
