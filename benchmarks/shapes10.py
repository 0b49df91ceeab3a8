"""shapes-10, the generated dataset of benchmarks.bench_resnet: 10 classes of coloured shapes and
gratings (``CLASSES``) drawn at a random position, size, rotation, foreground/background colour and
contrast, on a smooth random background gradient, with Gaussian pixel noise; 32x32 RGB, uint8,
deterministic from a seed. Written in the prepared form (``deepcompression.data.prepared``) and
loaded back exactly as the pipeline loads it."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from deepcompression.data.prepared import load_prepared, load_prepared_test
from deepcompression.data.tensors import ImageTensors
from deepcompression.data.writer import RawDataset, Split, prepare

SIDE, CHANNELS = 32, 3
CLASSES: tuple[str, ...] = (
    "horizontal grating",
    "vertical grating",
    "diagonal grating",
    "checkerboard",
    "disc",
    "ring",
    "square",
    "plus",
    "triangle",
    "x-cross",
)
DATASET = "shapes-10"


def _uniform(rng: np.random.Generator, low: float, high: float, n: int) -> np.ndarray:
    return rng.uniform(low, high, n)[:, None, None]


def _shape_masks(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Foreground coverage in [0, 1], (N, S, S), of each sample's class, anti-aliased."""
    n = len(labels)
    axis = (np.arange(SIDE) + 0.5) / SIDE * 2.0 - 1.0  # pixel centres in [-1, 1]
    y, x = np.meshgrid(axis, axis, indexing="ij")
    pixel = 2.0 / SIDE
    cx, cy = _uniform(rng, -0.3, 0.3, n), _uniform(rng, -0.3, 0.3, n)
    size = _uniform(rng, 0.4, 0.75, n)
    turn = _uniform(rng, -np.pi / 9, np.pi / 9, n)  # +-20 degrees
    u = (x - cx) * np.cos(turn) + (y - cy) * np.sin(turn)
    v = -(x - cx) * np.sin(turn) + (y - cy) * np.cos(turn)
    freq = _uniform(rng, 2.0, 4.0, n) * np.pi  # 2-4 cycles across the image
    phase = _uniform(rng, 0.0, 2 * np.pi, n)
    width = size * _uniform(rng, 0.25, 0.4, n)

    def solid(distance: np.ndarray) -> np.ndarray:  # signed distance -> coverage
        return np.clip(0.5 - distance / pixel, 0.0, 1.0)

    def grating(along: np.ndarray) -> np.ndarray:
        return 0.5 + 0.5 * np.tanh(3.0 * np.sin(freq * along + phase))

    def plus(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        bars = np.minimum(
            np.maximum(np.abs(a) - width / 2, np.abs(b) - size),
            np.maximum(np.abs(a) - size, np.abs(b) - width / 2),
        )
        return solid(bars)

    radius = np.hypot(u, v)
    corners = [turn + k * 2 * np.pi / 3 - np.pi / 2 for k in range(3)]
    triangle = (
        np.max([(x - cx) * np.cos(a) + (y - cy) * np.sin(a) for a in corners], axis=0) - size / 2
    )
    diagonal = (u + v) / np.sqrt(2.0)
    anti = (u - v) / np.sqrt(2.0)
    builders: dict[int, Callable[[], np.ndarray]] = {
        0: lambda: grating(v),
        1: lambda: grating(u),
        2: lambda: grating(diagonal),
        3: lambda: 0.5 + 0.5 * np.tanh(3.0 * np.sin(freq * u + phase) * np.sin(freq * v)),
        4: lambda: solid(radius - size),
        5: lambda: solid(np.abs(radius - size) - width / 2),
        6: lambda: solid(np.maximum(np.abs(u), np.abs(v)) - size * 0.8),
        7: lambda: plus(u, v),
        8: lambda: solid(triangle),
        9: lambda: plus(diagonal, anti),
    }
    masks = np.empty((n, SIDE, SIDE))
    for label, build in builders.items():
        rows = labels == label
        if rows.any():
            masks[rows] = build()[rows]
    return masks


def synthetic_split(count: int, seed: int, origin: str) -> Split:
    """``count`` balanced, shuffled samples of shapes-10 from ``seed``: uint8 (N, 3, 32, 32)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(count, dtype=np.int64) % len(CLASSES)
    rng.shuffle(labels)
    coverage = _shape_masks(labels, rng)[:, None]  # (N, 1, S, S)
    background = rng.uniform(0.0, 1.0, (count, CHANNELS, 1, 1))
    foreground = rng.uniform(0.0, 1.0, (count, CHANNELS, 1, 1))
    close = np.linalg.norm(foreground - background, axis=1, keepdims=True) < 0.6
    foreground = np.where(close, 1.0 - background, foreground)  # keep the shape visible
    contrast = rng.uniform(0.6, 1.0, (count, 1, 1, 1))
    foreground = background + contrast * (foreground - background)
    axis = np.linspace(-1.0, 1.0, SIDE)
    gx, gy = np.meshgrid(axis, axis, indexing="xy")
    slope = rng.uniform(-0.2, 0.2, (count, CHANNELS, 2, 1, 1))
    gradient = slope[:, :, 0] * gx + slope[:, :, 1] * gy  # a smooth coloured background tilt
    image = background + gradient + coverage * (foreground - background)
    image += rng.normal(0.0, 1.0, image.shape) * rng.uniform(0.03, 0.12, (count, 1, 1, 1))
    pixels = np.clip(np.rint(image * 255.0), 0, 255).astype(np.uint8)
    return Split(pixels, labels, f"{origin} images", f"{origin} labels")


def dataset_files(
    train: int, val: int, test: int, seed: int
) -> tuple[dict[str, bytes], ImageTensors, tuple[torch.Tensor, torch.Tensor]]:
    """The prepared folder's files, its train/val tensors and its test tensors, as the pipeline
    writes and reads them (``prepare``, ``load_prepared``, ``load_prepared_test``)."""
    raw = RawDataset(
        train=synthetic_split(train, seed, "train"),
        val=synthetic_split(val, seed + 1, "val"),
        test=synthetic_split(test, seed + 2, "test"),
        classes=CLASSES,
    )
    files, _ = prepare(raw, name=DATASET, source="generated")
    read = files.__getitem__
    return files, load_prepared(read, val, DATASET), load_prepared_test(read, DATASET)
