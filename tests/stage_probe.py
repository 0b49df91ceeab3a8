"""What importing a stage's flow module loads: module names and project files, from clean imports.

One fresh interpreter imports what every stage shares (numpy, torch, Prefect), checks that this
loaded no project module, then forks one child per probe (two at a time); each child imports its
modules in order and reports `sys.modules` and the project files loaded. So a probe sees what a
fresh process importing the same modules would, at the cost of one torch and Prefect import for
all probes instead of one each; the modules the preload loaded are reported too (`preloaded`),
so a test that checks a module's absence first checks that the preload did not load it. The
results are computed once per test session (shared by xdist workers through a file lock) and
read by the tests of stage deps (test_dvc_stages), heavy imports (test_stage_imports) and
closures (test_stage_closures).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from filelock import FileLock

ROOT = Path(__file__).parents[1]
CODE_DIRS = ("deepcompression", "models", "tasks", "flows", "runtime", "cli")
"""Top-level packages of the project's own code: the preload must load none of them."""
SHARED = ("numpy", "torch", "prefect")
"""Imported once before the fork: every stage process loads them, and they load no project code."""
AT_ONCE = 2
"""Children importing side by side (the suite's two cores)."""
FORKER = """
import json, os, sys, traceback
from pathlib import Path
shared, code_dirs, probes, AT_ONCE = json.loads(sys.argv[1])
for name in shared:
    __import__(name)
preloaded = sorted(sys.modules)
early = [m for m in preloaded if m.split(".")[0] in code_dirs]
if early:
    sys.exit(f"importing {shared} loaded project modules {early}; drop the preload")
root = Path.cwd().resolve()
def start(modules):
    read, write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(write)
        return pid, read
    os.close(read)
    try:
        for name in modules:
            __import__(name)
        files = set()
        for module in list(sys.modules.values()):
            path = getattr(module, "__file__", None)
            if path:
                try:
                    files.add(str(Path(path).resolve().relative_to(root)))
                except ValueError:
                    pass
        report = {"modules": sorted(sys.modules), "files": sorted(files)}
    except BaseException:
        report = {"error": traceback.format_exc()}
    with os.fdopen(write, "w") as out:
        json.dump(report, out)
    os._exit(0)

def finish(pid, read):
    with os.fdopen(read) as reply:
        result = json.load(reply)
    os.waitpid(pid, 0)
    return result

results = []
for first in range(0, len(probes), AT_ONCE):
    children = [start(modules) for modules in probes[first:first + AT_ONCE]]
    results += [finish(*child) for child in children]
print(json.dumps({"preloaded": preloaded, "results": results}))
"""


def run_probes(probes: list[tuple[str, ...]]) -> tuple[list[str], list[dict[str, list[str]]]]:
    """The modules the preload loaded, and for each tuple of modules {"modules": sys.modules
    names, "files": project files} after a clean import of them in order (module docstring)."""
    done = subprocess.run(
        [sys.executable, "-c", FORKER, json.dumps([SHARED, CODE_DIRS, probes, AT_ONCE])],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    reply = json.loads(done.stdout)
    for modules, result in zip(probes, reply["results"], strict=True):
        assert "error" not in result, f"importing {modules} failed:\n{result.get('error')}"
    return reply["preloaded"], reply["results"]


def all_probes() -> list[tuple[str, ...]]:
    """Each stage's flow module alone, and after flows.run (as `python -m flows.run STAGE`)."""
    import yaml

    stages = sorted(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
    return [(f"flows.{s}",) for s in stages] + [("flows.run", f"flows.{s}") for s in stages]


def session_probes(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> dict:
    """`all_probes()` results keyed by " ".join(modules), and "preloaded": the modules loaded
    before any probe; computed by the first worker to ask and read from a file by the others."""
    base = tmp_path_factory.getbasetemp()
    shared = base if worker_id == "master" else base.parent
    cache = shared / "stage_probes.json"
    with FileLock(str(cache) + ".lock"):
        if not cache.exists():
            probes = all_probes()
            preloaded, results = run_probes(probes)
            keyed = {" ".join(p): r for p, r in zip(probes, results, strict=True)}
            keyed["preloaded"] = preloaded
            cache.write_text(json.dumps(keyed))
        return json.loads(cache.read_text())
