"""dvc.yaml lists, for each stage, exactly the project code its flow imports (so edits rerun it).

The import closure of each stage's flow module is measured in a fresh interpreter and compared
with the stage's code deps; a failure names the files to add to or remove from dvc.yaml.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
CODE_DIRS = ("deepcompression", "models", "tasks", "flows")
STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]

PROBE = """
import importlib, json, sys
from pathlib import Path
importlib.import_module(sys.argv[1])
root = Path.cwd().resolve()
files = set()
for module in list(sys.modules.values()):
    path = getattr(module, "__file__", None)
    if path:
        try:
            files.add(str(Path(path).resolve().relative_to(root)))
        except ValueError:
            pass
print(json.dumps(sorted(files)))
"""


def imported_code(modules: list[str]) -> dict[str, set[str]]:
    """Per module: project source files (no __init__.py) loaded by importing it in a fresh
    interpreter; the interpreters run in parallel."""
    probes = {
        m: subprocess.Popen(
            [sys.executable, "-c", PROBE, m], cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        for m in modules
    }
    result = {}
    for module, probe in probes.items():
        out, _ = probe.communicate(timeout=300)
        assert probe.returncode == 0, f"importing {module} failed"
        result[module] = {
            f
            for f in json.loads(out)
            if f.split("/")[0] in CODE_DIRS and not f.endswith("__init__.py")
        }
    return result


@pytest.fixture(scope="module")
def closures() -> dict[str, set[str]]:
    """Import closure of every stage's flow module."""
    return imported_code([f"flows.{stage}" for stage in STAGES])


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_its_import_closure(stage, closures):
    listed = {d for d in STAGES[stage]["deps"] if d.endswith(".py")}
    actual = closures[f"flows.{stage}"]
    assert not actual - listed, f"add to dvc.yaml stage {stage!r} deps: {sorted(actual - listed)}"
    assert not listed - actual, f"remove from stage {stage!r} deps: {sorted(listed - actual)}"
