"""What the data stage holds in memory: peak Python/numpy allocations (tracemalloc) and seconds
while it prepares generated datasets of growing size, each in a fresh process. The prepared
files are written block by block (`PREPARE_CHUNK_BYTES` of images), so the peak should stay flat
while the dataset grows.

Run from the repository root (writes its data under a temporary folder, nothing in the project):
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.bench_prepare_memory [--idx 10000 80000]
        [--pngs 1000 4000] [--chunk-bytes N]
IDX: 3x32x32 RGB images (3,072 bytes each) in a plain IDX folder, own mean/std. PNG: 3x32x32
images in an image folder of 3 classes (ImageFolder's list of files grows with it).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

import numpy as np
import yaml

from deepcompression.config import DataConfig
from deepcompression.data.idx import encode_idx
from deepcompression.schema import from_dict
from flows.params import DEFAULT_PARAMS

SIDE = 32
CLASSES = 3


def write_idx(folder: Path, n_train: int, n_test: int) -> None:
    """A plain IDX folder of n_train + n_test random 3 x SIDE x SIDE images, written in pieces."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        header = encode_idx(np.zeros((0, 3, SIDE, SIDE), dtype=np.uint8))
        with open(folder / f"{prefix}-images-idx4-ubyte", "wb") as handle:
            handle.write(header[:4] + n.to_bytes(4, "big") + header[8:])
            for start in range(0, n, 4096):
                count = min(4096, n - start)
                handle.write(rng.integers(0, 256, (count, 3, SIDE, SIDE), dtype=np.uint8).tobytes())
        labels = (np.arange(n) % CLASSES).astype(np.uint8)
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(encode_idx(labels))


def write_pngs(folder: Path, n_train: int, n_test: int) -> None:
    """An image folder (train/, test/, 3 class folders) of random SIDE x SIDE RGB PNGs."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            path = folder / split / f"c{i % CLASSES}" / f"{i:07d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
            Image.fromarray(pixels, "RGB").save(path)


def config(source: str, folder: Path) -> DataConfig:
    """The shipped data section for `source` reading `folder`."""
    raw = dict(yaml.safe_load(DEFAULT_PARAMS.read_text())["data"])
    raw.update(source=source, name="bench", local_dir=str(folder), val_size=100)
    if source == "imagefolder":
        raw.update(mean=[0.5] * 3, std=[0.25] * 3)
    cfg = from_dict(DataConfig, raw, "data")
    cfg.validate("data")
    return cfg


def measure(source: str, count: int, chunk_bytes: int | None) -> dict[str, float]:
    """Peak traced bytes and seconds of the data stage's task on a fresh dataset of `count`
    training images (and count // 10 test images), `chunk_bytes` of images per block (None: the
    stage's own)."""
    import torchvision.datasets  # noqa: F401  (imported before tracing: its import is not data)

    import deepcompression.data.preparation
    from tasks.data import prepare_data

    if chunk_bytes is not None:
        deepcompression.data.preparation.PREPARE_CHUNK_BYTES = chunk_bytes

    with tempfile.TemporaryDirectory(prefix="bench-prepare-") as tmp:
        folder = Path(tmp) / "source"
        (write_idx if source == "idx" else write_pngs)(folder, count, count // 10)
        cfg = config(source, folder)
        tracemalloc.start()
        start = time.perf_counter()
        prepare_data.fn(cfg, Path(tmp) / "data" / "bench", Path(tmp), Path(tmp))
        seconds = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"peak_mb": peak / 1e6, "seconds": seconds, "images_mb": count * 3 * SIDE**2 / 1e6}


def main() -> None:
    """Measure each size in its own process and print a Markdown table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--idx", type=int, nargs="*", default=[10_000, 80_000])
    parser.add_argument("--pngs", type=int, nargs="*", default=[1_000, 4_000])
    parser.add_argument("--chunk-bytes", type=int, help="block size (default: the stage's)")
    parser.add_argument("--one", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print(json.dumps(measure(args.one[0], int(args.one[1]), args.chunk_bytes)))
        return
    print("| source | training images | their bytes (MB) | peak traced (MB) | seconds |")
    print("|---|---|---|---|---|")
    for source, counts in (("idx", args.idx), ("imagefolder", args.pngs)):
        for count in counts:
            command = [sys.executable, "-m", "benchmarks.bench_prepare_memory"]
            if args.chunk_bytes is not None:
                command += ["--chunk-bytes", str(args.chunk_bytes)]
            command += ["--one", source, str(count)]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                raise SystemExit(done.stderr)
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(
                f"| {source} | {count:,} | {row['images_mb']:.1f} | {row['peak_mb']:.2f} | "
                f"{row['seconds']:.1f} |"
            )


if __name__ == "__main__":
    main()
