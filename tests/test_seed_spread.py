"""benchmarks.seed_spread: each seed's scratch root holds the seed, the committed choice and the
data; the spread line reports min, max, mean and deviation."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import yaml

from benchmarks.seed_spread import STAGES, scratch_root, spread

REPO = Path(__file__).resolve().parents[1]
MODEL = "lenet_300_100"


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with the repository's params, a confirmed choice and a data folder."""
    folder = tmp_path / "project"
    (folder / "search" / MODEL).mkdir(parents=True)
    (folder / "search" / MODEL / "confirmed.json").write_text(json.dumps({"trial": 3}))
    (folder / "data" / "MNIST").mkdir(parents=True)
    shutil.copyfile(REPO / "params.yaml", folder / "params.yaml")
    monkeypatch.chdir(folder)
    return folder


def test_a_seed_root_holds_the_seed_the_committed_choice_and_the_data(project: Path) -> None:
    root = scratch_root(project / "scratch", MODEL, 2)
    raw = yaml.safe_load((root / "params.yaml").read_text())
    assert raw["run"]["seed"] == 2
    assert raw["models"] == yaml.safe_load((project / "params.yaml").read_text())["models"]
    assert json.loads((root / "search" / MODEL / "confirmed.json").read_text()) == {"trial": 3}
    assert (root / "data" / "MNIST").resolve() == (project / "data" / "MNIST").resolve()
    assert not (root / "checkpoints").exists(), "each seed trains its own dense model"
    assert STAGES[0] == "train" and STAGES[-1] == "evaluate"


def test_a_model_with_params_tables_gets_no_confirmed_file(project: Path) -> None:
    root = scratch_root(project / "scratch", "lenet5", 1)
    assert not (root / "search").exists()


def test_the_spread_line_gives_range_mean_and_deviation() -> None:
    rows = [{"val_error": 0.007}, {"val_error": 0.008}, {"val_error": 0.009}]
    assert spread(rows, "val_error") == "0.70% - 0.90% (mean 0.80%, sd 0.10)"
    assert spread([{"file_ratio": 200.0}], "file_ratio") == "200.00 - 200.00 (mean 200.00, sd 0.00)"


def test_a_failed_seed_is_reported_by_its_error_line(tmp_path: Path) -> None:
    from benchmarks.seed_spread import failure

    log = tmp_path / "run.log"
    log.write_text("INFO training\nerror: train@lenet5: training lenet5 diverged in epoch 1\n")
    assert failure(log) == "train@lenet5: training lenet5 diverged in epoch 1"
    log.write_text("Traceback\n")
    assert failure(log) == f"see {log}"
