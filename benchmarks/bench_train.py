"""Seconds per epoch over the training split: our training loop beside a bare PyTorch loop, same
run, same data (50,000 images: the 60,000 less params.yaml's `data.val_size` for validation).

Run from the repository root after the data stage (`dvc repro data`):
    .venv/bin/python -m benchmarks.bench_train [--models lenet_300_100 lenet5] [--epochs 3]
Both loops use preloaded tensors, the same batch size, SGD with momentum and the same model init;
epochs alternate between the two so that machine load affects both alike. Each model is timed
dense and pruned to 10% (masked retraining, with inline masking in the bare loop). Target: ratio
<= 1.1.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn

from deepcompression.compress.pruning import (
    MaskGuard,
    full_masks,
    layer_name,
    prunable_weights,
    prune_,
)
from deepcompression.config import OptimConfig
from deepcompression.data.load import load_training
from deepcompression.training import make_optimizer, resolve_device, train_epoch
from flows.params import DEFAULT_PARAMS, read_params
from models import build_model


def bare_epoch(
    model: nn.Module, opt: torch.optim.Optimizer, x, y, batch_size: int, g, pruned=None
) -> None:
    """The plainest loop PyTorch allows over preloaded tensors (with inline masking if pruned)."""
    model.train()
    order = torch.randperm(len(x), generator=g).to(x.device)
    for start in range(0, len(x), batch_size):
        idx = order[start : start + batch_size]
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for weight, off in pruned or ():
            weight.grad.masked_fill_(off, 0.0)
        opt.step()
        with torch.no_grad():
            for weight, off in pruned or ():
                weight.masked_fill_(off, 0.0)


def measure(name: str, x, y, epochs: int, batch_size: int, masked: bool) -> tuple[float, float]:
    """Median seconds per epoch for (ours, bare), alternating epochs; optionally 10%-dense."""
    cfg = OptimConfig(epochs=epochs, batch_size=batch_size, lr=0.01)
    torch.manual_seed(0)
    ours_model = build_model(name).to(x.device)
    bare_model = build_model(name).to(x.device)
    guard, pruned = None, None
    if masked:
        targets = {layer_name(n): 0.1 for n in prunable_weights(ours_model)}
        masks = prune_(ours_model, full_masks(ours_model), targets)
        guard = MaskGuard(ours_model, masks)
        bare_weights = prunable_weights(bare_model)
        pruned = [(bare_weights[k], ~m) for k, m in masks.items()]
    bare_model.load_state_dict(ours_model.state_dict())
    ours_opt = make_optimizer(ours_model.parameters(), cfg)
    bare_opt = make_optimizer(bare_model.parameters(), cfg)
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    ours, bare = [], []
    for _ in range(epochs):
        start = time.perf_counter()
        train_epoch(ours_model, ours_opt, x, y, batch_size, g1, guard)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        bare_epoch(bare_model, bare_opt, x, y, batch_size, g2, pruned)
        bare.append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(bare)


def main() -> None:
    """Print a table of seconds per epoch and the ratio, per model."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["lenet_300_100", "lenet5"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--data", type=Path, default=Path("data"))
    parser.add_argument("--params", type=Path, default=DEFAULT_PARAMS, help="for data.val_size")
    args = parser.parse_args()
    device = resolve_device("auto")
    data = load_training(args.data / "MNIST", read_params(args.params).data.val_size, mnist=True)
    x, y = data.train_x.to(device), data.train_y.to(device)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, batch {args.batch_size}, "
        f"{len(y)} training images"
    )
    print(f"{'model':<15}{'masks':<8}{'ours s/epoch':>14}{'bare s/epoch':>14}{'ratio':>8}")
    for name in args.models:
        for masked in (False, True):
            ours, bare = measure(name, x, y, args.epochs, args.batch_size, masked)
            label = "10%" if masked else "none"
            print(f"{name:<15}{label:<8}{ours:>14.3f}{bare:>14.3f}{ours / bare:>8.3f}")


if __name__ == "__main__":
    main()
