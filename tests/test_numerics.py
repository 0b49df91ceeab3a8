"""Pinned numerics (deepcompression/numerics.py): the settings are in force in a stage process and
a Dask worker, recorded in the metrics and folded into the file's provenance hash."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from deepcompression.config import ConfigError, RunConfig
from deepcompression.numerics import (
    CAPABILITY,
    PINNED_ENV,
    library_versions,
    numerics_record,
    pin_environment,
    pin_torch,
    pinned_env,
    unpinned,
)
from flows.params import load_params
from runtime.environment import env_digest

pytestmark = pytest.mark.long(10)

ROOT = Path(__file__).parents[1]
AVX2 = "avx2" in Path("/proc/cpuinfo").read_text()
needs_avx2 = pytest.mark.skipif(not AVX2, reason="the pinned numerics are promised on AVX2 CPUs")
READ_BACK = """
import json, os, sys
{setup}
torch_before = {torch_before}
import torch
print(json.dumps({{
    "torch_before": torch_before,
    "capability": torch.backends.cpu.get_cpu_capability(),
    "threads": torch.get_num_threads(),
    "deterministic": torch.are_deterministic_algorithms_enabled(),
    "linear": __import__("deepcompression.numerics").numerics.linear_route(),
    "env": {{k: os.environ.get(k) for k in {keys!r}}},
}}))
"""
"""A fresh interpreter's numerics after `setup`, read back from inside it."""


def fresh_stdout(code: str, **env: str) -> str:
    """What `code` prints in a fresh interpreter whose environment adds `env`."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return done.stdout


def read_back(setup: str, torch_before: str = "False", **env: str) -> dict:
    """Run READ_BACK after `setup` in a fresh interpreter whose environment adds `env`."""
    code = READ_BACK.format(setup=setup, torch_before=torch_before, keys=sorted(PINNED_ENV))
    return json.loads(fresh_stdout(code, **env).strip().splitlines()[-1])


def test_pinned_values_override_what_the_caller_set():
    outer = {"ATEN_CPU_CAPABILITY": "avx512", "MKL_CBWR": "AUTO", "PATH": "/bin"}
    env = pinned_env(outer)
    assert env["PATH"] == "/bin"
    assert {k: env[k] for k in PINNED_ENV} == PINNED_ENV
    assert unpinned(outer) == sorted(PINNED_ENV)
    pin_environment(outer)
    assert outer == env and unpinned(outer) == []


def test_threads_must_be_at_least_one():
    with pytest.raises(ValueError, match="run.threads"):
        pin_torch(0)
    with pytest.raises(ConfigError, match=r"run\.threads: 0 is out of range"):
        RunConfig(threads=0).validate("run")


def test_the_shipped_params_set_the_threads():
    params, _ = load_params(ROOT / "params.yaml", "lenet5")
    assert params.run.threads == 2


@needs_avx2
def test_the_stage_entry_pins_before_torch_is_imported():
    """`import flows.run` (what `python -m flows.run` runs first) imports no torch and leaves
    the pinned values in the environment; torch then loads on AVX2, whatever the caller set."""
    seen = read_back(
        "import flows.run", torch_before="'torch' in sys.modules", ATEN_CPU_CAPABILITY="avx512"
    )
    assert seen["torch_before"] is False
    assert seen["env"] == PINNED_ENV
    assert seen["capability"] == CAPABILITY
    assert seen["linear"] == "torch", "linear layers are routed by pin_torch, in the stage body"


@needs_avx2
def test_pin_torch_sets_the_count_not_the_cores():
    """On one core, three threads: a machine with fewer cores splits every reduction alike."""
    seen = read_back(
        "from deepcompression.numerics import pin_environment, pin_torch\n"
        "pin_environment(os.environ)\n"
        "os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})\n"
        "pin_torch(3)",
    )
    assert seen["threads"] == 3 and seen["deterministic"] is True and seen["linear"] == "onednn"
    assert seen["capability"] == CAPABILITY and seen["env"] == PINNED_ENV


MKL_BRANCH = """
{setup}
import torch
torch.ones(64, 64) @ torch.ones(64, 64)
"""
"""One matrix product in a fresh interpreter after `setup`; with MKL_VERBOSE=1, MKL logs it."""


def mkl_branches(setup: str, **env: str) -> set[str]:
    """The CNR branches MKL logs for MKL_BRANCH's product (`CNR:<branch>` in its verbose line)."""
    lines = fresh_stdout(MKL_BRANCH.format(setup=setup), MKL_VERBOSE="1", **env).splitlines()
    return {line.split("CNR:")[1].split()[0] for line in lines if "CNR:" in line}


@needs_avx2
@pytest.mark.skipif(library_versions()["mkl"] == "none", reason="this torch has no MKL")
def test_mkl_runs_the_compatible_branch_the_stage_entry_asks_for():
    """MKL's own log, not only the variable: after `import flows.run` its products run on the
    COMPATIBLE branch even where the caller asked for AVX2 (which MKL runs as AUTO on AMD CPUs,
    BENCHMARKS.md); without the stage entry, the caller's AUTO is what MKL runs."""
    assert mkl_branches("import flows.run", MKL_CBWR="AVX2") == {"COMPATIBLE"}
    assert mkl_branches("", MKL_CBWR="AUTO") == {"AUTO"}


def test_an_unpinned_interpreter_reports_its_own_capability():
    """The read-back tells pinned from unpinned: without pinning, ATEN_CPU_CAPABILITY=default
    gives torch's scalar kernels."""
    seen = read_back("", ATEN_CPU_CAPABILITY="default")
    assert seen["capability"] == "DEFAULT"


def test_the_record_names_the_settings_and_versions():
    record = numerics_record("cpu")
    assert set(record) == {
        "cpu_capability", "env", "threads", "deterministic", "linear", "device", "torch", "mkl",
        "onednn",
    }  # fmt: skip
    assert record["linear"] in ("onednn", "torch")
    assert record["torch"] == torch.__version__
    assert record["threads"] == torch.get_num_threads()
    versions = library_versions()
    assert versions["mkl"] != "none" and versions["onednn"] != "none", versions
    assert json.loads(json.dumps(record)) == record


def test_runner_and_server_agree_on_the_pinned_environment():
    """`runtime.server start` (unpinned) and the runner (pinned at its start) write the same
    digest: the runner is kept, not restarted on every start."""
    outer = {"HOME": "/root", "OMP_NUM_THREADS": "1"}
    assert env_digest(outer) == env_digest(pinned_env(outer))
    assert env_digest(outer) != env_digest(dict(outer, OMP_NUM_THREADS="2"))


def test_the_numerics_are_part_of_the_files_code_hash():
    from flows.provenance import code_sha256, provenance

    params, _ = load_params(ROOT / "params.yaml", "lenet_300_100")
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = provenance(params)
        torch.set_num_threads(2)
        two = provenance(params)
    finally:
        torch.set_num_threads(before)
    assert one["params_sha256"] == two["params_sha256"]
    assert one["code_sha256"] != two["code_sha256"]
    assert code_sha256() not in (one["code_sha256"], two["code_sha256"])


@pytest.mark.slow
@needs_avx2
def test_a_dask_worker_runs_with_the_pinned_numerics():
    """A worker of the search's local cluster: the pinned environment in force before its torch
    loaded, its thread budget, and a trial's pin_torch (linear layers through oneDNN)."""
    from distributed import Client, LocalCluster

    from flows.params import read_params
    from flows.search import dask_runner

    cfg = read_params(ROOT / "params.yaml").models["lenet_300_100"].search
    runner = dask_runner(dataclasses.replace(cfg, workers=1), threads=1)

    def probe() -> dict:
        import torch

        from deepcompression.numerics import linear_route, pin_torch

        started = torch.get_num_threads()
        pin_torch(1)
        return {
            "capability": torch.backends.cpu.get_cpu_capability(),
            "env": {k: os.environ.get(k) for k in PINNED_ENV},
            "started": started,
            "threads": torch.get_num_threads(),
            "deterministic": torch.are_deterministic_algorithms_enabled(),
            "linear": linear_route(),
        }

    kwargs = dict(runner.cluster_kwargs, n_workers=1)
    with LocalCluster(**kwargs) as cluster, Client(cluster) as client:
        seen = client.submit(probe, pure=False).result(timeout=120)
    assert seen == {
        "capability": CAPABILITY,
        "env": PINNED_ENV,
        "started": 1,
        "threads": 1,
        "deterministic": True,
        "linear": "onednn",
    }
