"""How images and labels are laid out in IDX files and arrays, and the checks every source's labels
pass: (C, S, S) square images, one dimension of integer labels in 0..K-1."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from deepcompression.data.errors import DataError

MAX_CLASSES = 1 << 20


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


def shape_text(shape: Sequence[int]) -> str:
    """(C, S, S) as 'C x S x S'."""
    return " x ".join(str(d) for d in shape)
