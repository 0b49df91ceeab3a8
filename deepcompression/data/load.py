"""The one loader of the data stage's output, for every stage, the search workers and the command
line: a data folder (``data/<name>``) read as training and validation tensors, or as its test set.

MNIST's folder holds its four pinned IDX files in ``raw/``; any other data's holds the prepared
form (``deepcompression.data.prepared``). A split whose images take over `max_preload_bytes` as
float32 is mapped read-only from its file and streamed in batches (None: always preloaded).
"""

from __future__ import annotations

from pathlib import Path

import torch

from deepcompression.data.files import open_stage_file, read_stage_file, stage_opener, stage_reader
from deepcompression.data.idx import read_idx_header
from deepcompression.data.mnist import (
    MNIST_SHAPE,
    TEST_IMAGES,
    TEST_LABELS,
    TRAIN_IMAGES,
    TRAIN_LABELS,
    mnist_test_set,
    mnist_test_stream,
    mnist_training_set,
    mnist_training_stream,
)
from deepcompression.data.prepared import load_prepared, load_prepared_test, read_meta
from deepcompression.data.streaming import StreamedImages
from deepcompression.data.tensors import DataShape, ImageTensors, streams

MNIST_RAW = "raw"
"""The subfolder of MNIST's data folder holding its four IDX files."""


def _streams_idx(path: Path, limit: int | None) -> bool:
    """Whether the images in the IDX file at `path` are over `limit` bytes as float32 (its header
    alone is read)."""
    if limit is None:
        return False
    with open_stage_file(path) as handle:
        _, shape, _ = read_idx_header(handle)
    return streams(shape[0], shape[1:], limit)


def _mnist_training(raw_dir: Path, val_size: int, max_preload_bytes: int | None) -> ImageTensors:
    """MNIST's training and validation splits from the two training IDX files in `raw_dir`."""
    if _streams_idx(raw_dir / TRAIN_IMAGES, max_preload_bytes):
        with open_stage_file(raw_dir / TRAIN_IMAGES) as images:
            labels = read_stage_file(raw_dir / TRAIN_LABELS)
            return mnist_training_stream(images, labels, val_size)
    return mnist_training_set(
        read_stage_file(raw_dir / TRAIN_IMAGES), read_stage_file(raw_dir / TRAIN_LABELS), val_size
    )


def _mnist_test(
    raw_dir: Path, max_preload_bytes: int | None
) -> tuple[torch.Tensor | StreamedImages, torch.Tensor]:
    """MNIST's test set from the two test IDX files in `raw_dir`."""
    if _streams_idx(raw_dir / TEST_IMAGES, max_preload_bytes):
        with open_stage_file(raw_dir / TEST_IMAGES) as images:
            return mnist_test_stream(images, read_stage_file(raw_dir / TEST_LABELS))
    return mnist_test_set(
        read_stage_file(raw_dir / TEST_IMAGES), read_stage_file(raw_dir / TEST_LABELS)
    )


def load_training(
    folder: Path, val_size: int, max_preload_bytes: int | None = None, *, mnist: bool
) -> ImageTensors:
    """Training and validation splits of the data folder `folder` (MNIST's when `mnist`), every
    file checked against its sha256. Never opens the test files: every stage but `evaluate`
    learns and chooses on these alone."""
    folder = Path(folder)
    if mnist:
        return _mnist_training(folder / MNIST_RAW, val_size, max_preload_bytes)
    return load_prepared(
        stage_reader(folder), val_size, str(folder), stage_opener(folder), max_preload_bytes
    )


def load_test(
    folder: Path, max_preload_bytes: int | None = None, *, mnist: bool
) -> tuple[torch.Tensor | StreamedImages, torch.Tensor]:
    """The test set of the data folder `folder`, normalised like training: read once, for the
    final report."""
    folder = Path(folder)
    if mnist:
        return _mnist_test(folder / MNIST_RAW, max_preload_bytes)
    return load_prepared_test(
        stage_reader(folder), str(folder), stage_opener(folder), max_preload_bytes
    )


def folder_shape(folder: Path, *, mnist: bool) -> DataShape:
    """Channels, image side and classes of the data folder `folder` (from meta.json alone)."""
    if mnist:
        return MNIST_SHAPE
    return read_meta(stage_reader(Path(folder)), str(folder)).shape
