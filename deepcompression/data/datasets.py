"""Any image-classification data as checked bytes and tensors: IDX files of any image shape,
decoded image files, per-channel normalisation, and the prepared form every stage reads.

Pure functions only: bytes, arrays and tensors in and out. File and network I/O lives in
``tasks/data.py``; the loaders here take a ``read(file name) -> bytes`` function.

The prepared form is what the data stage writes to ``data/<name>/`` for every source but MNIST
(which keeps its four original IDX files under ``data/<name>/raw``)::

    meta.json                 shape, class names, mean/std, sha256 of every file below
    train-images-idx4-ubyte   uint8 (N, C, S, S) training images (the validation split is the
    train-labels-idx1-ubyte   last `val_size` of them unless the source has its own)
    val-images-idx4-ubyte     only when the source has its own validation split
    val-labels-idx1-ubyte
    test-images-idx4-ubyte    read only by the evaluate stage
    test-labels-idx1-ubyte

The data stage writes these files with `write_prepared`, from a `DatasetStream` read a bounded
block at a time (`PREPARE_CHUNK_BYTES` of images), so a split larger than memory can be prepared;
the bytes are those `prepare` gives for the same data in memory.

Loading gives float32 tensors normalised like MNIST's, ``(byte / 255 - mean) / std`` per channel,
identical in every stage; each file is checked against its sha256 in ``meta.json`` first. A split
whose float32 size is over the caller's limit is not read into memory: its images file is mapped
read-only from an open file (``Opener``), checked in chunks, and streamed in batches
(``deepcompression.data.streaming``), normalised per batch by the same function.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch

from deepcompression.data.mnist import (
    ChecksumError,
    DataError,
    DataShape,
    ImageTensors,
    decode_idx,
    encode_idx,
    encode_idx_header,
    idx_body,
    map_idx,
    sha256_hex,
    split_indices,
    verify_sha256,
)
from deepcompression.data.streaming import StreamedImages

META_FILE = "meta.json"
META_FORMAT = "deepcompression-dataset"
META_VERSION = 1
SPLITS: tuple[str, ...] = ("train", "val", "test")
MAX_CLASSES = 1 << 20
FLOAT32_BYTES = 4

Reader = Callable[[str], bytes]
"""Returns the bytes of a prepared file given its name (raises OSError when it is missing)."""

Opener = Callable[[str], BinaryIO]
"""Opens a prepared file for binary reading given its name (raises OSError when it is missing):
how the images of a split too large to preload are mapped instead of read."""


def split_files(split: str) -> tuple[str, str]:
    """The prepared (images, labels) file names of a split: train, val or test."""
    return f"{split}-images-idx4-ubyte", f"{split}-labels-idx1-ubyte"


# ---- splits as uint8 arrays ----------------------------------------------------------------------


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


def images_from_idx(array: np.ndarray, name: str) -> np.ndarray:
    """uint8 (N, C, S, S) images from a decoded IDX images file, as `idx_image_layout` reads it."""
    _, transpose = idx_image_layout(array.dtype, array.shape, name)
    return np.ascontiguousarray(as_channels_first(array, transpose))


def idx_image_layout(
    dtype: np.dtype, shape: Sequence[int], name: str
) -> tuple[tuple[int, int, int], bool]:
    """(C, S, S) of the images in an IDX images file of `dtype` and `shape`, and whether its
    rows are (H, W, C) and need `as_channels_first` to transpose them.

    3 dims are (N, H, W) grey images; 4 dims are (N, C, H, W), or (N, H, W, C) when only that
    reading gives square images. Images must be square: the models take S x S inputs.
    """
    shape = tuple(int(d) for d in shape)
    if dtype != np.uint8:
        raise DataError(
            f"{name}: images must be unsigned bytes (IDX type 0x08, pixels 0..255); found {dtype}."
        )
    transpose = False
    if len(shape) == 3:
        n, c, height, width = shape[0], 1, shape[1], shape[2]
    elif len(shape) == 4:
        n, c, height, width = shape
        if height != width and c == height:
            transpose = True
            c, height, width = shape[3], shape[1], shape[2]
    else:
        raise DataError(
            f"{name}: images must have 3 dims (N, H, W) or 4 (N, C, H, W) / (N, H, W, C); "
            f"found shape {shape}."
        )
    reordered = (n, c, height, width)
    if height != width:
        raise DataError(
            f"{name}: images are {height}x{width} pixels (shape {reordered}); expected square "
            "images S x S (the models take square inputs)."
        )
    if n == 0 or height == 0:
        raise DataError(f"{name}: holds no images (shape {reordered}).")
    return (c, height, width), transpose


def as_channels_first(rows: np.ndarray, transpose: bool) -> np.ndarray:
    """IDX image rows as (b, C, S, S): grey (b, S, S) rows get a channel axis, (b, S, S, C) rows
    are transposed when `transpose` (see `idx_image_layout`)."""
    if rows.ndim == 3:
        return rows[:, None]
    return rows.transpose(0, 3, 1, 2) if transpose else rows


def labels_from_idx(array: np.ndarray, name: str) -> np.ndarray:
    """int64 labels from a decoded IDX labels file: a 1-D array of integers >= 0."""
    check_label_layout(array.dtype, array.shape, name)
    labels = array.astype(np.int64)
    check_not_negative(labels, 0, name)
    return labels


def check_label_layout(dtype: np.dtype, shape: Sequence[int], name: str) -> None:
    """Refuse an IDX labels file that is not one dimension of integers."""
    if dtype.kind not in "iu" or len(shape) != 1:
        raise DataError(
            f"{name}: labels must be one dimension of integers (IDX type 0x08, 0x09, 0x0B or "
            f"0x0C); found {dtype} with shape {tuple(shape)}."
        )


def check_not_negative(labels: np.ndarray, start: int, name: str) -> None:
    """Refuse a negative label; `labels` are the file's labels from position `start` on."""
    negative = np.flatnonzero(labels < 0)
    if negative.size:
        i = int(negative[0])
        raise DataError(
            f"{name}: label {int(labels[i])} at position {start + i} is out of range; expected "
            "class numbers 0, 1, 2, ..."
        )


def num_classes(raw: RawDataset) -> int:
    """The class count (from `classes`, else the largest training label + 1), every split's
    labels checked against it; an error names the file, the position and the expected range."""
    derived = raw.classes is None
    k = int(raw.train.labels.max()) + 1 if derived else len(raw.classes or ())
    check_class_count(k, raw.train.labels_origin)
    for split in raw.splits().values():
        check_in_range(split.labels, 0, k, derived, split.labels_origin)
    return k


def check_class_count(k: int, name: str) -> None:
    """Refuse a class count outside 1..MAX_CLASSES, naming the file it came from."""
    if not 1 <= k <= MAX_CLASSES:
        raise DataError(f"{name}: {k} classes; expected 1..{MAX_CLASSES}.")


def check_in_range(labels: np.ndarray, start: int, k: int, derived: bool, name: str) -> None:
    """Refuse a label outside 0..k-1; `labels` are the file's labels from position `start` on,
    `derived`: k is the training labels' largest class + 1 (said in the error)."""
    bad = np.flatnonzero((labels < 0) | (labels >= k))
    if bad.size:
        i = int(bad[0])
        where = " (the training labels' largest class + 1)" if derived else ""
        raise DataError(
            f"{name}: label {int(labels[i])} at position {start + i} is out of range; expected "
            f"0..{k - 1}: {k} classes{where}."
        )


def image_shape(raw: RawDataset) -> tuple[int, int, int]:
    """(C, S, S) shared by every split; a split of another shape is an error naming it."""
    expected = raw.train.image_shape
    for split in raw.splits().values():
        if split.image_shape != expected:
            raise DataError(
                f"{split.images_origin}: images are {_shape_text(split.image_shape)}; expected "
                f"{_shape_text(expected)} like the training images ({raw.train.images_origin})."
            )
    return expected


def _shape_text(shape: Sequence[int]) -> str:
    """(C, S, S) as 'C x S x S'."""
    return " x ".join(str(d) for d in shape)


# ---- image files -------------------------------------------------------------------------------

IMAGE_MODES = {1: "L", 3: "RGB"}
"""PIL mode for a channel count: 1 grey, 3 RGB."""


def image_channels(mode: str) -> int:
    """The channel count an image of PIL `mode` is read with: 1 for grey modes, else 3 (RGB)."""
    return 1 if mode in ("1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F") else 3


def image_array(image: Any, name: str, channels: int, size: int | None) -> np.ndarray:
    """A PIL image as uint8 (C, H, W): converted to grey (1 channel) or RGB (3), resized to
    size x size (bilinear) when `size` is given."""
    from PIL import Image  # only image sources need PIL

    if channels not in IMAGE_MODES:
        raise DataError(
            f"{name}: images are read with 1 (grey) or 3 (RGB) channels, not {channels}."
        )
    if not isinstance(image, Image.Image):
        raise DataError(f"{name}: expected a PIL image, got {type(image).__name__}.")
    image = image.convert(IMAGE_MODES[channels])
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else np.ascontiguousarray(array.transpose(2, 0, 1))


def open_image(data: bytes, name: str) -> Any:
    """An image file's bytes as a loaded PIL image; an unreadable file is an error naming it."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as opened:
            opened.load()
            return opened.copy()
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{name}: not a readable image ({type(exc).__name__}: {exc}); replace or remove it."
        ) from None


def decode_image(data: bytes, name: str, channels: int, size: int | None) -> np.ndarray:
    """An image file's bytes as uint8 (C, H, W), as `image_array` reads it."""
    return image_array(open_image(data, name), name, channels, size)


# ---- normalisation, sizes ----------------------------------------------------------------------


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


def preload_bytes(count: int, shape: Sequence[int]) -> int:
    """Bytes that `count` images of `shape` (C, S, S) take as preloaded float32 tensors."""
    return count * math.prod(shape) * FLOAT32_BYTES


def streams(count: int, shape: Sequence[int], limit: int | None) -> bool:
    """Whether `count` images of `shape` (C, S, S) are streamed rather than preloaded: their
    float32 size is over `limit` (None: always preloaded)."""
    return limit is not None and preload_bytes(count, shape) > limit


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, S, S) -> float32 (byte / 255 - mean) / std per channel, as for MNIST."""
    shape = (1, len(mean), 1, 1)
    m = torch.tensor(mean, dtype=torch.float32).view(shape)
    s = torch.tensor(std, dtype=torch.float32).view(shape)
    return images.to(torch.float32).div_(255.0).sub_(m).div_(s)


# ---- the prepared form -------------------------------------------------------------------------


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


# ---- the prepared form, written block by block -------------------------------------------------

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
                f"{split.images_origin}: images are {_shape_text(split.shape)}; expected "
                f"{_shape_text(expected)} like the training images ({data.train.images_origin})."
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
    train, val = split_indices(total, val_size)
    return ImageTensors(
        train_x=x[train.start : train.stop],
        train_y=labels[train.start : train.stop],
        val_x=x[val.start : val.stop],
        val_y=labels[val.start : val.stop],
        num_classes=meta.num_classes,
    )


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


def check_sha256s(found: Mapping[str, str], expected: Mapping[str, str], where: str) -> None:
    """Check each file named in `expected` ({file name: sha256}) against the sha256 of its bytes
    in `found` ({file name: sha256}, hashed as read); a name not found is an error listing the
    files there."""
    for file, digest in expected.items():
        if file not in found:
            raise DataError(
                f"data.sha256 names {file!r}, which is not among the files read from {where}: "
                f"{', '.join(sorted(found))}."
            )
        if found[file] != digest.lower():
            raise ChecksumError(f"{where}/{file}", digest, found[file])
