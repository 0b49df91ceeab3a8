"""The prepared form every stage reads, for every source but MNIST: a folder holding ``meta.json``
and uint8 IDX files per split, read back as normalised tensors.

    meta.json                 shape, class names, mean/std, sha256 of every file below
    train-images-idx4-ubyte   uint8 (N, C, S, S) training images (the validation split is the
    train-labels-idx1-ubyte   last `val_size` of them unless the source has its own)
    val-images-idx4-ubyte     only when the source has its own validation split
    val-labels-idx1-ubyte
    test-images-idx4-ubyte    read only by the evaluate stage
    test-labels-idx1-ubyte

Loading gives float32 tensors normalised like MNIST's, ``(byte / 255 - mean) / std`` per channel,
identical in every stage; each file is checked against its sha256 in ``meta.json`` first. A split
whose float32 size is over the caller's limit is not read into memory: its images file is mapped
read-only from an open file (``Opener``), checked in chunks, and streamed in batches
(``deepcompression.data.streaming``), normalised per batch by the same function. The loaders take
``read(file name) -> bytes`` and ``open(file name)`` functions, so they know no folder.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch

from deepcompression.data.checksums import verify_sha256
from deepcompression.data.errors import DataError
from deepcompression.data.idx import decode_idx, map_idx
from deepcompression.data.streaming import StreamedImages
from deepcompression.data.tensors import (
    DataShape,
    ImageTensors,
    normalise,
    streams,
    train_and_val,
)

META_FILE = "meta.json"
META_FORMAT = "deepcompression-dataset"
META_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
Reader = Callable[[str], bytes]
"""Returns the bytes of a prepared file given its name (raises OSError when it is missing)."""
Opener = Callable[[str], BinaryIO]
"""Opens a prepared file for binary reading given its name (raises OSError when it is missing):
how the images of a split too large to preload are mapped instead of read."""


def split_files(split: str) -> tuple[str, str]:
    """The prepared (images, labels) file names of a split: train, val or test."""
    return f"{split}-images-idx4-ubyte", f"{split}-labels-idx1-ubyte"


@dataclass(frozen=True)
class DatasetMeta:
    """meta.json of a prepared folder: what the data is and how to read it back identically."""

    name: str
    source: str
    channels: int
    image_size: int
    num_classes: int
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    counts: dict[str, int]
    sha256: dict[str, str]
    inputs: dict[str, str] = field(default_factory=dict)

    @property
    def shape(self) -> DataShape:
        """What a network for this data is built with."""
        return DataShape(self.channels, self.image_size, self.num_classes)

    @property
    def has_val(self) -> bool:
        """Whether the source had its own validation split (else: the last val_size of train)."""
        return "val" in self.counts

    def to_json(self) -> bytes:
        """Deterministic JSON: the same data gives the same bytes."""
        body = {
            "format": META_FORMAT,
            "version": META_VERSION,
            "name": self.name,
            "source": self.source,
            "channels": self.channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "mean": list(self.mean),
            "std": list(self.std),
            "counts": dict(self.counts),
            "sha256": dict(self.sha256),
            "inputs": dict(self.inputs),
        }
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes, where: str) -> DatasetMeta:
        """Parse and check meta.json; anything off is an error naming it."""
        name = f"{where}/{META_FILE}"
        try:
            raw = json.loads(data)
        except (ValueError, UnicodeDecodeError) as exc:
            raise DataError(f"{name}: not valid JSON ({exc}); run the data stage again.") from None
        if not isinstance(raw, dict) or raw.get("format") != META_FORMAT:
            raise DataError(f"{name}: not a prepared-data description; run the data stage again.")
        if raw.get("version") != META_VERSION:
            raise DataError(
                f"{name}: version {raw.get('version')!r}; this code reads version {META_VERSION}. "
                "Run the data stage again."
            )
        try:
            meta = cls(
                name=str(raw["name"]),
                source=str(raw["source"]),
                channels=_positive(raw["channels"]),
                image_size=_positive(raw["image_size"]),
                num_classes=_positive(raw["num_classes"]),
                classes=tuple(str(c) for c in raw["classes"]),
                mean=tuple(float(v) for v in raw["mean"]),
                std=tuple(float(v) for v in raw["std"]),
                counts={str(k): _positive(v) for k, v in raw["counts"].items()},
                sha256={str(k): str(v) for k, v in raw["sha256"].items()},
                inputs={str(k): str(v) for k, v in raw.get("inputs", {}).items()},
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataError(f"{name}: malformed ({exc!r}); run the data stage again.") from None
        if (
            len(meta.mean) != meta.channels
            or len(meta.std) != meta.channels
            or min(meta.std) <= 0
            or len(meta.classes) != meta.num_classes
            or not {"train", "test"} <= set(meta.counts) <= set(SPLITS)
        ):
            raise DataError(f"{name}: inconsistent fields; run the data stage again.")
        return meta


def _positive(value: Any) -> int:
    """An int >= 1 (not a bool), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"expected a whole number >= 1, got {value!r}")
    return value


def read_meta(read: Reader, where: str) -> DatasetMeta:
    """The prepared folder's meta.json, checked."""
    return DatasetMeta.from_json(read(META_FILE), where)


def _read_split(
    read: Reader,
    meta: DatasetMeta,
    split: str,
    where: str,
    open_file: Opener | None = None,
    max_preload_bytes: int | None = None,
) -> tuple[torch.Tensor | StreamedImages, torch.Tensor]:
    """One prepared split as normalised float32 (N, C, S, S) images and int64 labels, checksums
    verified. With `open_file`, images over `max_preload_bytes` as float32 are streamed."""
    images_file, labels_file = split_files(split)
    expected = (meta.counts[split], meta.channels, meta.image_size, meta.image_size)
    x: torch.Tensor | StreamedImages
    if open_file is not None and streams(expected[0], expected[1:], max_preload_bytes):
        with open_file(images_file) as handle:
            rows = map_idx(handle, f"{where}/{images_file}", meta.sha256.get(images_file, ""))
        _check_images(rows, expected, f"{where}/{images_file}")
        x = StreamedImages(rows, functools.partial(normalise, mean=meta.mean, std=meta.std))
    else:
        data = read(images_file)
        verify_sha256(f"{where}/{images_file}", data, meta.sha256.get(images_file, ""))
        images = decode_idx(data)
        _check_images(images, expected, f"{where}/{images_file}")
        x = normalise(torch.from_numpy(images), meta.mean, meta.std)
    data = read(labels_file)
    verify_sha256(f"{where}/{labels_file}", data, meta.sha256.get(labels_file, ""))
    labels = decode_idx(data)
    if labels.shape != (expected[0],) or (labels.size and int(labels.max()) >= meta.num_classes):
        raise DataError(
            f"{where}/{labels_file}: labels do not fit meta.json ({expected[0]} labels "
            f"in 0..{meta.num_classes - 1}). Run the data stage again."
        )
    return x, torch.from_numpy(labels.astype(np.int64))


def _check_images(images: np.ndarray, expected: tuple[int, ...], name: str) -> None:
    """Refuse images that are not the uint8 (N, C, S, S) meta.json describes."""
    if images.dtype != np.uint8 or images.shape != expected:
        raise DataError(
            f"{name}: {images.dtype} {images.shape}; meta.json says uint8 {expected}. Run the "
            "data stage again."
        )


def load_prepared(
    read: Reader,
    val_size: int,
    where: str,
    open_file: Opener | None = None,
    max_preload_bytes: int | None = None,
) -> ImageTensors:
    """Training and validation data of a prepared folder (never its test files): preloaded, or,
    with `open_file`, streamed for a file whose images take over `max_preload_bytes` as float32.

    The validation split is the folder's own when it has one, else the last `val_size` training
    images.
    """
    meta = read_meta(read, where)
    x, labels = _read_split(read, meta, "train", where, open_file, max_preload_bytes)
    if meta.has_val:
        val_x, val_labels = _read_split(read, meta, "val", where, open_file, max_preload_bytes)
        return ImageTensors(x, labels, val_x, val_labels, num_classes=meta.num_classes)
    total = len(labels)
    if not 1 <= val_size < total:
        raise DataError(
            f"data.val_size: {val_size} must leave training images: {where} has {total} "
            f"training images and no validation split of its own (validation = the last "
            f"val_size of them); use 1..{total - 1}."
        )
    return train_and_val(x, labels, val_size, meta.num_classes)


def load_prepared_test(
    read: Reader,
    where: str,
    open_file: Opener | None = None,
    max_preload_bytes: int | None = None,
) -> tuple[torch.Tensor | StreamedImages, torch.Tensor]:
    """The prepared test split, normalised like training (streamed as `load_prepared` streams):
    for the final report only."""
    meta = read_meta(read, where)
    return _read_split(read, meta, "test", where, open_file, max_preload_bytes)
