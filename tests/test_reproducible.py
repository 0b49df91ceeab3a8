"""Identical bytes under different machine offers: a short pipeline (data, train, prune,
quantize, encode, evaluate) of LeNet-5 on an MNIST slice, run as `python -m flows.run pipeline`
in fresh processes that are offered another ISA, one core instead of all, or MKL limited to
AVX2, writes the same checkpoints and file; without the pinning it does not (the train stage
alone, run the same way on the same data, writes other dense weights on all cores than on one).
A warm-runner stage runs with the same settings as a cold one: tests/test_warm.py compares
their outputs, the numerics record in the train stage's metrics included.

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
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from test_numerics import AVX2

from deepcompression.numerics import PINNED_ENV

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
AT_ONCE = 2
"""Offers run side by side (each a process of its own, as apart as on two machines)."""
UNPINNED_OFFERS = ("all cores", ONE_CORE)
"""The contrast: unpinned, torch's thread count follows the cores, and the weights with it."""
UNPINNED = (
    "import runpy, sys\n"
    "import deepcompression.numerics as numerics\n"
    "numerics.PINNED_ENV.clear()\n"
    "numerics.pin_threads = lambda threads: None\n"
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


def run_pipeline(
    folder: Path, params: dict, offer: str, pinned: bool = True, stage: str = "pipeline"
) -> dict[str, str]:
    """Run the pipeline (or one `stage`, on the data already in `folder`) in a fresh process
    under `offer` in `folder`; md5 of each output it wrote."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = dict(os.environ, **OFFERS[offer], DC_WARM_STAGES="0")
    env.pop("PYTHONPATH", None)
    if not pinned:  # torch's defaults: nothing pinned inherited from this test process either
        for key in (*PINNED_ENV, *THREAD_ENV):
            env.pop(key, None)
    entry = ["-m", "flows.run"] if pinned else ["-c", UNPINNED]
    command = [sys.executable, *entry, stage, "--model", MODEL]
    command += ["--params", str(folder / "params.yaml"), "--root", str(folder)]
    if offer == ONE_CORE:
        command = ["taskset", "-c", str(min(os.sched_getaffinity(0))), *command]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    written = OUTPUTS if stage == "pipeline" else OUTPUTS[:1]  # the train stage: dense.pt
    return {name: hashlib.md5((folder / name).read_bytes()).hexdigest() for name in written}


def stage_numerics(folder: Path, stage: str, model: str = MODEL) -> dict:
    """The numerics record a stage wrote into its metrics."""
    return json.loads((folder / "metrics" / model / f"{stage}.json").read_text())["numerics"]


@pytest.fixture(scope="module")
def api(prefect_api: str) -> Iterator[str]:
    """The session's Prefect server, for the stage processes."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PREFECT_API_URL", prefect_api)
        yield prefect_api


@pytest.mark.skipif(shutil.which("taskset") is None, reason="taskset (util-linux) is needed")
def test_every_offer_writes_the_same_bytes_and_unpinned_runs_do_not(tmp_path, mnist_root, api):
    """Slow (about a minute on 2 cores) because each offer must be a fresh process that
    imports torch and Prefect and runs every stage: four pinned pipelines, two at a time. The
    unpinned contrast compares dense weights only, so those two processes run the train stage
    alone on a copy of the first pipeline's data stage output."""
    params = short_params(mnist_root / "MNIST" / "raw")
    with ThreadPoolExecutor(AT_ONCE) as pool:  # waits on the API overlap; the bytes can't tell
        runs = [pool.submit(run_pipeline, tmp_path / f"pinned-{i}", params, offer)
                for i, offer in enumerate(OFFERS)]  # fmt: skip
    pinned = {offer: run.result() for offer, run in zip(OFFERS, runs, strict=True)}
    first = next(iter(pinned.values()))
    assert all(md5s == first for md5s in pinned.values()), json.dumps(pinned, indent=1)
    records = [stage_numerics(tmp_path / f"pinned-{i}", "train") for i in range(len(OFFERS))]
    assert all(r == records[0] for r in records), records
    assert records[0]["cpu_capability"] == "AVX2" and records[0]["threads"] == 2
    assert records[0]["deterministic"] is True
    for i in range(len(UNPINNED_OFFERS)):
        shutil.copytree(tmp_path / "pinned-0" / "data", tmp_path / f"unpinned-{i}" / "data")
    with ThreadPoolExecutor(AT_ONCE) as pool:
        runs = [pool.submit(run_pipeline, tmp_path / f"unpinned-{i}", params, offer, False, "train")
                for i, offer in enumerate(UNPINNED_OFFERS)]  # fmt: skip
    loose = {offer: run.result() for offer, run in zip(UNPINNED_OFFERS, runs, strict=True)}
    print(json.dumps({"pinned": pinned, "unpinned": loose}, indent=1))  # for BENCHMARKS.md
    dense = {md5s[OUTPUTS[0]] for md5s in loose.values()}
    assert len(dense) > 1, f"without pinning the offers gave the same weights: {loose}"


def main() -> None:
    """Run the pinned pipeline under every offer (MNIST from the tests' cache) and print md5s."""
    import tempfile

    mnist = ROOT / ".cache" / "mnist" / "MNIST" / "raw"
    params = short_params(mnist)
    with tempfile.TemporaryDirectory() as tmp:
        for i, offer in enumerate(OFFERS):
            md5s = run_pipeline(Path(tmp) / str(i), params, offer)
            print(json.dumps({"offer": offer, **md5s}), flush=True)


if __name__ == "__main__":
    main()
