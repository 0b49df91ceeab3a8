"""MNIST itself: its four IDX files pinned by sha256, its shape, and its splits as normalised
tensors (preloaded, or streamed from an open images file when too large).

Pure functions: bytes and open files in, tensors out.
"""

from __future__ import annotations

import math
from typing import BinaryIO

import numpy as np
import torch

from deepcompression.data.checksums import verify_sha256
from deepcompression.data.errors import DataError
from deepcompression.data.idx import decode_idx, map_idx
from deepcompression.data.streaming import StreamedImages
from deepcompression.data.tensors import DataShape, ImageTensors, train_and_val

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES: tuple[str, ...] = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
IDX_SHA256: dict[str, str] = {
    TRAIN_IMAGES: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    TRAIN_LABELS: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
    TEST_IMAGES: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    TEST_LABELS: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
}
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10
MNIST_SHAPE = DataShape(channels=1, image_size=IMAGE_SIDE, num_classes=NUM_CLASSES)
"""MNIST's shape: 1x28x28 grey images of 10 classes (every model's default)."""


def verify_idx_files(files: dict[str, bytes]) -> dict[str, str]:
    """Check the four MNIST IDX files against their pinned sha256; return {file: sha256}."""
    missing = [name for name in IDX_FILES if name not in files]
    if missing:
        raise DataError(f"MNIST IDX file set lacks {', '.join(missing)}.")
    for name in IDX_FILES:
        verify_sha256(name, files[name], IDX_SHA256[name])
    return {name: IDX_SHA256[name] for name in IDX_FILES}


def _as_tensor(value: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Return ``value`` as a torch tensor without copying when it already is one."""
    return value if isinstance(value, torch.Tensor) else torch.from_numpy(np.asarray(value))


def _normalise_images(images: torch.Tensor | np.ndarray, label: str) -> torch.Tensor:
    """Turn uint8 images of 784 pixels each into float32 (N, 1, 28, 28) standardised tensors."""
    tensor = _as_tensor(images)
    if tensor.dtype != torch.uint8:
        raise DataError(f"{label} images must be uint8 bytes; got {tensor.dtype}.")
    if tensor.ndim < 2 or math.prod(tensor.shape[1:]) != IMAGE_PIXELS:
        raise DataError(
            f"{label} images must be N images of {IMAGE_PIXELS} pixels; got shape "
            f"{tuple(tensor.shape)}."
        )
    return normalise_mnist(tensor.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE))


def normalise_mnist(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, 1, 28, 28) -> float32 (byte / 255 - mean) / std: MNIST's one normalisation,
    of the whole split when preloaded and of each batch when streamed."""
    return images.to(torch.float32).div_(255.0).sub_(MNIST_MEAN).div_(MNIST_STD)


def _streamed_mnist(handle: BinaryIO, name: str, label: str) -> StreamedImages:
    """One of MNIST's images files, checked against its pinned sha256, as streamed images."""
    rows = map_idx(handle, name, IDX_SHA256[name])
    if rows.ndim < 2 or math.prod(rows.shape[1:]) != IMAGE_PIXELS:
        raise DataError(
            f"{label} images must be N images of {IMAGE_PIXELS} pixels; got shape {rows.shape}."
        )
    return StreamedImages(rows.reshape(-1, 1, IMAGE_SIDE, IMAGE_SIDE), normalise_mnist)


def _check_labels(labels: torch.Tensor | np.ndarray, count: int, label: str) -> torch.Tensor:
    """Return labels as an int64 tensor of length ``count`` holding classes 0..9."""
    tensor = _as_tensor(labels)
    if tensor.dtype.is_floating_point or tensor.dtype == torch.bool or tensor.shape != (count,):
        raise DataError(
            f"{label} labels must be {count} integers; got {tensor.dtype} {tuple(tensor.shape)}."
        )
    tensor = tensor.to(torch.int64)
    if count and (int(tensor.min()) < 0 or int(tensor.max()) >= NUM_CLASSES):
        raise DataError(f"{label} labels must be classes 0..{NUM_CLASSES - 1}.")
    return tensor


def to_tensors(
    images_u8: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, val_size: int
) -> ImageTensors:
    """Normalised training/validation tensors from the uint8 training images and their labels."""
    x = _normalise_images(images_u8, "train")
    y = _check_labels(labels, x.shape[0], "train")
    return train_and_val(x, y, val_size, NUM_CLASSES)


def mnist_training_set(images_idx: bytes, labels_idx: bytes, val_size: int) -> ImageTensors:
    """Training and validation splits from MNIST's two training IDX files, checksum-verified."""
    verify_sha256(TRAIN_IMAGES, images_idx, IDX_SHA256[TRAIN_IMAGES])
    verify_sha256(TRAIN_LABELS, labels_idx, IDX_SHA256[TRAIN_LABELS])
    return to_tensors(decode_idx(images_idx), decode_idx(labels_idx), val_size)


def mnist_training_stream(images: BinaryIO, labels_idx: bytes, val_size: int) -> ImageTensors:
    """`mnist_training_set` with the images streamed: the open images file is mapped, checked
    against its pinned sha256 in chunks and normalised batch by batch, never read whole."""
    x = _streamed_mnist(images, TRAIN_IMAGES, "train")
    verify_sha256(TRAIN_LABELS, labels_idx, IDX_SHA256[TRAIN_LABELS])
    y = _check_labels(decode_idx(labels_idx), len(x), "train")
    return train_and_val(x, y, val_size, NUM_CLASSES)


def mnist_test_stream(images: BinaryIO, labels_idx: bytes) -> tuple[StreamedImages, torch.Tensor]:
    """`mnist_test_set` with the images streamed, as `mnist_training_stream` streams them."""
    x = _streamed_mnist(images, TEST_IMAGES, "test")
    verify_sha256(TEST_LABELS, labels_idx, IDX_SHA256[TEST_LABELS])
    return x, _check_labels(decode_idx(labels_idx), len(x), "test")


def mnist_test_set(images_idx: bytes, labels_idx: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    """The MNIST test set from its two IDX files, checksum-verified and normalised like training."""
    verify_sha256(TEST_IMAGES, images_idx, IDX_SHA256[TEST_IMAGES])
    verify_sha256(TEST_LABELS, labels_idx, IDX_SHA256[TEST_LABELS])
    images = _normalise_images(decode_idx(images_idx), "test")
    return images, _check_labels(decode_idx(labels_idx), images.shape[0], "test")
