"""How much of a Table 1 row is the seed: the pipeline after the search, rerun with other seeds.

Each seed runs the real `train -> prune -> quantize -> encode -> evaluate` stages of one model
on a scratch root: the project's params.yaml with `run.seed` set, the committed per-layer choice
(search/<model>/confirmed.json when the model's allocation is `searched`, else params.yaml's
tables) and the prepared data linked in. Run after `dvc repro`; it reports what the committed run
chose, it chooses nothing (the test split is read by each seed's evaluate stage, for the spread);
a seed whose stages fail (a training that diverges) is listed with its error, not averaged:

    .venv/bin/python -m benchmarks.seed_spread --model lenet5 --seeds 1 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from flows.allocation import confirmed_path
from flows.params import read_params, write_overridden_params
from runtime.workspace import Workspace

STAGES = ("train", "prune", "quantize", "encode", "evaluate")


def scratch_root(base: Path, model: str, seed: int) -> Path:
    """A root holding params (run.seed = `seed`), the committed choice and the prepared data."""
    root = base / f"{model}-seed-{seed}"
    shutil.rmtree(root, ignore_errors=True)
    write_overridden_params("params.yaml", [f"run.seed={seed}"], root)
    committed = confirmed_path(Path("."), model)
    if committed.is_file():
        confirmed_path(root, model).parent.mkdir(parents=True)
        shutil.copyfile(committed, confirmed_path(root, model))
    name = read_params("params.yaml").data.name
    (root / "data").mkdir()
    (root / "data" / name).symlink_to(Path("data", name).resolve())
    return root


def run_seed(base: Path, model: str, seed: int) -> dict:
    """The stages for one seed; its headline figures."""
    root = scratch_root(base, model, seed)
    start = time.perf_counter()
    with (root / "run.log").open("w") as log:
        for stage in STAGES:
            command = [sys.executable, "-m", "flows.run", stage, "--model", model,
                       "--root", str(root), "--params", str(root / "params.yaml")]  # fmt: skip
            done = subprocess.run(command, env=os.environ, stdout=log, stderr=log)
            if done.returncode != 0:
                return {"seed": seed, "failed": f"{stage}: {failure(root / 'run.log')}"}
    return headline(Workspace(root, model), seed, time.perf_counter() - start)


def headline(workspace: Workspace, seed: int, seconds: float) -> dict:
    """One row: the dense model's validation error and the file's bytes, ratio and errors."""
    evaluate = json.loads(workspace.metrics("evaluate").read_text())
    return {
        "seed": seed,
        "dense_val_error": json.loads(workspace.metrics("train").read_text())["val_error"],
        "file_bytes": evaluate["file_bytes"],
        "file_ratio": evaluate["file_ratio"],
        "val_error": evaluate["val_error"],
        "test_error": evaluate["test_error"],
        "seconds": seconds,
    }


def failure(log: Path) -> str:
    """The stage's `error:` line from its log (flows.run prints one), else a pointer to the log."""
    lines = [line for line in log.read_text().splitlines() if line.startswith("error:")]
    return lines[-1].removeprefix("error:").strip() if lines else f"see {log}"


def committed_row(model: str) -> dict:
    """The committed run's figures (seed of params.yaml) from metrics/."""
    seed = read_params("params.yaml").run.seed
    return headline(Workspace(Path("."), model), seed, float("nan"))


def spread(rows: list[dict], key: str) -> str:
    """min - max (mean, sample standard deviation) of `key` over the rows."""
    values = [r[key] for r in rows]
    scale = 100 if "error" in key else 1
    deviation = statistics.stdev(values) if len(values) > 1 else 0.0
    unit = "%" if scale == 100 else ""
    low, high, mean = (scale * v for v in (min(values), max(values), statistics.mean(values)))
    return f"{low:.2f}{unit} - {high:.2f}{unit} (mean {mean:.2f}{unit}, sd {scale * deviation:.2f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", required=True)
    parser.add_argument("--base", type=Path, default=Path("/tmp/seed_spread"))
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    rows = [committed_row(args.model)]
    rows += [run_seed(args.base, args.model, seed) for seed in args.seeds]
    print("| seed | dense val | file bytes | ratio | file val | file test | s |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['seed']} | failed: {r['failed']} | | | | | |")
            continue
        print(f"| {r['seed']} | {100 * r['dense_val_error']:.2f}% | {r['file_bytes']:,} | "
              f"{r['file_ratio']:.1f}x | {100 * r['val_error']:.2f}% | "
              f"{100 * r['test_error']:.2f}% | {r['seconds']:.0f} |")  # fmt: skip
    finished = [r for r in rows if "failed" not in r]
    for key in ("file_ratio", "val_error", "test_error"):
        print(f"{key}: {spread(finished, key)} over {len(finished)} seeds")
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
