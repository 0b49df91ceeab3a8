"""A stage's fixed cost, cold (its own imports) and warm (forked by runtime/warm.py's runner).

    .venv/bin/python -m benchmarks.stage_startup [--rounds 3] [--model lenet_300_100] [--cold-only]

Copies the project's committed code and params.yaml (git archive of --revision) into a
temporary folder with small params (one model, 1 epoch per training phase, one pruning iteration,
1,000/300/300 images, MNIST from the test cache .cache/mnist), starts its own Prefect server
there with `python -m runtime.server start` (which also starts the warm runner; on a free port),
then runs `python -m flows.run STAGE` for every stage in DVC's order, cold (DC_WARM_STAGES=0) and
warm, the two interleaved and alternating which goes first, for --rounds rounds.
Prints, per stage, the medians of the fixed cost (process start
to the flow's body, from the stage's timing record), the exit (the record's end to the process's
exit, as the caller sees it) and the wall time of the process.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from deepcompression.report import markdown_table
from runtime.timing import timing_path

ROOT = Path(__file__).parents[1]
CODE = ("deepcompression", "models", "tasks", "flows")
STAGES = ("data", "train", "prune", "quantize", "encode", "evaluate", "plots")
MNIST_RAW = ROOT / ".cache" / "mnist" / "MNIST" / "raw"


def small_params(model: str, revision: str = "HEAD") -> dict:
    """params.yaml at git `revision` cut to one model and a few seconds of work per stage."""
    shown = subprocess.run(
        ["git", "show", f"{revision}:params.yaml"], cwd=ROOT, capture_output=True, check=True
    )
    raw = yaml.safe_load(shown.stdout)
    raw["data"].update(
        source="local", local_dir=str(MNIST_RAW), train_limit=1000, val_limit=300, test_limit=300
    )
    section = raw["models"][model]
    section["train"]["epochs"] = 1
    section["prune"]["iterations"] = 1
    section["prune"]["retrain"]["epochs"] = 1
    section["quantize"]["finetune"]["epochs"] = 1
    section["quantize"]["engine"] = "sorted"
    raw["models"] = {model: section}
    return raw


def project_copy(dest: Path, model: str, revision: str) -> Path:
    """The project's code at git `revision` and the small params in `dest`."""
    archive = subprocess.run(
        ["git", "archive", revision, *CODE], cwd=ROOT, capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    params = small_params(model, revision)
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return dest


def free_port() -> int:
    """A TCP port nobody listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def run_stage(repo: Path, stage: str, model: str, env: dict[str, str]) -> dict[str, float]:
    """Run one stage process; its fixed cost, work, exit and wall seconds."""
    command = [sys.executable, "-m", "flows.run", stage]
    if stage != "data":
        command += ["--model", model]
    began = time.perf_counter()
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    wall = time.perf_counter() - began
    exited_at = time.time()
    record = json.loads(timing_path(repo, stage, None if stage == "data" else model).read_text())
    return {
        "fixed": record["fixed_seconds"],
        "work": record["work_seconds"],
        "exit": exited_at - record["ended_at"],
        "wall": wall,
        "warm": float(record.get("runner") == "warm"),
    }


def median(rows: list[dict[str, float]], key: str) -> str:
    """The median of `key` over `rows`, two decimals."""
    return f"{statistics.median(r[key] for r in rows):.2f}"


def table(results: dict[tuple[str, str], list[dict[str, float]]], modes: list[str]) -> str:
    """One row per stage: medians per mode of fixed cost, exit and wall time."""
    rows = []
    for stage in STAGES:
        row: dict[str, object] = {"stage": stage}
        for key in ("fixed", "exit", "wall"):
            for mode in modes:
                row[f"{key} {mode}"] = median(results[stage, mode], key)
        if "warm" in modes:
            row["warm runs"] = int(sum(r["warm"] for r in results[stage, "warm"]))
        rows.append(row)
    return markdown_table(rows)


def main(argv: list[str] | None = None) -> int:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.stage_startup", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="lenet_300_100")
    parser.add_argument("--cold-only", action="store_true", help="measure cold stages only")
    parser.add_argument("--revision", default="HEAD", help="the committed code to measure")
    args = parser.parse_args(argv)
    modes = ["cold"] if args.cold_only else ["cold", "warm"]
    port = free_port()
    env = dict(os.environ, DC_PREFECT_PORT=str(port), OMP_NUM_THREADS="1")
    env.update(PREFECT_API_URL=f"http://127.0.0.1:{port}/api", PREFECT_SERVER_ANALYTICS_ENABLED="0")
    env.pop("PYTHONPATH", None)
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="stage-startup-") as folder:
        repo = project_copy(Path(folder), args.model, args.revision)
        server = [sys.executable, "-m", "runtime.server"]
        subprocess.run([*server, "start"], cwd=repo, env=env, check=True, capture_output=True)
        try:
            for round_no in range(args.rounds):
                order = modes if round_no % 2 == 0 else modes[::-1]
                for mode in order:
                    mode_env = dict(env, DC_WARM_STAGES="0") if mode == "cold" else env
                    for stage in STAGES:
                        result = run_stage(repo, stage, args.model, mode_env)
                        results.setdefault((stage, mode), []).append(result)
        finally:
            subprocess.run([*server, "stop"], cwd=repo, env=env, capture_output=True)
    load = os.getloadavg()
    print(f"{args.rounds} round(s), medians in seconds; load average {load[0]:.2f} {load[1]:.2f}")
    print(table(results, modes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
