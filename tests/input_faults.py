"""Tiny input data and the faults a user's inputs can have, for the input-check tests: an image
folder of 8x8 grey PNGs, an IDX folder, and params.yaml sections that read them."""

from __future__ import annotations

import io
import shutil
import struct
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).parents[1]
MODEL = "lenet_300_100"
SIDE = 8
CLASSES = ("a", "b")


def _png(seed: int, side: int = SIDE) -> bytes:
    """A side x side grey PNG of seeded noise."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(out, format="PNG")
    return out.getvalue()


def image_folder(folder: Path, per_class: dict[str, int] | None = None) -> Path:
    """train/ (6 images per class) and test/ (2 per class) of 8x8 grey PNGs under `folder`."""
    counts = per_class or {"train": 6, "test": 2}
    for s, (split, count) in enumerate(counts.items()):
        for k, name in enumerate(CLASSES):
            (folder / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed = 1000 * s + 100 * k + i
                (folder / split / name / f"{i}.png").write_bytes(_png(seed))
    return folder


def with_fault(good: Path, dest: Path, fault: str) -> Path:
    """A copy of the image folder `good` at `dest` with one fault: `empty_class` (train/b holds
    no image), `odd_size` (one 9x9 image among 8x8 ones) or `corrupt_png` (a truncated PNG)."""
    shutil.copytree(good, dest)
    if fault == "empty_class":
        for path in (dest / "train" / "b").iterdir():
            path.unlink()
    elif fault == "odd_size":
        (dest / "train" / "b" / "3.png").write_bytes(_png(99, SIDE + 1))
    elif fault == "corrupt_png":
        (dest / "test" / "a" / "1.png").write_bytes(_png(7)[:40])
    else:
        raise ValueError(f"unknown fault {fault!r}")
    return dest


def idx_folder(folder: Path) -> Path:
    """The four IDX files of a 12-image training split and a 4-image test split (8x8, 2 classes)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 12), ("t10k", 4)):
        images = rng.integers(0, 256, (count, SIDE, SIDE), dtype=np.uint8)
        labels = (np.arange(count) % 2).astype(np.uint8)
        header = struct.pack(">IIII", 0x803, count, SIDE, SIDE)
        (folder / f"{prefix}-images-idx3-ubyte").write_bytes(header + images.tobytes())
        (folder / f"{prefix}-labels-idx1-ubyte").write_bytes(
            struct.pack(">II", 0x801, count) + labels.tobytes()
        )
    return folder


def small_params(images: Path) -> dict:
    """params.yaml with the image folder as data and one quick model on the hand tables."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(
        source="imagefolder",
        name="tiny",
        local_dir=str(images),
        mean=[0.5],
        std=[0.25],
        val_size=4,
    )
    section = raw["models"][MODEL]
    section["allocation"] = "params"
    section["train"]["epochs"] = 1
    raw["models"] = {MODEL: section}
    return raw


def state_dict_file(path: Path, model: str, *, num_classes: int = 2, whole: bool = False) -> Path:
    """A torch.save file of `model` built for 1x8x8 inputs (lenet5: its MNIST defaults): its
    state_dict, or the whole pickled module with `whole`."""
    import torch

    from models import build_model

    kwargs = {} if model == "lenet5" else {"in_channels": 1, "image_size": SIDE}
    net = build_model(model, num_classes=num_classes, **kwargs)
    torch.save(net if whole else net.state_dict(), path)
    return path
