"""Choose params.yaml's defaults on the validation split alone: a grid over training and
compression settings, each point run through the real pruning, quantization and encoder.

Never opens the test files. Stage 1 trains the dense model for each (lr, weight decay) and keeps
the lowest validation error; stage 2 prunes, quantizes and encodes that model for every
(densities, bits) point and records the exact file size and the validation error (the decoded
file's logits equal the quantized model's, so this is the file's validation error). The chosen
point is the smallest file whose validation error is at most the dense validation error plus
`--tolerance` percentage points. Runs on CUDA when present, one process per worker.

    python -m benchmarks.select_defaults --model lenet_300_100 --data data/MNIST/raw --workers 8
"""

from __future__ import annotations

import argparse
import gzip
import itertools
import json
import multiprocessing as mp
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch
import yaml

from deepcompression.compress.pruning import density_schedule, full_masks, overall_density, prune_
from deepcompression.compress.quantization import (
    cluster_model,
    drop_unused_centroids,
    share_weights_,
    strip_,
)
from deepcompression.data.mnist import TRAIN_IMAGES, TRAIN_LABELS, mnist_training_set
from deepcompression.data.tensors import ImageTensors
from deepcompression.format.container import QuantizedTensor, encode_model
from deepcompression.plan import compressible_layers, layer_kind
from deepcompression.training import evaluate, fit, seed_everything
from flows.params import check_raw
from models import build_model

GRIDS: dict[str, dict] = {
    "lenet_300_100": {
        "train": {"lr": [0.05, 0.1], "weight_decay": [1e-4, 5e-4]},
        "density": {"fc1": [0.03, 0.04, 0.05, 0.06], "fc2": [0.05, 0.07, 0.1], "fc3": [0.25]},
        "bits": [{"fc": 4}, {"fc": 5}, {"fc": 6}],
    },
    "lenet5": {
        "train": {"lr": [0.05, 0.1], "weight_decay": [1e-4, 5e-4]},
        "density": {
            "conv1": [0.66],
            "conv2": [0.08, 0.12],
            "fc1": [0.03, 0.045, 0.06],
            "fc2": [0.1, 0.19],
        },
        "bits": [{"conv": 8, "fc": 5}, {"conv": 6, "fc": 4}, {"conv": 8, "fc": 4}],
    },
}


SMALL_GRIDS: dict[str, dict] = {
    "lenet_300_100": {
        "train": {"lr": [0.1], "weight_decay": [1e-4, 5e-4]},
        "density": {"fc1": [0.04, 0.06], "fc2": [0.07], "fc3": [0.25]},
        "bits": [{"fc": 4}, {"fc": 5}],
    },
    "lenet5": {
        "train": {"lr": [0.05], "weight_decay": [1e-4, 5e-4]},
        "density": {"conv1": [0.66], "conv2": [0.12], "fc1": [0.08], "fc2": [0.19]},
        "bits": [{"conv": 8, "fc": 5}],
    },
}
"""What 2 CPU cores can run in about half an hour per model (`--grid small`); for LeNet-5 only
the weight decay is chosen, the compression settings are the paper's Table 3."""


def read_training_set(folder: Path, val_size: int) -> ImageTensors:
    """The verified training and validation splits from the two training IDX files (or .gz)."""

    def read(name: str) -> bytes:
        plain = folder / name
        return (
            plain.read_bytes()
            if plain.exists()
            else gzip.decompress((folder / f"{name}.gz").read_bytes())
        )

    return mnist_training_set(read(TRAIN_IMAGES), read(TRAIN_LABELS), val_size)


_DATA: dict[str, object] = {}
"""Per worker process: the training/validation tensors, loaded once on the worker's device."""


def _init_worker(folder: Path, val_size: int, limit: int | None, device: str) -> None:
    """Load the data once per worker (sending it with every job would copy 150 MB each time)."""
    torch.set_num_threads(1)
    data = read_training_set(folder, val_size)
    if limit:
        data = data.subset(min(limit, len(data.train_y)), min(limit // 5, len(data.val_y)))
    _DATA["tensors"] = data.as_tuple(device)
    _DATA["device"] = device


def _layer_value(table: dict, name: str, kind: str) -> float:
    return table[name] if name in table else table[kind]


def train_point(job: tuple) -> dict:
    """Train the dense model with one (lr, weight decay); returns its validation error and state."""
    model_name, cfg, seed = job
    device, tensors = _DATA["device"], _DATA["tensors"]
    generator = seed_everything(seed)
    model = build_model(model_name).to(device)
    history = fit(model, tensors, cfg, generator, eval_batch_size=5000)
    state = {k: v.cpu() for k, v in model.state_dict().items()}
    return {"lr": cfg.lr, "weight_decay": cfg.weight_decay, "val_error": history[-1].val_error,
            "state": state}  # fmt: skip


def compress_point(job: tuple) -> dict:
    """Prune -> quantize -> encode one (densities, bits) point; exact bytes and validation error."""
    model_name, state, density, bits, params, seed = job
    device, tensors = _DATA["device"], _DATA["tensors"]
    model = build_model(model_name).to(device)
    model.load_state_dict(state)
    kinds = {name: layer_kind(m) for name, m in compressible_layers(model).items()}
    finals = {name: _layer_value(density, name, kind) for name, kind in kinds.items()}
    steps = {
        n: density_schedule(d, params.prune.iterations, params.prune.schedule)
        for n, d in finals.items()
    }
    masks = full_masks(model)
    for i in range(params.prune.iterations):
        generator = seed_everything(seed + i + 1)
        masks = prune_(model, masks, {n: s[i] for n, s in steps.items()}, "magnitude", None)
        fit(model, tensors, params.prune.retrain, generator, masks=masks, eval_batch_size=5000)
    layer_bits = {name: int(_layer_value(bits, name, kind)) for name, kind in kinds.items()}
    q = params.quantize
    books = cluster_model(model, masks, layer_bits, init=q.init, seed=seed, engine="sorted")
    share_weights_(model, books)
    fit(model, tensors, q.finetune, seed_everything(seed), eval_batch_size=5000)
    final_books = {k: drop_unused_centroids(b) for k, b in strip_(model).items()}
    val_error = evaluate(model, tensors[2], tensors[3], 5000).error
    index_bits = {name: 8 if kind == "conv" else 5 for name, kind in kinds.items()}
    quantized = [
        QuantizedTensor(
            name=key,
            mask=masks[key].cpu(),
            labels=b.labels.cpu(),
            centroids=b.centroids.detach().cpu(),
            weight_bits=layer_bits[key.rsplit(".", 1)[0]],
            index_bits=index_bits[key.rsplit(".", 1)[0]],
        )  # fmt: skip
        for key, b in final_books.items()
    ]
    raw = {k: v.cpu() for k, v in model.state_dict().items() if k not in final_books}
    size = len(encode_model(quantized, raw, {"name": model_name, "kwargs": {}}, {}))
    return {"density": density, "bits": bits, "val_error": val_error, "file_bytes": size,
            "overall_density": overall_density(masks)}  # fmt: skip


def scale_epochs(params, factor: float):
    """The params with every epoch count scaled (at least 1): for smoke runs of this script."""
    if factor == 1.0:
        return params

    def scaled(cfg):
        return replace(cfg, epochs=max(1, round(cfg.epochs * factor)))

    prune = replace(params.prune, retrain=scaled(params.prune.retrain))
    quantize = replace(params.quantize, finetune=scaled(params.quantize.finetune))
    return replace(params, train=scaled(params.train), prune=prune, quantize=quantize)


def grid_points(grid: dict) -> list[dict]:
    """Every combination of the per-layer density choices."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def main(argv: list[str] | None = None) -> int:
    """Run both stages of the grid and print the table and the chosen point as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, choices=sorted(GRIDS))
    parser.add_argument("--data", type=Path, required=True, help="folder of the training IDX files")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tolerance", type=float, default=0.05, help="percentage points")
    parser.add_argument("--out", type=Path)
    parser.add_argument("--grid", choices=("full", "small"), default="full")
    parser.add_argument("--limit", type=int, help="first N training images only (smoke runs)")
    parser.add_argument("--epochs-scale", type=float, default=1.0, help="scale every epoch count")
    args = parser.parse_args(argv)

    params = check_raw(yaml.safe_load(args.params.read_text()))[0].select(args.model)
    params = scale_epochs(params, args.epochs_scale)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    grid = (GRIDS if args.grid == "full" else SMALL_GRIDS)[args.model]
    start = time.perf_counter()
    ctx = mp.get_context("spawn")
    init = (args.data, params.data.val_size, args.limit, device)
    with ctx.Pool(args.workers, initializer=_init_worker, initargs=init) as pool:
        train_cfgs = [
            replace(params.train, lr=lr, weight_decay=wd)
            for lr, wd in itertools.product(grid["train"]["lr"], grid["train"]["weight_decay"])
        ]
        jobs = [(args.model, c, params.run.seed) for c in train_cfgs]
        trained = pool.map(train_point, jobs, chunksize=1)
        best = min(trained, key=lambda t: t["val_error"])
        retrain_wd = replace(params.prune.retrain, weight_decay=best["weight_decay"])
        chosen_params = replace(params, prune=replace(params.prune, retrain=retrain_wd))
        jobs = [
            (args.model, best["state"], d, b, chosen_params, params.run.seed)
            for d in grid_points(grid["density"])
            for b in grid["bits"]
        ]
        points = pool.map(compress_point, jobs, chunksize=1)
    budget = best["val_error"] + args.tolerance / 100
    feasible = [p for p in points if p["val_error"] <= budget]
    chosen = (
        min(feasible, key=lambda p: p["file_bytes"])
        if feasible
        else min(points, key=lambda p: p["val_error"])
    )
    report = {
        "model": args.model,
        "device": device,
        "seconds": round(time.perf_counter() - start, 1),
        "train": [{k: v for k, v in t.items() if k != "state"} for t in trained],
        "best_train": {k: v for k, v in best.items() if k != "state"},
        "budget_val_error": budget,
        "points": sorted(points, key=lambda p: p["file_bytes"]),
        "chosen": chosen,
    }
    text = json.dumps(report, indent=1)
    if args.out:
        args.out.write_text(text)
    print(text)
    for p in report["points"]:
        print(
            f"{p['file_bytes']:>7} B  val {100 * p['val_error']:.2f}%  {p['density']} {p['bits']}"
        )
    print(f"chosen: {chosen}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
