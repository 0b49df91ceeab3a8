"""Identical bytes under different machine offers and Prefect server states: a short run of
LeNet-5's stages (data, train, prune, quantize, encode) on an MNIST slice, each through its
command-line entry (`flows.run`'s `main`, as `python -m flows.run STAGE` calls it) in turn in one
fresh process per offer, writes the same checkpoints and file whether the process is offered
another ISA, one core instead of all, or MKL limited to AVX2, and whether its Prefect server is up,
configured but down, or absent (the stage then starts one of its own). Without the pinning the
offers do not agree (the train stage alone, run the same way on the same data, writes other dense
weights on all cores than on one). `evaluate` and `plots` only read the checkpoints and file
compared here, so they are left out (tests/test_pipeline.py runs them). A warm-runner stage runs
with the same settings as a cold one: tests/test_warm.py compares their outputs, the numerics
record in the train stage's metrics included.

`python tests/test_reproducible.py` prints the md5s of one pinned run under each offer: the check
to repeat on another CPU (the device machine's, in BENCHMARKS.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import unused_port
from test_numerics import AVX2

from deepcompression.numerics import PINNED_ENV
from runtime.server import LocalServer, stop

ROOT = Path(__file__).parents[1]
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
MODEL = "lenet5"
pytestmark = [
    pytest.mark.long(60),
    pytest.mark.slow,
    pytest.mark.skipif(not AVX2, reason="identical bytes are promised on AVX2 CPUs"),
]
ONE_CORE = "one core"
OFFERS: dict[str, dict[str, str]] = {
    "all cores": {},
    "ATen asked for AVX-512": {"ATEN_CPU_CAPABILITY": "avx512"},
    ONE_CORE: {},
    "MKL at most AVX2": {"MKL_ENABLE_INSTRUCTIONS": "AVX2"},
}
"""What a machine offers, as far as this CPU can show it: each runs in a fresh process."""
MONITORING = {
    "all cores": "up",
    "ATen asked for AVX-512": "down",
    ONE_CORE: "absent",
    "MKL at most AVX2": "up",
}
"""The Prefect server each offer's stages see: the session's (up), a configured URL nobody
answers (down), or none configured (absent: the first stage starts the project's local one in the
run's folder). Monitoring never changes a result, so these runs must agree too; that is what lets
dvc.yaml leave runtime/ out of every stage's deps (tests/test_dvc_stages.py)."""
AT_ONCE = 2
"""Offers run side by side (each a process of its own, as apart as on two machines)."""
UNPINNED_OFFERS = ("all cores", ONE_CORE)
"""The contrast: unpinned, torch's thread count follows the cores, and the weights with it."""
STAGES = ("data", "train", "prune", "quantize", "encode")
"""The stages whose outputs the numerics decide."""
PINNED = (
    "import sys\n"
    "from flows.run import main\n"
    "model, *where = sys.argv[1:]\n"
    f"for stage in {STAGES!r}:\n"
    "    status = main([stage, *(['--model', model] if stage != 'data' else []), *where])\n"
    "    if status:\n"
    "        sys.exit(status)\n"
)
"""Each stage's own entry in turn, in one process (imports paid once): the pinning is that of
`python -m flows.run`, set as `flows.run` is imported."""
UNPINNED = (
    "import runpy, sys\n"
    "import deepcompression.numerics as numerics\n"
    "numerics.PINNED_ENV.clear()\n"
    "numerics.pin_torch = lambda threads: None\n"
    "sys.argv = ['flows.run', *sys.argv[1:]]\n"
    "runpy.run_module('flows.run', run_name='__main__')\n"
)
"""The same stage entry with the pinning taken out: torch's defaults, for the contrast."""
OUTPUTS = (
    f"checkpoints/{MODEL}/dense.pt",
    f"checkpoints/{MODEL}/pruned.pt",
    f"checkpoints/{MODEL}/quantized.pt",
    f"compressed/{MODEL}.dcz",
)


def short_params(mnist_folder: Path) -> dict:
    """The shipped params, cut to a short LeNet-5 run on 1,000 training images (8 steps per
    epoch: enough for unpinned thread counts to give other weights)."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(
        source="local", local_dir=str(mnist_folder), train_limit=1000, val_limit=250,
        test_limit=250,
    )  # fmt: skip
    section = raw["models"][MODEL]
    section["allocation"] = "params"
    section["train"]["epochs"] = 1
    section["prune"]["iterations"] = 2
    section["prune"]["retrain"]["epochs"] = 1
    section["quantize"]["finetune"]["epochs"] = 1
    raw["models"] = {MODEL: section}
    return raw


def monitoring_env(state: str, api: str, port: int) -> dict[str, str]:
    """The Prefect variables of a stage process that finds its server `state` (MONITORING)."""
    if state == "up":
        return {"PREFECT_API_URL": api}
    if state == "down":
        return {"PREFECT_API_URL": f"http://127.0.0.1:{port}/api"}
    return {"DC_PREFECT_PORT": str(port)}


def run_stages(
    folder: Path,
    params: dict,
    offer: str,
    pinned: bool = True,
    stage: str = "stages",
    prefect: dict[str, str] | None = None,
    launcher: tuple[str, ...] = (),
) -> dict[str, str]:
    """Run STAGES (or one `stage`, on the data already in `folder`) in a fresh process under
    `offer` in `folder` (with `prefect`'s variables instead of the caller's, run from `folder`;
    started through `launcher`, e.g. an emulator); md5 of each output it wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, **OFFERS[offer], DC_WARM_STAGES="0")
    env.pop("PYTHONPATH", None)
    if prefect is not None:
        for key in ("PREFECT_API_URL", "DC_PREFECT_PORT"):
            env.pop(key, None)
        env.update(prefect)
    if not pinned:  # torch's defaults: nothing pinned inherited from this test process either
        for key in (*PINNED_ENV, *THREAD_ENV):
            env.pop(key, None)
    where = ["--params", str(folder / "params.yaml"), "--root", str(folder)]
    if stage == "stages":
        command = [sys.executable, "-c", PINNED, MODEL, *where]
    else:
        entry = ["-m", "flows.run"] if pinned else ["-c", UNPINNED]
        command = [sys.executable, *entry, stage, "--model", MODEL, *where]
    command = [*launcher, *command]
    if offer == ONE_CORE:
        command = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *command]
    cwd = ROOT if prefect is None else folder  # a local server it starts lives in cwd/.prefect
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    written = OUTPUTS if stage == "stages" else OUTPUTS[:1]  # the train stage: dense.pt
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in written}


def stage_numerics(folder: Path, stage: str, model: str = MODEL) -> dict:
    """The numerics record a stage wrote into its metrics."""
    return json.loads((folder / "metrics" / model / f"{stage}.json").read_text())["numerics"]


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is needed")
def test_every_offer_and_server_state_writes_the_same_bytes_and_unpinned_runs_do_not(
    tmp_path, mnist_root, prefect_api
):
    """Slow (about a minute on 2 cores) because each offer must be a fresh process that
    imports torch and Prefect and runs five stages: four pinned runs, two at a time, each also
    under a server state of MONITORING. The unpinned contrast compares dense weights only, so
    those two processes run the train stage alone on a copy of the first pinned run's data stage
    output."""
    params = short_params(mnist_root / "MNIST" / "raw")
    ports = {state: unused_port() for state in ("down", "absent")}
    folders = {offer: tmp_path / f"pinned-{i}" for i, offer in enumerate(OFFERS)}
    prefect = {
        offer: monitoring_env(MONITORING[offer], prefect_api, ports.get(MONITORING[offer], 0))
        for offer in OFFERS
    }
    try:
        with ThreadPoolExecutor(AT_ONCE) as pool:  # waits on the API overlap; bytes can't tell
            runs = {offer: pool.submit(run_stages, folders[offer], params, offer,
                                       prefect=prefect[offer])
                    for offer in OFFERS}  # fmt: skip
            pinned = {offer: run.result() for offer, run in runs.items()}
    finally:
        stopped = stop(LocalServer(port=ports["absent"], home=folders[ONE_CORE] / ".prefect"))
    assert stopped, "the stages without a server were to start a local one of their own"
    first = next(iter(pinned.values()))
    assert all(md5s == first for md5s in pinned.values()), json.dumps(pinned, indent=1)
    records = [stage_numerics(folder, "train") for folder in folders.values()]
    assert all(r == records[0] for r in records), records
    assert records[0]["cpu_capability"] == "AVX2" and records[0]["threads"] == 2
    assert records[0]["deterministic"] is True and records[0]["linear"] == "onednn"
    for i in range(len(UNPINNED_OFFERS)):
        shutil.copytree(tmp_path / "pinned-0" / "data", tmp_path / f"unpinned-{i}" / "data")
    up = monitoring_env("up", prefect_api, 0)
    with ThreadPoolExecutor(AT_ONCE) as pool:
        runs = {offer: pool.submit(run_stages, tmp_path / f"unpinned-{i}", params, offer, False,
                                   "train", up)
                for i, offer in enumerate(UNPINNED_OFFERS)}  # fmt: skip
        loose = {offer: run.result() for offer, run in runs.items()}
    print(json.dumps({"pinned": pinned, "unpinned": loose}, indent=1))  # for BENCHMARKS.md
    dense = {md5s[OUTPUTS[0]] for md5s in loose.values()}
    assert len(dense) > 1, f"without pinning the offers gave the same weights: {loose}"


def test_emulating_without_qemu_names_the_package(monkeypatch, capsys):
    """`--emulate` where qemu-x86_64 is not installed: a usage error that says what to install."""
    real = shutil.which
    monkeypatch.setattr(shutil, "which", lambda name: None if "qemu" in name else real(name))
    with pytest.raises(SystemExit) as stopped:
        main(["--emulate", "EPYC-Rome-v2"])
    assert stopped.value.code == 2
    assert "apt-get install qemu-user" in capsys.readouterr().err


def emulated_params(mnist_folder: Path) -> dict:
    """short_params, smaller still for an emulator (about 30x slower): 256 training images, one
    pruning iteration, and the sorted k-means engine, since scikit-learn's KMeans crashes under
    QEMU 7.2 (a segfault in the emulator, for plain KMeans on 5,000 points too)."""
    raw = short_params(mnist_folder)
    raw["data"].update(train_limit=256, val_limit=128, test_limit=128)
    section = raw["models"][MODEL]
    section["prune"]["iterations"] = 1
    section["quantize"]["engine"] = "sorted"
    return raw


def main(argv: list[str] | None = None) -> int:
    """Run the pinned stages under every offer (MNIST from the tests' cache) and print md5s; with
    `--emulate CPU`, a smaller run (emulated_params) once natively and once under QEMU's user-mode
    emulation of that CPU model (`qemu-x86_64 -cpu CPU`: another vendor, other cache sizes, AVX2 at
    most); says whether the runs agree (exit status 1 when they do not)."""
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(prog="python tests/test_reproducible.py")
    parser.add_argument("--emulate", metavar="CPU", help="a QEMU CPU model, e.g. EPYC-Rome-v2")
    args = parser.parse_args(argv)
    mnist = ROOT / ".cache" / "mnist" / "MNIST" / "raw"
    params = emulated_params(mnist) if args.emulate else short_params(mnist)
    down = monitoring_env("down", "", unused_port())  # no server: a client under TCG is slow
    runs: dict[str, tuple[str, tuple[str, ...]]] = {offer: (offer, ()) for offer in OFFERS}
    if args.emulate:
        emulator = shutil.which("qemu-x86_64")
        if emulator is None:
            parser.error("--emulate needs qemu-x86_64: apt-get install qemu-user")
        emulated = ("all cores", (emulator, "-cpu", args.emulate))
        runs = {"all cores": runs["all cores"], f"all cores, emulated {args.emulate}": emulated}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, (offer, launcher)) in enumerate(runs.items()):
            md5s = run_stages(Path(tmp) / str(i), params, offer, prefect=down, launcher=launcher)
            results[name] = md5s
            print(json.dumps({"run": name, **md5s}), flush=True)
    same = len({json.dumps(md5s, sort_keys=True) for md5s in results.values()}) == 1
    print("identical bytes" if same else "the runs wrote different bytes", flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
