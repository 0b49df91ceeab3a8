"""Source ``idx``: any folder of IDX files (train, test, optionally val; plain or .gz), read block
by block and checked against the sha256 the user pins."""

from __future__ import annotations

import contextlib
import gzip
import re
import zlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

import numpy as np

from deepcompression.data.checksums import check_sha256s
from deepcompression.data.errors import DataError
from deepcompression.data.files import hash_file
from deepcompression.data.idx import iter_idx_rows, read_idx_stream_header
from deepcompression.data.layout import as_channels_first, check_label_layout, idx_image_layout
from deepcompression.data.writer import (
    PREPARE_CHUNK_BYTES,
    DatasetStream,
    SplitStream,
    chunk_rows,
)

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
    stored = {path.name: hash_file(path) for path in found.values()}
    check_sha256s(stored, sha256 or {}, str(folder))
    splits = {
        split: _idx_split(found[(split, "images")], found[(split, "labels")], chunk_bytes)
        for split in ("train", "val", "test")
        if (split, "images") in found
    }
    return DatasetStream(
        train=splits["train"], val=splits.get("val"), test=splits["test"], inputs=stored
    )
