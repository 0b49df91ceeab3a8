"""The warm stage runner (runtime/warm.py, runtime/handoff.py): fast, and never a different result.

A real runner is started in a copy of the project; stages run as `python -m flows.run` does
under DVC, warm and cold (DC_WARM_STAGES=0). Outputs must be byte-identical, the child's runs must
go to the caller's Prefect server (the runner's own environment points elsewhere), exit statuses
and signals must be relayed, a caller that vanishes must take its stage with it, and whenever the
runner is absent, unresponsive, stale or killed the stage must still run (in-process).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from test_numerics import AVX2

from runtime.handoff import SOCKET, Request, hand_off
from runtime.server import warm_answers
from runtime.timing import timing_path
from runtime.warm import (
    BLAS_THREADS_ENV,
    changed_file,
    env_digest,
    file_stamps,
    import_time_env,
    single_threaded_blas,
)

ROOT = Path(__file__).parents[1]
CODE = ("deepcompression", "models", "tasks", "flows")
MODEL = "lenet_300_100"
pytestmark = pytest.mark.long(45)
ELSEWHERE = "http://127.0.0.1:9/api"
"""The runner's own PREFECT_API_URL: nothing listens there."""
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "GOTO_NUM_THREADS",
    "MKL_NUM_THREADS",
)
"""What OpenBLAS, OpenMP and MKL size their thread pools from: a plain shell sets none."""
THREADS_STAGE = '''"""A test stage: the thread counts its process computes with."""

import json
from pathlib import Path

from runtime.resilient import flow


@flow(name="threads")
def threads_flow(params_path: str = "params.yaml", root: str = ".", model: str = "") -> None:
    """Write threads.json: each BLAS library's thread count and torch's."""
    import numpy  # noqa: F401 (its OpenBLAS)
    import torch
    from threadpoolctl import threadpool_info

    blas = {i["filepath"]: i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"}
    threads = {"blas": blas, "torch": torch.get_num_threads()}
    threads["torch_interop"] = torch.get_num_interop_threads()
    Path(root, "threads.json").write_text(json.dumps(threads))
'''
"""Added to a project copy's stages as `threads`: imported in the child, not in the runner."""


def request() -> Request:
    """This process's request, as flows.run makes it."""
    return Request.from_caller(["data"], time.time(), 0.1)


def test_no_runner_disabled_or_silent_runner_means_in_process(tmp_path, monkeypatch):
    """Each case returns the reason instead of an outcome, within the answer timeout."""
    path = tmp_path / "warm.sock"
    assert hand_off(request(), path).reason == "no warm runner"
    monkeypatch.setenv("DC_WARM_STAGES", "0")
    assert hand_off(request(), path).reason.startswith("disabled")
    monkeypatch.delenv("DC_WARM_STAGES")

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as silent:
        silent.bind(str(path))
        silent.listen(1)
        began = time.monotonic()
        outcome = hand_off(request(), path, timeout_s=0.5)
        assert "did not answer" in outcome.reason and time.monotonic() - began < 5

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as rude:
        rude.bind(str(tmp_path / "rude.sock"))
        rude.listen(1)
        rude.settimeout(5)

        def hang_up() -> None:
            conn, _ = rude.accept()
            conn.close()

        (closer := threading.Thread(target=hang_up)).start()
        outcome = hand_off(request(), tmp_path / "rude.sock", timeout_s=5)
        closer.join()
        assert not outcome.ran and outcome.reason  # hung up, reset or broken pipe: all in-process
    outcome = hand_off(request(), path, timeout_s=0.5)  # a socket file nobody listens on
    assert outcome.reason.startswith("the warm runner did not answer")


def test_the_imports_load_openblas_single_threaded_and_leave_the_environment_as_it_was(
    monkeypatch,
):
    for before in (None, "3"):
        if before is None:
            monkeypatch.delenv(BLAS_THREADS_ENV, raising=False)
        else:
            monkeypatch.setenv(BLAS_THREADS_ENV, before)
        with single_threaded_blas():
            assert os.environ[BLAS_THREADS_ENV] == "1"
        assert os.environ.get(BLAS_THREADS_ENV) == before


def _make_recipe_env(*variables: str) -> dict[str, str]:
    """The environment the Makefile's recipes run in, for `make TARGET` with `variables`."""
    probe = "dc-env-probe: ; @env -0"
    done = subprocess.run(
        ["make", "-s", "-C", str(ROOT), f"--eval={probe}", "dc-env-probe", *variables],
        capture_output=True,
        check=True,
        env=dict(os.environ, MAKEFLAGS=""),
    )
    pairs = [item.split(b"=", 1) for item in done.stdout.split(b"\0") if b"=" in item]
    return {key.decode(): value.decode() for key, value in pairs}


@pytest.mark.skipif(shutil.which("make") is None, reason="no make")
def test_a_runner_started_by_make_ui_port_serves_a_plain_shell():
    shell = dict(os.environ)
    for key in ("PORT", "MODEL", "PYTHON", "DC_PREFECT_PORT"):
        shell.pop(key, None)
    recipe = _make_recipe_env("PORT=4341", "MODEL=lenet5")
    assert recipe["PORT"] == "4341" and recipe["DC_PREFECT_PORT"] == "4341"
    assert import_time_env(recipe) == import_time_env(shell), "the runner would refuse the shell"
    assert env_digest(recipe) == env_digest(shell)


def test_only_import_time_variables_must_match_and_changed_files_are_found(tmp_path):
    env = {"PATH": "/x", "PREFECT_API_URL": "u", "DVC_STAGE": "s", "OMP_NUM_THREADS": "1"}
    assert import_time_env(env) == {"OMP_NUM_THREADS": "1"}
    # runtime.server start keeps a runner whose digest matches, restarts one that does not
    assert env_digest(env) == env_digest(dict(env, PREFECT_API_URL="v", PATH="/y"))
    assert env_digest(env) != env_digest(dict(env, OMP_NUM_THREADS="2"))
    module = tmp_path / "module.py"
    module.write_text("x = 1\n")
    stamps = {str(module): (module.stat().st_mtime_ns, module.stat().st_size)}
    assert sys.executable in file_stamps()
    assert changed_file(stamps) is None
    module.write_text("x = 22\n")
    assert changed_file(stamps) == str(module)
    module.unlink()
    assert changed_file(stamps) == str(module)


# --- a real runner --------------------------------------------------------------------------


def small_params(mnist_root: Path) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(
        source="local",
        local_dir=str(mnist_root / "MNIST" / "raw"),
        train_limit=300,
        val_limit=100,
        test_limit=100,
    )
    section = raw["models"][MODEL]
    section["allocation"] = "params"  # the hand tables: no search run here
    section["train"]["epochs"] = 1
    raw["models"] = {MODEL: section}
    return raw


def stage_env(prefect_api: str) -> dict[str, str]:
    """What DVC gives a stage: the venv first on PATH, the (test) Prefect server."""
    env = dict(os.environ, PREFECT_API_URL=prefect_api, OMP_NUM_THREADS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.pop("PYTHONPATH", None)
    env.pop("DC_WARM_STAGES", None)
    return env


class Warm:
    """A runner in a project copy, and stages run there."""

    def __init__(self, repo: Path, env: dict[str, str]) -> None:
        self.repo = repo
        self.env = env
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        """Start the runner (its own PREFECT_API_URL points nowhere) and wait until it answers."""
        log = (self.repo / "warm.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "runtime.warm"],
            cwd=self.repo,
            env=dict(self.env, PREFECT_API_URL=ELSEWHERE),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_answering()

    def wait_answering(self, timeout_s: float = 240) -> None:
        deadline = time.monotonic() + timeout_s
        while not warm_answers(self.repo / SOCKET):
            assert time.monotonic() < deadline, (self.repo / "warm.log").read_text()[-2000:]
            time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def command(self, stage: str, *args: str) -> list[str]:
        model = [] if stage == "data" or "--model" in args else ["--model", MODEL]
        return [sys.executable, "-m", "flows.run", stage, *model, *args]

    def run(self, stage: str, *args: str, cold: bool = False, **env: str):
        """Run a stage to its end; (completed process, its timing record or None)."""
        run_env = dict(self.env, **env)
        if cold:
            run_env["DC_WARM_STAGES"] = "0"
        done = subprocess.run(
            self.command(stage, *args), cwd=self.repo, env=run_env, capture_output=True, text=True
        )
        root = Path(args[args.index("--root") + 1]) if "--root" in args else self.repo
        record = timing_path(root, stage, None if stage == "data" else MODEL)
        return done, json.loads(record.read_text()) if record.exists() else None

    def children(self) -> list[int]:
        """Processes whose parent is the runner."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == self.process.pid:
                    found.append(int(entry.name))
        return found


def project_copy(folder: Path, mnist_root: Path) -> Path:
    """The project's code and small params in `folder`/repo."""
    repo = folder / "repo"
    for code in CODE:
        shutil.copytree(ROOT / code, repo / code, ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "params.yaml").write_text(yaml.safe_dump(small_params(mnist_root), sort_keys=False))
    return repo


@pytest.fixture(scope="module")
def warm(tmp_path_factory, mnist_root, prefect_api) -> Iterator[Warm]:
    runner = Warm(project_copy(tmp_path_factory.mktemp("warm"), mnist_root), stage_env(prefect_api))
    runner.start()
    yield runner
    runner.stop()


def outputs(root: Path) -> dict[str, bytes]:
    """Every file a stage wrote under `root` but its timing records (runs/)."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for folder in ("data", "checkpoints", "metrics", "plots")
        for p in sorted((root / folder).rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
def test_exit_status_of_a_failing_warm_stage_is_relayed(warm, tmp_path):
    """A stage whose body fails: its error once on the caller's stderr (the traceback in the
    error log), exit status 1; a params error: exit status 2 and the message."""
    shutil.copy(warm.repo / "params.yaml", tmp_path / "params.yaml")
    done, record = warm.run("prune", "--root", str(tmp_path), "--params", "params.yaml")
    assert done.returncode == 1 and done.stderr.count("error: prune@") == 1, done.stderr
    assert "Traceback" not in done.stderr and "prune-error.log" in done.stderr
    assert record["runner"] == "warm" and not record["completed"]
    done, _ = warm.run("train", "--model", "nosuch")
    assert done.returncode == 2 and "nosuch" in done.stderr


def long_stage(warm: Warm, root: Path, epochs: int = 400) -> subprocess.Popen:
    """A warm train stage of many epochs in `root`; returns once its child runs."""
    if not (warm.repo / "data").exists():
        assert warm.run("data")[0].returncode == 0
    shutil.copytree(warm.repo / "data", root / "data", dirs_exist_ok=True)
    epochs = f"models.{MODEL}.train.epochs={epochs}"
    process = subprocess.Popen(
        warm.command("train", "--root", str(root), "--set", epochs),
        cwd=warm.repo,
        env=warm.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not warm.children():
        assert process.poll() is None and time.monotonic() < deadline, process.communicate()
        time.sleep(0.1)
    time.sleep(1.0)
    return process


def gone(warm: Warm, timeout_s: float = 30) -> bool:
    deadline = time.monotonic() + timeout_s
    while warm.children() and time.monotonic() < deadline:
        time.sleep(0.1)
    return not warm.children()


@pytest.mark.slow
def test_signals_reach_the_stage_and_a_vanished_caller_takes_it_along(warm, tmp_path):
    process = long_stage(warm, tmp_path / "a")
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == -signal.SIGTERM, "the stage died of SIGTERM, so does its caller"
    assert gone(warm)

    process = long_stage(warm, tmp_path / "b")
    process.kill()
    process.communicate(timeout=60)
    assert gone(warm), "a caller killed outright takes its stage with it"


@pytest.mark.slow
def test_a_stale_runner_never_serves_and_restarts(warm):
    """A changed project file: the runner restarts (within seconds when idle, at the latest at
    the next request, which runs in-process); then stages are warm again, on the new code."""
    pid = warm.process.pid
    source = warm.repo / "flows" / "encode.py"
    source.write_text(source.read_text() + "\nWARM_TEST_MARK = 1\n")
    done, record = warm.run("data")
    assert done.returncode == 0 and record["runner"] == "cold"
    log = warm.repo / "warm.log"
    deadline = time.monotonic() + 240
    while "ready in" not in log.read_text().partition("flows/encode.py changed")[2]:
        assert time.monotonic() < deadline, log.read_text()[-2000:]
        time.sleep(0.2)
    done, record = warm.run("data")
    assert done.returncode == 0 and record["runner"] == "warm", record["runner_note"]
    assert warm.process.pid == pid and warm.process.poll() is None, "restarted in place"


@pytest.mark.slow
def test_another_environment_runs_in_process(warm):
    done, record = warm.run("data", DC_TEST_SOMETHING="1")
    assert done.returncode == 0 and record["runner"] == "cold"
    assert record["runner_note"] == "refused: environment differs: DC_TEST_SOMETHING"


@pytest.mark.slow
def test_a_killed_runner_never_stops_the_work(warm, tmp_path):
    """The stage forked before the kill finishes and its caller gets its status; later stages
    run in-process until the runner is back."""
    process = long_stage(warm, tmp_path, epochs=20)
    os.kill(warm.process.pid, signal.SIGKILL)
    warm.process.wait()
    _, err = process.communicate(timeout=600)
    assert process.returncode == 0, err[-3000:]
    assert (tmp_path / "checkpoints" / MODEL / "dense.pt").exists()
    done, record = warm.run("data")
    assert done.returncode == 0 and record["runner"] == "cold"
    warm.start()


@pytest.fixture(scope="module")
def warm_plain_shell(tmp_path_factory, mnist_root, prefect_api) -> Iterator[Warm]:
    """A runner (in its own project copy, with the `threads` stage) whose environment, like a
    plain shell's, sets no thread count: numpy's OpenBLAS would start a pool as it loads."""
    repo = project_copy(tmp_path_factory.mktemp("warm-plain"), mnist_root)
    (repo / "flows" / "threads.py").write_text(THREADS_STAGE)
    run_py = repo / "flows" / "run.py"
    anchor = "SHARED_STAGES = ("
    assert anchor in run_py.read_text()
    stage = 'STAGES["threads"] = "flows.threads:threads_flow"\n'
    run_py.write_text(run_py.read_text().replace(anchor, stage + anchor, 1))
    env = stage_env(prefect_api)
    for name in THREAD_VARIABLES:
        env.pop(name, None)
    runner = Warm(repo, env)
    runner.start()
    yield runner
    runner.stop()


@pytest.mark.slow
def test_in_a_plain_shell_stages_run_warm_with_a_cold_stages_threads_and_bytes(
    warm_plain_shell, prefect_api
):
    """No thread variable set: the runner comes up, serves stages warm, each with the BLAS and
    torch thread counts of a cold stage process, and writes the same bytes, the pinned numerics
    record of the train stage's metrics included; warm and cold, the runs are on the caller's
    server (the runner's own environment points elsewhere)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    def train_runs() -> int:
        tags = FlowRunFilter(tags=FlowRunFilterTags(all_=["stage:train", f"model:{MODEL}"]))
        with get_client(sync_client=True) as client:
            return len(client.read_flow_runs(flow_run_filter=tags))

    runner = warm_plain_shell
    before = train_runs()
    results, threads = {}, {}
    for stage in ("data", "train", "threads"):
        for mode in ("warm", "cold"):
            done, record = runner.run(stage, cold=mode == "cold")
            assert done.returncode == 0, done.stderr[-3000:]
            assert record["runner"] == mode, record.get("runner_note")
            assert "unreachable" not in done.stderr, done.stderr[-3000:]
            results[stage, mode] = outputs(runner.repo)
            if stage == "threads":
                threads[mode] = json.loads((runner.repo / "threads.json").read_text())
        assert results[stage, "warm"] == results[stage, "cold"]
    assert f"checkpoints/{MODEL}/dense.pt" in results["train", "warm"]
    assert train_runs() == before + 2, "both train runs are on the caller's server"
    numerics = json.loads(results["train", "warm"][f"metrics/{MODEL}/train.json"])["numerics"]
    assert numerics["threads"] == 2 and numerics["deterministic"] is True, numerics
    assert numerics["linear"] == "onednn", numerics
    if AVX2:
        assert numerics["cpu_capability"] == "AVX2", numerics
    assert threads["warm"] == threads["cold"]
    numpy_blas = [n for path, n in threads["cold"]["blas"].items() if "numpy" in path]
    assert numpy_blas, threads
    if len(os.sched_getaffinity(0)) > 1:
        assert numpy_blas[0] > 1, "a cold stage's OpenBLAS pool: the runner's is single-threaded"
    assert "threads after the imports" not in (runner.repo / "warm.log").read_text()
