"""The search stage is in DVC's run cache: going back to earlier params restores it, no rerun.

DVC skips its run cache for a stage with a `cache: false` output that is not a metric or plot, so
the search's outputs are declared as metrics and plots. A tiny git+DVC project declares its one
stage's outputs exactly as dvc.yaml declares the search's, with a cheap command in place of the
study, and a real `dvc repro` must restore the first params' outputs without running the command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow

WRITER = """\
import json, pathlib, yaml
p = yaml.safe_load(open("params.yaml"))["p"]
out = {
    "metrics/m/search_front.json": json.dumps({"points": p}),
    "search/m/allocation.json": json.dumps({"allocation": {"bias": p}}),
    "metrics/m/search_front.csv": f"trial,file_bytes,val_error\\n0,{100 * p},0.0{p}\\n",
    "plots/m/pareto.png": f"png {p}",
}
for path, text in out.items():
    pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
    pathlib.Path(path).write_text(text)
with open("runs.log", "a") as log:
    log.write(f"{p}\\n")
"""


def search_outputs() -> dict[str, list]:
    """The search stage's output sections of the project's dvc.yaml, for a model named `m`."""
    stage = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]["search"]["do"]
    sections = {key: stage[key] for key in ("outs", "metrics", "plots") if key in stage}
    return yaml.safe_load(yaml.safe_dump(sections).replace("${key}", "m"))


def _run(cmd: list[str], cwd: Path) -> str:
    env = dict(os.environ, PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    env["DVC_NO_ANALYTICS"] = "1"
    done = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{cmd} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def _project(folder: Path) -> Path:
    """A git+DVC project whose stage `search` writes the search's outputs from params `p`."""
    folder.mkdir()
    (folder / "write.py").write_text(WRITER)
    (folder / "params.yaml").write_text("p: 1\n")
    stage = {"cmd": f"{sys.executable} write.py", "deps": ["write.py"], "params": ["p"]}
    stage.update(search_outputs())
    (folder / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"search": stage}}))
    (folder / ".gitignore").write_text("runs.log\n")
    _run(["git", "init", "-q", "-b", "main"], folder)
    _run(["git", "config", "user.email", "t@example.com"], folder)
    _run(["git", "config", "user.name", "test"], folder)
    _run(["dvc", "init", "-q"], folder)
    _run(["git", "add", "-A"], folder)
    _run(["git", "commit", "-q", "-m", "project"], folder)
    return folder


def test_search_outputs_are_all_restorable():
    sections = search_outputs()
    uncached = [
        path
        for entry in sections.get("outs", [])
        for path, options in (entry.items() if isinstance(entry, dict) else [(entry, {})])
        if options.get("cache") is False
    ]
    assert uncached == [], "a cache: false out keeps the whole stage out of DVC's run cache"


def test_returning_to_earlier_params_restores_the_search_without_running_it(tmp_path):
    project = _project(tmp_path / "project")
    _run(["dvc", "repro"], project)
    first = (project / "search/m/allocation.json").read_text()
    (project / "params.yaml").write_text("p: 2\n")
    _run(["dvc", "repro"], project)
    assert (project / "search/m/allocation.json").read_text() != first
    (project / "params.yaml").write_text("p: 1\n")
    output = _run(["dvc", "repro"], project)
    assert "Stage 'search' is cached - skipping run" in output
    assert (project / "runs.log").read_text().split() == ["1", "2"], "the search ran again"
    assert (project / "search/m/allocation.json").read_text() == first
    assert (project / "metrics/m/search_front.csv").read_text().endswith("0.01\n")
