"""Source ``imagefolder``: train/ and test/ (optionally val/), one subfolder of images per class,
read with torchvision's ImageFolder a bounded block at a time."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from deepcompression.data.errors import DataError
from deepcompression.data.files import hash_file
from deepcompression.data.images import ImageReader
from deepcompression.data.writer import (
    PREPARE_CHUNK_BYTES,
    DatasetStream,
    SplitStream,
    chunk_rows,
)


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class subfolders of a split folder."""
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


def _image_split(
    dataset: Any, split_dir: Path, reader: ImageReader, mix: bool, chunk_bytes: int
) -> tuple[SplitStream, str]:
    """An ImageFolder split, decoded `chunk_bytes` of images at a time, and a digest of its files
    (relative path and sha256 of each). With `mix`, the images are put in the order of the
    sha256 of their relative paths: fixed, but classes mixed (ImageFolder lists them class by
    class), so that the last `val_size` of them are a sample of every class."""
    count = len(dataset.samples)
    relative = [Path(path).relative_to(split_dir).as_posix() for path, _ in dataset.samples]
    order = list(range(count))
    if mix:
        order.sort(key=lambda i: hashlib.sha256(relative[i].encode()).digest())
    digest = hashlib.sha256()
    for i in order:
        digest.update(relative[i].encode() + b"\0")
        digest.update(bytes.fromhex(hash_file(Path(dataset.samples[i][0]))))
    shape = (reader.channels, reader.image_size or 0, reader.image_size or 0)
    rows = chunk_rows(shape, chunk_bytes)

    def images() -> Iterator[np.ndarray]:
        for start in range(0, count, rows):
            part = order[start : start + rows]
            block = np.empty((len(part), *shape), dtype=np.uint8)
            for j, i in enumerate(part):
                block[j] = dataset[i][0]
            yield block

    def labels() -> Iterator[np.ndarray]:
        for start in range(0, count, rows):
            part = order[start : start + rows]
            yield np.array([dataset.samples[i][1] for i in part], dtype=np.int64)

    origin = str(split_dir)
    return SplitStream(count, shape, images, labels, origin, origin), digest.hexdigest()


def _common_size(paths: list[str]) -> int:
    """The side S shared by every image (read from the files' headers only); images of several
    sizes, or not square, are an error naming a file that differs from most of them."""
    from PIL import Image

    sizes: dict[tuple[int, int], list[str]] = {}
    for path in paths:
        try:
            with Image.open(path) as image:
                sizes.setdefault(image.size, []).append(path)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
            raise DataError(
                f"{path}: not a readable image ({type(exc).__name__}: {exc}); replace or remove it."
            ) from None
    common = max(sizes, key=lambda size: len(sizes[size]))
    width, height = common
    if len(sizes) > 1:
        odd = min((s for s in sizes if s != common), key=lambda s: len(sizes[s]))
        raise DataError(
            f"{sizes[odd][0]}: is {odd[0]}x{odd[1]} pixels, but {len(sizes[common])} images are "
            f"{width}x{height} (e.g. {sizes[common][0]}); set data.image_size to resize every "
            "image to one size."
        )
    if width != height:
        raise DataError(
            f"{sizes[common][0]}: images are {width}x{height} pixels, not square; set "
            "data.image_size to resize every image to image_size x image_size."
        )
    return width


def read_image_folder(
    folder: Path, channels: int, image_size: int | None, chunk_bytes: int = PREPARE_CHUNK_BYTES
) -> DatasetStream:
    """Every split of an image folder (train/ and test/, optionally val/, each with the same
    class subfolders), read with torchvision's ImageFolder `chunk_bytes` of images at a time:
    grey (channels 1) or RGB (3), resized to image_size when given. A missing split, an empty
    class folder, an unreadable image or a size mismatch is an error naming the folder or file."""
    from torchvision.datasets import ImageFolder  # costs seconds: only this source needs it
    from torchvision.datasets.folder import IMG_EXTENSIONS

    folder = Path(folder)
    layout = "train/ and test/ (optionally val/), each with one subfolder of images per class"
    if not folder.is_dir():
        raise DataError(f"data.local_dir {folder} is not a folder; expected {layout}.")
    present = [s for s in ("train", "val", "test") if (folder / s).is_dir()]
    missing = [s for s in ("train", "test") if s not in present]
    if missing:
        raise DataError(f"{folder} lacks {', '.join(f'{s}/' for s in missing)}; expected {layout}.")
    classes = _class_folders(folder / "train")
    if not classes:
        raise DataError(f"{folder / 'train'} holds no class folders; expected {layout}.")
    datasets = {}
    for split in present:
        split_dir = folder / split
        found = _class_folders(split_dir)
        if found != classes:
            extra = sorted(set(found) - set(classes))
            lacking = sorted(set(classes) - set(found))
            raise DataError(
                f"{split_dir} has other class folders than {folder / 'train'}: "
                + "; ".join(
                    part
                    for part in (
                        f"missing {', '.join(lacking)}" if lacking else "",
                        f"extra {', '.join(extra)}" if extra else "",
                    )
                    if part
                )
                + ". Every split needs the same class folders."
            )
        reader = ImageReader(channels, image_size)
        dataset = ImageFolder(str(split_dir), loader=reader, allow_empty=True)
        per_class = np.bincount([t for _, t in dataset.samples], minlength=len(classes))
        empty = [dataset.classes[i] for i in np.flatnonzero(per_class == 0)]
        if empty:
            raise DataError(
                f"{split_dir / empty[0]} holds no image files ({', '.join(IMG_EXTENSIONS)}); every "
                "class folder needs at least one image."
            )
        datasets[split] = (dataset, reader)
    if image_size is None:
        size = _common_size([path for d, _ in datasets.values() for path, _ in d.samples])
        for _, reader in datasets.values():
            reader.image_size = size
    splits: dict[str, SplitStream] = {}
    inputs: dict[str, str] = {}
    for split, (dataset, reader) in datasets.items():
        splits[split], inputs[f"{split}/"] = _image_split(
            dataset, folder / split, reader, split == "train", chunk_bytes
        )
    return DatasetStream(
        train=splits["train"],
        val=splits.get("val"),
        test=splits["test"],
        classes=tuple(classes),
        inputs=inputs,
    )
