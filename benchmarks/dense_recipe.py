"""Which dense learning rate trains on every seed? LeNet-5's committed recipe (lr 0.05) diverges
with seeds 1 and 2; a recipe for the next rerun must train on all of them. Trains the dense model
at full length (params.yaml's `train` section, `lr` replaced) for each rate and seed with the
pinned numerics, on the prepared data (`data/MNIST`: run after `dvc repro data`), and prints
each run's validation error, or the epoch where it diverged. Validation only; nothing written:

    .venv/bin/python -m benchmarks.dense_recipe --model lenet5 --lrs 0.04 0.03 --seeds 0 1 2 3 4
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from deepcompression.numerics import pin_environment

if TYPE_CHECKING:
    from deepcompression.config import Params
    from deepcompression.data.tensors import ImageTensors


def train_once(model: str, lr: float, seed: int, params: Params, data: ImageTensors) -> str:
    """One full-length dense training; a Markdown row (validation error, or the divergence)."""
    from deepcompression.training import TrainingDiverged
    from tasks.train import train_dense

    cfg = dataclasses.replace(params.models[model].train, lr=lr)
    run = dataclasses.replace(params.run, seed=seed)
    start = time.perf_counter()
    try:
        _, history = train_dense(model, cfg, run, data)
    except TrainingDiverged as err:
        seconds = time.perf_counter() - start
        return f"| {lr} | {seed} | diverged in epoch {err.epoch} | | {seconds:.0f} |"
    best = min(record.val_error for record in history)
    final = history[-1].val_error
    seconds = time.perf_counter() - start
    return f"| {lr} | {seed} | {100 * final:.2f}% | {100 * best:.2f}% | {seconds:.0f} |"


def main() -> None:
    """Every rate x seed, one after the other (params and data read once); print a Markdown
    table as rows finish."""
    from deepcompression.data.load import load_training
    from deepcompression.numerics import pin_torch
    from flows.params import read_params

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--lrs", type=float, nargs="+", required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data", type=Path, default=Path("data/MNIST"))
    args = parser.parse_args()
    params = read_params("params.yaml")
    pin_torch(params.run.threads)
    data = load_training(args.data, params.data.val_size, mnist=True)
    print("| lr | seed | final val error | best epoch's val error | s |")
    print("|---|---|---|---|---|", flush=True)
    for lr in args.lrs:
        for seed in args.seeds:
            print(train_once(args.model, lr, seed, params, data), flush=True)


if __name__ == "__main__":
    pin_environment(os.environ)  # before torch loads
    main()
