"""Writing the prepared form (see ``deepcompression.data.prepared``): in memory from a
`RawDataset` (`prepare`), or block by block from a `DatasetStream` (`write_prepared`, bounded by
`PREPARE_CHUNK_BYTES` of images, so a split larger than memory can be prepared) - the same bytes
either way. Shapes and labels are checked first; mean/std default to the training images' own.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np

from deepcompression.data.checksums import sha256_hex
from deepcompression.data.errors import DataError
from deepcompression.data.idx import encode_idx, encode_idx_header, idx_body
from deepcompression.data.layout import (
    check_class_count,
    check_in_range,
    check_not_negative,
    shape_text,
)
from deepcompression.data.prepared import META_FILE, DatasetMeta, split_files


@dataclass(frozen=True)
class Split:
    """One split: uint8 (N, C, S, S) images and int64 labels. `images_origin` and `labels_origin`
    name where they came from (a file or a folder) in every error about them."""

    images: np.ndarray
    labels: np.ndarray
    images_origin: str
    labels_origin: str

    def __post_init__(self) -> None:
        if self.images.dtype != np.uint8 or self.images.ndim != 4:
            raise DataError(
                f"{self.images_origin}: images must be uint8 (N, C, S, S); got "
                f"{self.images.dtype} {self.images.shape}."
            )
        if self.labels.shape != (self.images.shape[0],):
            raise DataError(
                f"{self.labels_origin} has {self.labels.shape[0] if self.labels.ndim else 0} "
                f"labels but {self.images_origin} has {self.images.shape[0]} images; expected "
                "one label per image."
            )

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(C, S, S) of every image."""
        return tuple(int(d) for d in self.images.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True)
class RawDataset:
    """Every split of a source, not yet normalised. `classes` names the classes in label order
    (None: 0..K-1 with K from the training labels); `inputs` maps each source file read to its
    sha256 (recorded in meta.json as provenance)."""

    train: Split
    test: Split
    val: Split | None = None
    classes: tuple[str, ...] | None = None
    inputs: dict[str, str] = field(default_factory=dict)

    def splits(self) -> dict[str, Split]:
        """The present splits by name, in SPLITS order."""
        found = {"train": self.train, "val": self.val, "test": self.test}
        return {name: split for name, split in found.items() if split is not None}


def num_classes(raw: RawDataset) -> int:
    """The class count (from `classes`, else the largest training label + 1), every split's
    labels checked against it; an error names the file, the position and the expected range."""
    derived = raw.classes is None
    k = int(raw.train.labels.max()) + 1 if derived else len(raw.classes or ())
    check_class_count(k, raw.train.labels_origin)
    for split in raw.splits().values():
        check_in_range(split.labels, 0, k, derived, split.labels_origin)
    return k


def image_shape(raw: RawDataset) -> tuple[int, int, int]:
    """(C, S, S) shared by every split; a split of another shape is an error naming it."""
    expected = raw.train.image_shape
    for split in raw.splits().values():
        if split.image_shape != expected:
            raise DataError(
                f"{split.images_origin}: images are {shape_text(split.image_shape)}; expected "
                f"{shape_text(expected)} like the training images ({raw.train.images_origin})."
            )
    return expected


class ChannelStats:
    """Per-channel byte histograms of uint8 (N, C, S, S) images, added block by block: the
    exact (mean, std) of everything added, whatever the blocks, kept in integers until `result`."""

    def __init__(self, channels: int) -> None:
        self.counts = np.zeros((channels, 256), dtype=np.int64)

    def add(self, images: np.ndarray) -> None:
        """Count the bytes of a uint8 (b, C, S, S) block."""
        for c in range(self.counts.shape[0]):
            self.counts[c] += np.bincount(images[:, c].ravel(), minlength=256)

    def result(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel on the [0, 1] scale (population std), one division each."""
        values = np.arange(256, dtype=np.float64)
        means, stds = [], []
        for counts in self.counts:
            total = int(counts.sum())
            mean = float((counts * values).sum()) / (255.0 * total)
            square = float((counts * values**2).sum()) / (255.0**2 * total)
            means.append(mean)
            stds.append(math.sqrt(max(square - mean * mean, 0.0)))
        return tuple(means), tuple(stds)


def channel_stats(images: np.ndarray, chunk: int = 4096) -> tuple[tuple[float, ...], ...]:
    """(mean, std) per channel of uint8 (N, C, S, S) images on the [0, 1] scale (population std).

    Exact and deterministic: per-channel byte histograms summed in integers, then one division.
    """
    stats = ChannelStats(images.shape[1])
    for start in range(0, images.shape[0], chunk):
        stats.add(images[start : start + chunk])
    return stats.result()


def prepare(
    raw: RawDataset,
    *,
    name: str,
    source: str,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> tuple[dict[str, bytes], DatasetMeta]:
    """The prepared folder's files {file name: bytes} (meta.json included) and its meta.

    Checks every split's shape and labels first; `mean`/`std` (per channel, on the [0, 1] scale)
    default to the training images' own. Raises DataError naming the split's file or folder.
    """
    shape = image_shape(raw)
    k = num_classes(raw)
    if mean is None or std is None:
        mean, std = _own_stats(channel_stats(raw.train.images), raw.train.images_origin)
    _check_stats(mean, std, shape[0], raw.train.images_origin)
    label_dtype = labels_dtype(k)
    files: dict[str, bytes] = {}
    counts: dict[str, int] = {}
    for split_name, split in raw.splits().items():
        images_file, labels_file = split_files(split_name)
        files[images_file] = encode_idx(split.images)
        files[labels_file] = encode_idx(split.labels.astype(label_dtype))
        counts[split_name] = int(split.images.shape[0])
    sha256 = {file: sha256_hex(data) for file, data in files.items()}
    meta = _meta(name, source, shape, raw.classes, k, (mean, std), counts, sha256, raw.inputs)
    files[META_FILE] = meta.to_json()
    return files, meta


def labels_dtype(k: int) -> type[np.integer]:
    """How the prepared labels of `k` classes are stored: one byte up to 256 classes."""
    return np.uint8 if k <= 256 else np.int32


def _own_stats(
    stats: tuple[tuple[float, ...], tuple[float, ...]], origin: str
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The training images' own (mean, std); a constant channel (std 0) is an error."""
    constant = [c for c, s in enumerate(stats[1]) if s == 0.0]
    if constant:
        raise DataError(
            f"{origin}: channel {constant[0]} is the same value in every image (std 0); set "
            "data.mean and data.std."
        )
    return stats


def _check_stats(mean: Sequence[float], std: Sequence[float], channels: int, origin: str) -> None:
    """Refuse a mean/std that does not give one value per channel."""
    if len(mean) != channels or len(std) != channels:
        raise DataError(
            f"{origin}: the images have {channels} channel(s) but data.mean/data.std give "
            f"{len(mean)}; give one value per channel."
        )


def _meta(
    name: str,
    source: str,
    shape: tuple[int, int, int],
    classes: tuple[str, ...] | None,
    k: int,
    stats: tuple[Sequence[float], Sequence[float]],
    counts: dict[str, int],
    sha256: dict[str, str],
    inputs: Mapping[str, str],
) -> DatasetMeta:
    """meta.json's content; classes None are named 0..k-1."""
    return DatasetMeta(
        name=name,
        source=source,
        channels=shape[0],
        image_size=shape[1],
        num_classes=k,
        classes=tuple(classes) if classes is not None else tuple(str(i) for i in range(k)),
        mean=tuple(float(v) for v in stats[0]),
        std=tuple(float(v) for v in stats[1]),
        counts=counts,
        sha256=sha256,
        inputs=dict(inputs),
    )


PREPARE_CHUNK_BYTES = 1 << 23
"""Image bytes the data stage decodes, checks and writes at once (8 MiB): what it holds of a
split, whatever the split's size."""
Blocks = Callable[[], Iterator[np.ndarray]]
"""A fresh pass over a split's rows in order, one bounded block at a time."""
Creator = Callable[[str], BinaryIO]
"""Creates a prepared file for binary writing given its name (the caller picks the folder)."""


def chunk_rows(shape: Sequence[int], chunk_bytes: int = PREPARE_CHUNK_BYTES) -> int:
    """How many uint8 images of `shape` (C, S, S) make one block of at most `chunk_bytes` (>= 1)."""
    return max(1, chunk_bytes // math.prod(shape))


@dataclass(frozen=True)
class SplitStream:
    """One split read block by block: `count` uint8 images of `shape` (C, S, S). `images()`
    yields uint8 (b, C, S, S) blocks, `labels()` integer (b,) blocks, both in order, each call a
    new pass; `images_origin` and `labels_origin` name the source in every error."""

    count: int
    shape: tuple[int, int, int]
    images: Blocks
    labels: Blocks
    images_origin: str
    labels_origin: str


@dataclass(frozen=True)
class DatasetStream:
    """Every split of a source as `SplitStream`s; `classes` and `inputs` as in `RawDataset`."""

    train: SplitStream
    test: SplitStream
    val: SplitStream | None = None
    classes: tuple[str, ...] | None = None
    inputs: dict[str, str] = field(default_factory=dict)

    def splits(self) -> dict[str, SplitStream]:
        """The present splits by name, in SPLITS order."""
        found = {"train": self.train, "val": self.val, "test": self.test}
        return {name: split for name, split in found.items() if split is not None}


def write_prepared(
    data: DatasetStream,
    create: Creator,
    *,
    name: str,
    source: str,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> DatasetMeta:
    """Write the prepared files (meta.json last) through `create`, one block at a time, and
    return the meta: the same bytes `prepare` gives for the same data, in memory bounded by the
    sources' block size.

    Shapes and every label are checked before any image is read; the training images' mean/std
    are accumulated while they are written, each file hashed as it is written. Raises DataError
    naming the split's file or folder; what was written by then is the caller's to discard.
    """
    expected = data.train.shape
    for split in data.splits().values():
        if split.shape != expected:
            raise DataError(
                f"{split.images_origin}: images are {shape_text(split.shape)}; expected "
                f"{shape_text(expected)} like the training images ({data.train.images_origin})."
            )
    k = _stream_classes(data)
    if mean is not None and std is not None:
        _check_stats(mean, std, expected[0], data.train.images_origin)
    sha256: dict[str, str] = {}
    for split_name, split in data.splits().items():
        labels_file = split_files(split_name)[1]
        sha256[labels_file] = _write_labels(create(labels_file), split, k, data.classes is None)
    stats = ChannelStats(expected[0]) if mean is None or std is None else None
    for split_name, split in data.splits().items():
        images_file = split_files(split_name)[0]
        counter = stats if split_name == "train" else None
        sha256[images_file] = _write_images(create(images_file), split, counter)
    if stats is not None:
        mean, std = _own_stats(stats.result(), data.train.images_origin)
    counts = {split_name: split.count for split_name, split in data.splits().items()}
    normal = (mean, std)
    meta = _meta(name, source, expected, data.classes, k, normal, counts, sha256, data.inputs)
    with create(META_FILE) as handle:
        handle.write(meta.to_json())
    return meta


def _stream_classes(data: DatasetStream) -> int:
    """The class count as `num_classes` gives it, from one pass over every split's labels: each
    file's count and signs checked (the upper bound is checked as the labels are written)."""
    largest = -1
    for split_name, split in data.splits().items():
        found = 0
        for block in split.labels():
            check_not_negative(block, found, split.labels_origin)
            if split_name == "train" and block.size:
                largest = max(largest, int(block.max()))
            found += len(block)
        if found != split.count:
            raise DataError(
                f"{split.labels_origin} has {found} labels but {split.images_origin} has "
                f"{split.count} images; expected one label per image."
            )
    derived = data.classes is None
    k = largest + 1 if derived else len(data.classes or ())
    check_class_count(k, data.train.labels_origin)
    return k


class _HashingWriter:
    """Writes to an open binary file, hashing the bytes on the way."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle = handle
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> None:
        """Write and hash `data`."""
        self.digest.update(data)
        self.handle.write(data)


def _write_labels(handle: BinaryIO, split: SplitStream, k: int, derived: bool) -> str:
    """A split's labels file, every label checked to be in 0..k-1; returns its sha256."""
    dtype = np.dtype(labels_dtype(k))
    with handle:
        out = _HashingWriter(handle)
        out.write(encode_idx_header(dtype, (split.count,)))
        done = 0
        for block in split.labels():
            check_in_range(block, done, k, derived, split.labels_origin)
            out.write(idx_body(block.astype(dtype)))
            done += len(block)
    return out.digest.hexdigest()


def _write_images(handle: BinaryIO, split: SplitStream, stats: ChannelStats | None) -> str:
    """A split's images file, each block checked against the split's shape and added to `stats`
    when given; returns its sha256."""
    with handle:
        out = _HashingWriter(handle)
        out.write(encode_idx_header(np.dtype(np.uint8), (split.count, *split.shape)))
        done = 0
        for block in split.images():
            if block.dtype != np.uint8 or tuple(block.shape[1:]) != split.shape:
                raise DataError(
                    f"{split.images_origin}: images {done}.. are {block.dtype} "
                    f"{tuple(block.shape[1:])}; expected uint8 {split.shape}."
                )
            done += len(block)
            if done > split.count:
                break
            if stats is not None:
                stats.add(block)
            out.write(idx_body(block))
    if done != split.count:
        raise DataError(
            f"{split.images_origin}: gave {done} images while being written; expected "
            f"{split.count} (did the source change while it was read?)."
        )
    return out.digest.hexdigest()
