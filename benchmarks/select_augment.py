"""Choose `augment_shift` on the validation split: train the dense model once per shift.

Each run uses the model's `train` section of params.yaml with only `augment_shift` (and, if
given, the epochs) replaced, on the prepared data's training split, and prints its validation
error after every epoch and at the end. The test split is never read. One torch thread per run.

    .venv/bin/python -m benchmarks.select_augment --model lenet_300_100 --shifts 0 1 2
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch

from deepcompression.training import fit, seed_everything
from flows.common import load_data
from flows.params import load_params
from models import build_model
from runtime.workspace import Workspace


def train_with_shift(model_name: str, shift: int, epochs: int | None) -> tuple[float, float]:
    """Validation error of the dense model trained with `shift`, and the seconds it took."""
    params, _ = load_params("params.yaml", model_name)
    cfg = dataclasses.replace(params.train, augment_shift=shift, checkpoint=None)
    if epochs is not None:
        cfg = dataclasses.replace(cfg, epochs=epochs)
    data = load_data(params, Workspace(Path("."), model_name)).as_tuple("cpu")
    generator = seed_everything(params.run.seed)
    model = build_model(model_name)
    start = time.perf_counter()

    def report(record) -> None:
        print(f"shift {shift} epoch {record.epoch}: val error {100 * record.val_error:.2f}%",
              flush=True)  # fmt: skip

    history = fit(model, data, cfg, generator, on_epoch=report)
    return history[-1].val_error, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--shifts", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, help="override train.epochs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = [(s, *train_with_shift(args.model, s, args.epochs)) for s in args.shifts]
    print("| augment_shift | validation error | seconds |\n|---|---|---|")
    for shift, error, seconds in rows:
        print(f"| {shift} | {100 * error:.2f}% | {seconds:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
