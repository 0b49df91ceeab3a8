"""Deep Compression of ResNet-18 (CIFAR-style stem) on 32x32 RGB images, with the library alone.

    .venv/bin/python -m benchmarks.bench_resnet [--train-size N] [--epochs N] [--device auto]
    .venv/bin/python -m benchmarks.bench_resnet --quick        # smoke test, under a minute

No CIFAR-10 is available offline here, so the data is generated, deterministically from
``--seed``: "shapes-10" (``benchmarks.shapes10``), 10 classes of coloured shapes and gratings,
32x32 RGB. Train, validation and test splits are drawn the same way from different seeds
(balanced classes), written in the prepared form (meta.json + IDX) and loaded back exactly as the
pipeline loads them (``--data-out`` keeps that folder, so ``deepcompression eval --data`` can read
it).

The stages mirror tasks/prune.py, tasks/quantize.py and tasks/encode.py: train dense; prune every
Linear/Conv2d but the first conv (left dense float32) iteratively by magnitude to its target
density (``density_schedule``), retraining with masks after each step; k-means share the surviving
weights (``cluster_model`` + ``share_weights_``), fine-tune the centroids, bake them back
(``strip_``, ``drop_unused_centroids``); Huffman-code the file (index width per layer: the
smallest file, ``best_index_bits``), BatchNorm statistics and counters stored raw (format v2);
decode it from bytes with ``load`` and check its logits equal the in-memory quantized
model's bit for bit. Every choice is made on the validation split; the test split is evaluated
once per stage, at the end, for the report.

The defaults take about 14 minutes on 2 CPU cores. They were chosen on validation: batch 32 and
lr 0.02 learn the data in 6 epochs (batch 64 / lr 0.05 reached 44% in 3 epochs, batch 32 / lr
0.02 65%); retraining lr 0.005 (98.9% after fine-tuning, against 98.7% with 0.01); the centroid
lr 1e-5 (1e-5 and 1e-6 gave the same validation accuracy; 2e-3, a LeNet-sized lr, destroyed the
network: a centroid's gradient sums those of all its weights, up to ~26,000 in layer4).
"""

from __future__ import annotations

import argparse
import copy
import datetime
import math
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from benchmarks.shapes10 import CHANNELS, CLASSES, DATASET, SIDE, dataset_files
from deepcompression.compress.pruning import (
    Masks,
    densities,
    density_schedule,
    full_masks,
    layer_name,
    overall_density,
    prunable_weights,
    prune_,
)
from deepcompression.compress.quantization import (
    LayerCodebook,
    cluster_model,
    drop_unused_centroids,
    share_weights_,
    strip_,
)
from deepcompression.config import OptimConfig
from deepcompression.format.allocation import best_index_bits
from deepcompression.format.container import KIND_HUFFMAN, QuantizedTensor, encode_model, read_info
from deepcompression.format.loader import load
from deepcompression.format.sizes import model_sizes
from deepcompression.training import (
    EpochRecord,
    evaluate,
    fit,
    predict_logits,
    resolve_device,
    seed_everything,
)
from models import build_model, model_arch

EXCLUDE = ("conv1",)
"""Layers left dense float32 (the first conv: 1,728 weights that see the raw pixels)."""
INDEX_CANDIDATES = range(3, 9)


# ---- the stages --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Every knob of one run (printed with the results)."""

    train_size: int
    val_size: int
    test_size: int
    epochs: int
    prune_iterations: int
    retrain_epochs: int
    finetune_epochs: int
    batch_size: int
    lr: float
    retrain_lr: float
    finetune_lr: float
    conv_density: float
    fc_density: float
    conv_bits: int
    fc_bits: int
    seed: int


def _kind(model: nn.Module, layer: str) -> str:
    return "conv" if isinstance(model.get_submodule(layer), nn.Conv2d) else "fc"


def prune_targets(model: nn.Module, s: Settings) -> dict[str, float]:
    """Final density per layer: conv layers to conv_density, fc to fc_density, EXCLUDE dense."""
    layers = [layer_name(name) for name in prunable_weights(model)]
    return {
        layer: s.conv_density if _kind(model, layer) == "conv" else s.fc_density
        for layer in layers
        if layer not in EXCLUDE
    }


def _epoch_printer(what: str, total: int) -> Callable[[EpochRecord], None]:
    def show(record: EpochRecord) -> None:
        print(
            f"  {what} epoch {record.epoch}/{total}: lr {record.lr:.3g}  train loss "
            f"{record.train_loss:.4f}  val acc {100 * (1 - record.val_error):.2f}%  "
            f"({record.seconds:.1f} s)",
            flush=True,
        )

    return show


def prune_iteratively(
    model: nn.Module, data: tuple[torch.Tensor, ...], s: Settings, epoch_seconds: list[float]
) -> Masks:
    """``prune_iterations`` x (prune by magnitude to the schedule's density, retrain with masks)."""
    targets = prune_targets(model, s)
    schedules = {
        layer: density_schedule(final, s.prune_iterations, "geometric")
        for layer, final in targets.items()
    }
    retrain = OptimConfig(
        epochs=s.retrain_epochs, batch_size=s.batch_size, lr=s.retrain_lr, weight_decay=5e-4
    )
    masks = full_masks(model)
    for i in range(s.prune_iterations):
        step = {layer: schedule[i] for layer, schedule in schedules.items()}
        masks = prune_(model, masks, step, "magnitude")
        pruned = evaluate(model, data[2], data[3])
        print(
            f"  prune {i + 1}/{s.prune_iterations}: density {100 * overall_density(masks):.2f}% "
            f"of prunable weights, val acc {100 * (1 - pruned.error):.2f}% before retraining",
            flush=True,
        )
        generator = seed_everything(s.seed + 1 + i)
        history = fit(
            model,
            data,
            retrain,
            generator,
            masks=masks,
            on_epoch=_epoch_printer(f"retrain {i + 1}", retrain.epochs),
        )
        epoch_seconds += [r.seconds for r in history]
    return masks


def quantize(
    model: nn.Module,
    masks: Masks,
    data: tuple[torch.Tensor, ...],
    s: Settings,
    epoch_seconds: list[float],
) -> dict[str, LayerCodebook]:
    """k-means per layer (linear init, exact sorted engine), fine-tune centroids, bake back."""
    bits = {
        layer_name(key): s.conv_bits if _kind(model, layer_name(key)) == "conv" else s.fc_bits
        for key in masks
        if layer_name(key) not in EXCLUDE
    }
    start = time.perf_counter()
    codebooks = cluster_model(model, masks, bits, init="linear", seed=s.seed, engine="sorted")
    print(f"  k-means over {len(codebooks)} layers: {time.perf_counter() - start:.1f} s")
    share_weights_(model, codebooks)
    clustered = evaluate(model, data[2], data[3])
    print(f"  after k-means: val acc {100 * (1 - clustered.error):.2f}%", flush=True)
    finetune = OptimConfig(
        epochs=s.finetune_epochs, batch_size=s.batch_size, lr=s.finetune_lr, weight_decay=0.0
    )
    history = fit(
        model,
        data,
        finetune,
        seed_everything(s.seed + 100),
        on_epoch=_epoch_printer("fine-tune", finetune.epochs),
    )
    epoch_seconds += [r.seconds for r in history]
    return {key: drop_unused_centroids(book) for key, book in strip_(model).items()}


def encode(model: nn.Module, books: dict[str, LayerCodebook]) -> bytes:
    """The compressed file: shared layers Huffman-coded at their best index width, rest raw."""
    quantized = []
    for key, book in books.items():
        index_bits, _ = best_index_bits(book.mask.cpu(), INDEX_CANDIDATES)
        quantized.append(
            QuantizedTensor(
                name=key,
                mask=book.mask.cpu(),
                labels=book.labels.cpu(),
                centroids=book.centroids.detach().cpu(),
                weight_bits=book.bits,
                index_bits=index_bits,
            )
        )
    order = list(model.state_dict())
    quantized.sort(key=lambda q: order.index(q.name))
    raw = {k: v.detach().cpu() for k, v in model.state_dict().items() if k not in books}
    data = {"source": "generated", "name": DATASET}  # as the pipeline's, for `deepcompression eval`
    provenance = {"benchmark": "benchmarks.bench_resnet", "params": {"data": data}}
    return encode_model(quantized, raw, model_arch(model), provenance)


# ---- the report --------------------------------------------------------------------------------


def _accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return 100.0 * (1.0 - evaluate(model, x, y, 500).error)


def layer_table(data: bytes) -> list[str]:
    """layer | weights | density | bits | bytes, from the file's header (read_info)."""
    info = read_info(data)
    rows = [("layer", "weights", "density", "bits (w/idx)", "bytes")]
    other_numel = other_bytes = other_count = 0
    for layer in info.layers:
        if layer.kind == KIND_HUFFMAN:
            bits = f"{layer.weight_bits}/{layer.index_bits}"
            rows.append(
                (
                    layer.name,
                    f"{layer.numel:,}",
                    f"{100 * layer.nnz / layer.numel:.1f}%",
                    bits,
                    f"{layer.total_bytes:,}",
                )
            )
        elif layer.name.endswith(".weight") and len(layer.shape) > 1:
            rows.append(
                (
                    layer.name,
                    f"{layer.numel:,}",
                    "100.0%",
                    f"raw {layer.dtype}",
                    f"{layer.total_bytes:,}",
                )
            )
        else:
            other_count += 1
            other_numel += layer.numel
            other_bytes += layer.total_bytes
    rows.append(
        (
            f"{other_count} other raw tensors (fc bias, BatchNorm)",
            f"{other_numel:,}",
            "100.0%",
            "raw",
            f"{other_bytes:,}",
        )
    )
    rows.append(("header + preamble", "", "", "", f"{info.overhead_bytes:,}"))
    coded = sum(layer.numel for layer in info.layers)
    rows.append(("total (file)", f"{coded:,}", "", "", f"{info.file_bytes:,}"))
    widths = [max(len(row[i]) for row in rows) for i in range(5)]
    lines = []
    for n, row in enumerate(rows):
        cells = [row[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(row[1:], widths[1:], strict=True)
        ]
        lines.append("| " + " | ".join(cells) + " |")
        if n == 0:
            lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return lines


def _mean(values: list[float]) -> float:
    return sum(values) / len(values) if values else math.nan


def run(s: Settings, device: torch.device, out: Path | None, data_out: Path | None) -> bool:
    """Every stage, then the report; True when the decoded logits equal the quantized model's."""
    started = time.perf_counter()
    files, tensors, (test_x, test_y) = dataset_files(s.train_size, s.val_size, s.test_size, s.seed)
    data = tensors.as_tuple(device)
    test_x, test_y = test_x.to(device), test_y.to(device)
    print(
        f"data: {DATASET}, generated in {time.perf_counter() - started:.1f} s: "
        f"train {len(data[1])}, val {len(data[3])}, test {len(test_y)} (seeds {s.seed}, "
        f"{s.seed + 1}, {s.seed + 2})",
        flush=True,
    )
    if data_out is not None:
        data_out.mkdir(parents=True, exist_ok=True)
        for name, content in files.items():
            (data_out / name).write_bytes(content)

    generator = seed_everything(s.seed)
    model = build_model("resnet18", in_channels=CHANNELS, image_size=SIDE, num_classes=10)
    model = model.to(device)
    dense_cfg = OptimConfig(epochs=s.epochs, batch_size=s.batch_size, lr=s.lr, weight_decay=5e-4)
    print(f"dense training: {s.epochs} epochs", flush=True)
    stage_start = time.perf_counter()
    dense_history = fit(
        model, data, dense_cfg, generator, on_epoch=_epoch_printer("dense", s.epochs)
    )
    dense = copy.deepcopy(model)
    walls = {"dense": time.perf_counter() - stage_start}
    stage_start = time.perf_counter()

    print(f"pruning: {s.prune_iterations} iterations x {s.retrain_epochs} epochs", flush=True)
    retrain_seconds: list[float] = []
    masks = prune_iteratively(model, data, s, retrain_seconds)
    pruned = copy.deepcopy(model)
    walls["prune"] = time.perf_counter() - stage_start
    stage_start = time.perf_counter()

    print(f"quantization: conv {s.conv_bits} bits, fc {s.fc_bits} bits", flush=True)
    finetune_seconds: list[float] = []
    books = quantize(model, masks, data, s, finetune_seconds)
    walls["quantize"] = time.perf_counter() - stage_start

    start = time.perf_counter()
    file_bytes = encode(model, books)
    encode_seconds = time.perf_counter() - start
    if out is not None:
        out.write_bytes(file_bytes)
    start = time.perf_counter()
    decoded = load(file_bytes, device)
    decode_seconds = time.perf_counter() - start
    equal = all(
        torch.equal(predict_logits(decoded, x, 500), predict_logits(model, x, 500))
        for x in (data[2], test_x)
    )

    stages = [("dense", dense), ("pruned", pruned), ("P+Q (in memory)", model), ("file", decoded)]
    accuracy = {
        name: (_accuracy(net, data[2], data[3]), _accuracy(net, test_x, test_y))
        for name, net in stages
    }
    info = read_info(file_bytes)
    sizes = model_sizes(info)
    params = sum(p.numel() for p in decoded.parameters())
    kept = {layer: d for layer, d in densities(masks).items() if layer not in EXCLUDE}
    conv_kept = [d for layer, d in kept.items() if _kind(model, layer) == "conv"]

    print()
    print(f"## ResNet-18 on {DATASET} (32x32 RGB, 10 classes), Deep Compression")
    print()
    print(f"date: {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}")
    print(
        f"device: {device} (torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{os.cpu_count()} CPUs visible, CUDA available: {torch.cuda.is_available()}; "
        f"{platform.processor() or platform.machine()})"
    )
    print(
        f"command: {' '.join([Path(sys.executable).name, '-m', 'benchmarks.bench_resnet'])} "
        f"{' '.join(sys.argv[1:])}"
    )
    print(
        f"data: {DATASET}: {', '.join(CLASSES)}; random position, size, rotation (+-20 deg), "
        "colours and contrast, background gradient, Gaussian noise; "
        f"train {s.train_size} / val {s.val_size} / test {s.test_size}, seed {s.seed}"
    )
    print(
        f"settings: dense {s.epochs} epochs (lr {s.lr}, cosine, batch {s.batch_size}); prune "
        f"{s.prune_iterations} iterations x {s.retrain_epochs} epochs (lr {s.retrain_lr}) to "
        f"conv {100 * s.conv_density:.0f}% / fc {100 * s.fc_density:.0f}%, {EXCLUDE[0]} dense; "
        f"k-means conv {s.conv_bits} / fc {s.fc_bits} bits (linear init, sorted engine), "
        f"fine-tune {s.finetune_epochs} epochs (lr {s.finetune_lr}); index width per layer "
        f"from {INDEX_CANDIDATES.start}..{INDEX_CANDIDATES.stop - 1} (smallest file)"
    )
    print()
    print("| stage | val accuracy | test accuracy |")
    print("|---|---:|---:|")
    for name, (val, test) in accuracy.items():
        print(f"| {name} | {val:.2f}% | {test:.2f}% |")
    print()
    for line in layer_table(file_bytes):
        print(line)
    print()
    dense_bytes = 4 * params
    print(
        f"weights kept: {100 * overall_density(masks):.2f}% of prunable weights "
        f"(conv {100 * min(conv_kept):.1f}-{100 * max(conv_kept):.1f}%, fc "
        f"{100 * kept.get('fc', math.nan):.1f}%)"
    )
    print(
        f"file: {info.file_bytes:,} bytes; file ratio {sizes.file_ratio:.1f}x "
        f"(all {sizes.all_params_dense_bytes:,} bytes of stored tensors as dense float32, "
        f"BatchNorm statistics included / file bytes); parameters only: {params:,} params = "
        f"{dense_bytes:,} bytes dense -> {dense_bytes / info.file_bytes:.1f}x; "
        f"P+Q+H ratio of the coded layers {sizes.pqh_ratio:.1f}x"
    )
    print(
        f"seconds per epoch ({s.train_size} images, training pass only): dense "
        f"{_mean([r.seconds for r in dense_history]):.1f}, masked retraining "
        f"{_mean(retrain_seconds):.1f}, centroid fine-tuning {_mean(finetune_seconds):.1f}"
    )
    print(
        f"encode {encode_seconds:.2f} s (with index-width search), decode from bytes "
        f"{1000 * decode_seconds:.0f} ms; decoded logits equal the in-memory quantized model's "
        f"(val + test, torch.equal): {equal}"
    )
    stages_text = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in walls.items())
    print(f"wall time: {stages_text}; total {time.perf_counter() - started:.0f} s")
    return equal


QUICK = dict(
    train_size=120,
    val_size=60,
    test_size=60,
    epochs=1,
    prune_iterations=1,
    retrain_epochs=1,
    finetune_epochs=1,
    batch_size=30,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Deep Compression of ResNet-18 on generated 32x32 RGB shapes.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--train-size", type=int, default=4000)
    parser.add_argument("--val-size", type=int, default=1000)
    parser.add_argument("--test-size", type=int, default=2000)
    parser.add_argument("--epochs", type=int, default=6, help="dense training epochs")
    parser.add_argument("--prune-iterations", type=int, default=2)
    parser.add_argument("--retrain-epochs", type=int, default=1, help="per pruning iteration")
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.02)
    parser.add_argument("--retrain-lr", type=float, default=0.005)
    parser.add_argument(
        "--finetune-lr",
        type=float,
        default=1e-5,
        help="centroid lr: a centroid's gradient sums those of its weights (up to ~26,000 "
        "per centroid in layer4), so it is far below a weight's lr",
    )
    parser.add_argument("--conv-density", type=float, default=0.3)
    parser.add_argument("--fc-density", type=float, default=0.1)
    parser.add_argument("--conv-bits", type=int, default=5)
    parser.add_argument("--fc-bits", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (CPU)")
    parser.add_argument("--out", type=Path, default=None, help="write the .dcz file here")
    parser.add_argument(
        "--data-out", type=Path, default=None, help="write the prepared data folder here"
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes, one epoch per stage (smoke test)"
    )
    return parser.parse_args(argv)


def settings(args: argparse.Namespace) -> Settings:
    values = {field: getattr(args, field) for field in Settings.__dataclass_fields__}
    if args.quick:
        values.update(QUICK)
    return Settings(**values)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    equal = run(settings(args), device, args.out, args.data_out)
    return 0 if equal else 1


if __name__ == "__main__":
    sys.exit(main())
