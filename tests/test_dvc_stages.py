"""dvc.yaml lists, for each stage, exactly the project code its flow imports (so edits rerun it).

The import closure of each stage's flow module is measured by a clean import
(tests/stage_probe.py) and compared with the stage's code deps; a failure names the files to add
to or remove from dvc.yaml.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from stage_probe import session_probes

pytestmark = pytest.mark.long(10)

ROOT = Path(__file__).parents[1]
CODE_DIRS = ("deepcompression", "models", "tasks", "flows")
RAW_STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
STAGES = {name: stage.get("do", stage) for name, stage in RAW_STAGES.items()}
"""Each stage's definition; per-model stages are a `foreach` over params.yaml's models."""
LOADED_BY_PINNING = "deepcompression/onednn_linear.py"
"""Loaded by numerics' `pin_torch` (after torch, so not at import): every stage whose code imports
deepcompression/numerics.py runs its linear layers through it."""
PER_MODEL = (
    "train", "prune", "quantize", "encode", "evaluate", "plots", "sensitivity", "search", "confirm",
)  # fmt: skip


@pytest.fixture(scope="module")
def closures(tmp_path_factory, worker_id) -> dict[str, set[str]]:
    """Import closure of every stage's flow module: the project files a clean import loads."""
    probes = session_probes(tmp_path_factory, worker_id)
    return {
        f"flows.{stage}": {
            f
            for f in probes[f"flows.{stage}"]["files"]
            if f.split("/")[0] in CODE_DIRS and not f.endswith("__init__.py")
        }
        for stage in STAGES
    }


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_its_import_closure(stage, closures):
    """Every stage's code deps equal its flow module's import closure."""
    listed = {d for d in STAGES[stage]["deps"] if d.endswith(".py")}
    actual = set(closures[f"flows.{stage}"])
    if "deepcompression/numerics.py" in actual:
        actual.add(LOADED_BY_PINNING)
    assert not actual - listed, f"add to dvc.yaml stage {stage!r} deps: {sorted(actual - listed)}"
    assert not listed - actual, f"remove from stage {stage!r} deps: {sorted(listed - actual)}"


def test_every_model_stage_is_a_foreach_over_the_models_of_params():
    """Both rows of Table 1 come from one `dvc repro`: each per-model stage loops over `models`."""
    for name in PER_MODEL:
        assert RAW_STAGES[name]["foreach"] == "${models}", name
        cmd = RAW_STAGES[name]["do"]["cmd"]
        assert cmd == f"python -m flows.run {name} --model ${{key}}", cmd


def test_the_params_check_runs_before_every_stage():
    """`check` is upstream of every other stage, so a bad params.yaml fails before any output
    is removed; its output is a constant marker (no forced reruns)."""
    assert STAGES["check"]["outs"] == ["checks/params.ok", "checks/inputs"]
    for name, stage in STAGES.items():
        if name != "check":
            assert "checks/params.ok" in stage["deps"], name


def test_model_params_are_per_model_and_only_evaluate_sees_the_test_limit():
    """A change to one model's section reruns that model's stages only; test knobs reach only
    the stage that reads the test set."""
    for name in PER_MODEL:
        keys = [k if isinstance(k, str) else next(iter(k)) for k in STAGES[name]["params"]]
        if name != "evaluate":  # evaluate measures files; its params are run and data only
            assert any(k.startswith("models.${key}") for k in keys), name
        assert not any(k.startswith("models.") and "${key}" not in k for k in keys), name
        reads_test = any(k in ("data", "data.test_limit") for k in keys)
        assert reads_test == (name == "evaluate"), name


def test_dvc_expands_both_models(tmp_path):
    """`dvc stage list` sees every stage for both models of params.yaml."""
    result = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "stage", "list", "--name-only"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    names = set(result.stdout.split())
    models = yaml.safe_load((ROOT / "params.yaml").read_text())["models"]
    assert set(models) == {"lenet_300_100", "lenet5"}
    for model in models:
        for name in PER_MODEL:
            assert f"{name}@{model}" in names


def test_every_lock_entry_is_a_stage_of_dvc_yaml():
    """dvc.lock holds no entry of a removed stage layout (a foreach stage only as NAME@MODEL)."""
    lock = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    models = yaml.safe_load((ROOT / "params.yaml").read_text())["models"]
    expected = {name for name, stage in RAW_STAGES.items() if "foreach" not in stage}
    expected |= {f"{name}@{m}" for name, s in RAW_STAGES.items() if "foreach" in s for m in models}
    assert set(lock) <= expected, f"stale dvc.lock entries: {sorted(set(lock) - expected)}"


def test_no_stage_depends_on_the_runtime():
    """Monitoring, the server, the warm runner and schedules never change an output (the bytes
    with the server up, down or absent: tests/test_reproducible.py; warm or cold:
    tests/test_warm.py), so no stage lists runtime/ code: a fix there reruns nothing."""
    for name, stage in STAGES.items():
        assert not [d for d in stage["deps"] if d.startswith("runtime/")], name
