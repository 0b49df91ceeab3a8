"""Confirm search trials with full-length runs, on the validation split only.

The pipeline's confirm stage does this for the search's pick and the front points after it; this
script runs any trials you name (and params overrides), side by side, to compare them.

A search trial retrains briefly, so its error overstates what the full-length stages reach. This
runs the real `prune -> quantize -> encode` stages for chosen trials of the model's finished study,
each on a scratch root (the project's params.yaml with `allocation: searched` and the trial's
allocation, the committed dense checkpoint, the prepared data linked in), and prints the written
file's bytes and its validation error. The test split is never read (no evaluate stage runs).
Run from the repository root after `dvc repro search@MODEL`, with the local Prefect server up:

    .venv/bin/python -m benchmarks.confirm_front --model lenet_300_100 --trials 53 62
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import optuna

from deepcompression.search.study import TrialRecord, completed
from flows.allocation import confirmed_path
from flows.params import read_params, write_overridden_params
from runtime.workspace import Workspace

STAGES = ("prune", "quantize", "encode")


def study_trials(model: str) -> dict[int, TrialRecord]:
    """The completed trials of the study the search stage last chose from, by number."""
    chosen = json.loads(Path("search", model, "allocation.json").read_text())
    storage = f"sqlite:///{Path('runs', model, 'search', 'study.db').resolve()}"
    study = optuna.load_study(study_name=chosen["study"], storage=storage)
    return {record.number: record for record in completed(study)}


def scratch_root(base: Path, model: str, record: TrialRecord, overrides: list[str]) -> Path:
    """A root holding params (allocation: searched, then `overrides`), the dense checkpoint,
    data and the trial."""
    root = base / f"{model}-trial-{record.number}"
    shutil.rmtree(root, ignore_errors=True)
    (root / "search" / model).mkdir(parents=True)
    assignments = [f"models.{model}.allocation=searched", *overrides]
    write_overridden_params("params.yaml", assignments, root)
    allocation = {"model": model, "trial": record.number, "allocation": record.allocation.to_dict()}
    confirmed_path(root, model).write_text(json.dumps(allocation, indent=2))
    dense = Workspace(root, model).checkpoint("dense")
    dense.parent.mkdir(parents=True)
    shutil.copyfile(Workspace(Path("."), model).checkpoint("dense"), dense)
    name = read_params("params.yaml").data.name
    (root / "data").mkdir()
    (root / "data" / name).symlink_to(Path("data", name).resolve())
    return root


def confirm(base: Path, model: str, record: TrialRecord, overrides: list[str]) -> dict:
    """Run the full-length stages for one trial; its file bytes and validation errors."""
    root = scratch_root(base, model, record, overrides)
    env = os.environ | {"OMP_WAIT_POLICY": "PASSIVE"}  # side-by-side jobs: idle threads sleep
    start = time.perf_counter()
    with (root / "run.log").open("w") as log:
        for stage in STAGES:
            command = [sys.executable, "-m", "flows.run", stage, "--model", model,
                       "--root", str(root), "--params", str(root / "params.yaml")]  # fmt: skip
            subprocess.run(command, check=True, env=env, stdout=log, stderr=subprocess.STDOUT)
    metrics = root / "metrics" / model
    encode = json.loads((metrics / "encode.json").read_text())
    return {
        "trial": record.number,
        "trial_bytes": record.file_bytes,
        "trial_val_error": record.val_error,
        "file_bytes": encode["file_bytes"],
        "file_ratio": encode["file_ratio"],
        "pruned_val_error": json.loads((metrics / "prune.json").read_text())["val_error"],
        "file_val_error": json.loads((metrics / "quantize.json").read_text())["val_error"],
        "seconds": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--trials", type=int, nargs="+", required=True, help="trial numbers")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="trials run at once; each runs the pipeline's run.threads torch threads (its pinned "
        "numerics), so keep jobs x run.threads <= cores: oversubscribed, a run takes 10x as long",
    )
    parser.add_argument("--base", type=Path, default=Path("/tmp/confirm_front"))
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params key, e.g. models.lenet5.prune.retrain.epochs=8",
    )
    args = parser.parse_args(argv)
    records = study_trials(args.model)
    missing = [n for n in args.trials if n not in records]
    if missing:
        parser.error(f"trials {missing} are not completed trials of the study; see the front CSV")
    with ThreadPoolExecutor(args.jobs) as pool:
        rows = list(pool.map(
            lambda n: confirm(args.base, args.model, records[n], args.set),
            args.trials,
        ))  # fmt: skip
    print("| trial | trial bytes | trial val | file bytes | ratio | pruned val | file val | s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['trial']} | {r['trial_bytes']:,} | {100 * r['trial_val_error']:.2f}% | "
              f"{r['file_bytes']:,} | {r['file_ratio']:.1f}x | {100 * r['pruned_val_error']:.2f}% "
              f"| {100 * r['file_val_error']:.2f}% | {r['seconds']:.0f} |")  # fmt: skip
    if args.out:
        args.out.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
