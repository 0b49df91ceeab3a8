"""Seconds per training epoch with the pinned numerics (deepcompression/numerics.py) beside torch's
defaults, in one run: what identical bytes on every AVX2 CPU cost. Target: pinned <= 1.3x.

    .venv/bin/python -m benchmarks.bench_numerics [--models lenet_300_100 lenet5] [--images 5000]
        [--epochs 6] [--repeats 3] [--pin KEY=VALUE ...] [--threads N] [--mkl-linear]

Each process is fresh (the pinned settings are read when torch loads): one short warm-up epoch,
then `--epochs` timed epochs over `--images` synthetic MNIST-shaped images with the model's
`train` section of params.yaml (batch size, SGD, augmentation). Pinned: ATen AVX2, MKL CBWR,
oneDNN AVX2, `run.threads` torch threads, deterministic algorithms, linear layers through oneDNN
(`pin_torch`); unpinned: none of them (the CPU's widest ISA, threads = cores, MKL's GEMM).
`--pin` replaces a pinned value (another setting to weigh); `--threads` gives both modes that
many threads (the ISA's cost alone); `--mkl-linear` runs the pinned mode's linear layers through
MKL's GEMM on its COMPATIBLE branch (the pinned path before oneDNN's, 1.6-1.8x). Pinned
and unpinned processes alternate, so that machine load affects both alike; the table gives the
best epoch (least disturbed: on a shared machine the median mostly measures the neighbours), the
median, and the CPU seconds of the best (all threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

MODES = ("pinned", "unpinned")
Seconds = list[tuple[float, float]]


def child(mode: str, model_name: str, settings: dict) -> Seconds:
    """In a fresh process: (wall, CPU) seconds of each timed epoch of `model_name` in `mode`;
    `settings`: images, epochs, replaced (pinned values to replace), threads (or None)."""
    if mode == "pinned":
        from deepcompression.numerics import pin_environment

        pin_environment(os.environ)  # before torch loads
        os.environ.update(settings["replaced"])
    import time

    import torch

    from deepcompression.numerics import pin_torch, unpin_linear
    from deepcompression.training import make_optimizer, seed_everything, train_epoch
    from flows.params import read_params
    from models import build_model

    params = read_params("params.yaml")
    if mode == "pinned":
        pin_torch(settings["threads"] or params.run.threads)
        if settings["mkl_linear"]:
            unpin_linear()
    elif settings["threads"]:
        torch.set_num_threads(settings["threads"])
    cfg = params.models[model_name].train
    generator = seed_everything(0)
    images = settings["images"]
    x = torch.randn(images, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (images,), generator=generator)
    model = build_model(model_name)
    optimizer = make_optimizer(model.parameters(), cfg)
    shift = cfg.augment_shift or 0
    train_epoch(model, optimizer, x[:512], y[:512], cfg.batch_size, generator, shift=shift)
    seconds = []
    for _ in range(settings["epochs"]):
        start, cpu = time.perf_counter(), time.process_time()
        train_epoch(model, optimizer, x, y, cfg.batch_size, generator, shift=shift)
        seconds.append((time.perf_counter() - start, time.process_time() - cpu))
    return seconds


def measure(mode: str, model_name: str, settings: dict) -> Seconds:
    """Run `child` in a fresh interpreter (no pinned value inherited); its epochs' seconds."""
    code = (
        "import json\nfrom benchmarks.bench_numerics import child\n"
        f"print(json.dumps(child({mode!r}, {model_name!r}, {settings!r})))"
    )
    from deepcompression.numerics import PINNED_ENV

    env = {k: v for k, v in os.environ.items() if k not in PINNED_ENV}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return [(float(w), float(c)) for w, c in json.loads(done.stdout.strip().splitlines()[-1])]


def table_rows(model_name: str, runs: dict[str, Seconds]) -> list[str]:
    """One Markdown row per mode: best, median, CPU of the best, best against unpinned."""
    base = min(runs["unpinned"])[0]
    rows = []
    for mode in MODES:
        best, cpu = min(runs[mode])
        median = statistics.median(wall for wall, _ in runs[mode])
        ratio = best / base
        rows.append(
            f"| {model_name} | {mode} | {best:.3f} | {median:.3f} | {cpu:.3f} | {ratio:.2f}x |"
        )
    return rows


def main() -> None:
    """Alternate pinned and unpinned processes per model; print a Markdown table."""
    from deepcompression.numerics import PINNED_ENV

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["lenet_300_100", "lenet5"])
    parser.add_argument("--images", type=int, default=5_000)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pin", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--mkl-linear", action="store_true")
    args = parser.parse_args()
    replaced = dict(item.split("=", 1) for item in args.pin)
    settings = {"images": args.images, "epochs": args.epochs, "replaced": replaced}
    settings.update(threads=args.threads, mkl_linear=args.mkl_linear)
    print(
        f"{args.images} images per epoch, {args.epochs} epochs x {args.repeats} processes per "
        f"mode, {os.cpu_count()} CPUs, threads: {args.threads or 'run.threads / torch default'}"
    )
    linear = ", linear layers through MKL's GEMM" if args.mkl_linear else ""
    print(f"pinned: {json.dumps({**PINNED_ENV, **replaced})}{linear}")
    print("| model | mode | best s/epoch | median s/epoch | CPU s of the best | best / unpinned |")
    print("|---|---|---|---|---|---|")
    for model_name in args.models:
        runs: dict[str, Seconds] = {mode: [] for mode in MODES}
        for repeat in range(args.repeats):
            for mode in MODES if repeat % 2 == 0 else MODES[::-1]:
                runs[mode] += measure(mode, model_name, settings)
        print("\n".join(table_rows(model_name, runs)), flush=True)


if __name__ == "__main__":
    main()
