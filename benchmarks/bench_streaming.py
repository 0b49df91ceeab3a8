"""What streaming costs: seconds per training epoch and per validation pass with MNIST's images
preloaded as float32 tensors beside the same images streamed from their IDX file (what a split
over `data.max_preload_bytes` gets), same model, same batches, same numbers.

Run from the repository root after the data stage (`dvc repro data`):
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_streaming [--models lenet_300_100 lenet5]
Epochs alternate between the two forms so that machine load affects both alike; each pair starts
from the same weights and seed, and the two models' weights are checked equal after every pair.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from deepcompression.config import OptimConfig
from deepcompression.data.load import load_training
from deepcompression.data.tensors import ImageTensors
from deepcompression.training import evaluate, make_optimizer, train_epoch
from flows.params import DEFAULT_PARAMS, read_params
from models import build_model


def measure(
    name: str, preloaded: ImageTensors, streamed: ImageTensors, epochs: int, batch_size: int
) -> dict[str, float]:
    """Median seconds per training epoch and per validation pass, preloaded and streamed."""
    cfg = OptimConfig(epochs=epochs, batch_size=batch_size, lr=0.01)
    torch.manual_seed(0)
    models = {"preloaded": build_model(name), "streamed": build_model(name)}
    models["streamed"].load_state_dict(models["preloaded"].state_dict())
    optimizers = {form: make_optimizer(m.parameters(), cfg) for form, m in models.items()}
    generators = {form: torch.Generator().manual_seed(1) for form in models}
    data = {"preloaded": preloaded, "streamed": streamed}
    seconds: dict[str, list[float]] = {f"{form} {what}": [] for form in data for what in "te"}
    for _ in range(epochs):
        for form, d in data.items():
            model = models[form]
            start = time.perf_counter()
            train_epoch(model, optimizers[form], d.train_x, d.train_y, batch_size, generators[form])
            seconds[f"{form} t"].append(time.perf_counter() - start)
            start = time.perf_counter()
            evaluate(model, d.val_x, d.val_y, 1000)
            seconds[f"{form} e"].append(time.perf_counter() - start)
        state = models["streamed"].state_dict()
        same = all(torch.equal(v, state[k]) for k, v in models["preloaded"].state_dict().items())
        assert same, "streamed training diverged from preloaded training"
    return {key: statistics.median(values) for key, values in seconds.items()}


def main() -> None:
    """Print seconds per epoch and per validation pass for both forms, and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["lenet_300_100", "lenet5"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="for data.val_size")
    args = parser.parse_args()
    val_size = read_params(args.params).data.val_size
    preloaded = load_training(args.data / "MNIST", val_size, mnist=True)
    streamed = load_training(args.data / "MNIST", val_size, 1, mnist=True)
    assert streamed.streamed and not preloaded.streamed
    print(
        f"cpu, torch threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"{len(preloaded.train_y)} training and {len(preloaded.val_y)} validation images"
    )
    print(f"{'model':<15}{'form':<11}{'s/epoch':>9}{'ratio':>7}{'s/val pass':>12}{'ratio':>7}")
    for name in args.models:
        s = measure(name, preloaded, streamed, args.epochs, args.batch_size)
        for form in ("preloaded", "streamed"):
            train, val = s[f"{form} t"], s[f"{form} e"]
            print(
                f"{name:<15}{form:<11}{train:>9.3f}{train / s['preloaded t']:>7.2f}"
                f"{val:>12.3f}{val / s['preloaded e']:>7.2f}"
            )


if __name__ == "__main__":
    main()
