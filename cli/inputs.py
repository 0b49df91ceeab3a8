"""The inputs ``deepcompression predict`` reads: image files (PNG, JPEG, anything PIL opens),
uint8 IDX image files (MNIST's ``t10k-images-idx3-ubyte``, a prepared ``*-images-idx4-ubyte``),
and folders of either (searched recursively, in sorted order). Images are converted to the
network's channels (grey or RGB) and resized to its side; IDX images must have its shape."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cli.errors import CliError, path_text, read_input
from deepcompression.data.errors import DataError
from deepcompression.inference import InputSpec

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})
IDX_UINT8_MAGIC = b"\x00\x00\x08"
"""The first three bytes of a uint8 IDX file (the fourth is the number of dimensions)."""


@dataclass(frozen=True)
class Inputs:
    """Named uint8 (N, C, S, S) images: ``names[i]`` is the file (``file[row]`` for IDX rows)."""

    names: list[str]
    images: torch.Tensor


def read_inputs(paths: list[Path], spec: InputSpec) -> Inputs:
    """Every image in `paths` (files and folders) as the network's uint8 input images."""
    names: list[str] = []
    arrays: list[np.ndarray] = []
    for path in paths:
        for name, array in _read_path(path, spec):
            names.append(name)
            arrays.append(array)
    stacked = np.stack(arrays) if arrays else np.zeros((0, *spec.shape), np.uint8)
    return Inputs(names, torch.from_numpy(stacked))


def _read_path(path: Path, spec: InputSpec) -> list[tuple[str, np.ndarray]]:
    """The images of one command-line path: a file, or every image/IDX file under a folder."""
    if path.is_dir():
        found = [
            item
            for item in sorted(path.rglob("*"))
            if item.is_file() and (item.suffix.lower() in IMAGE_SUFFIXES or _is_idx_images(item))
        ]
        if not found:
            raise CliError(
                f"{path_text(path)}: no images in this folder (PNG/JPEG files or uint8 IDX image "
                "files); pass image files or a folder holding them."
            )
        return [pair for item in found for pair in _read_file(item, spec)]
    return _read_file(path, spec)


def _is_idx_images(path: Path) -> bool:
    """Whether `path` starts like a uint8 IDX file of images (3 or 4 dimensions)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(4)
    except OSError:
        return False
    return len(head) == 4 and head[:3] == IDX_UINT8_MAGIC and head[3] in (3, 4)


def _read_file(path: Path, spec: InputSpec) -> list[tuple[str, np.ndarray]]:
    """One file's images: every row of an IDX file, else the one image PIL decodes."""
    data = read_input(path)
    if data[:3] == IDX_UINT8_MAGIC:
        return _idx_rows(path, data, spec)
    from deepcompression.data.images import image_array, open_image

    try:
        image = open_image(data, path_text(path))
        return [(str(path), image_array(image, path_text(path), spec.channels, spec.image_size))]
    except DataError as err:
        raise CliError(f"{err} Pass PNG/JPEG images or uint8 IDX image files.") from None


def _idx_rows(path: Path, data: bytes, spec: InputSpec) -> list[tuple[str, np.ndarray]]:
    """The images of a uint8 IDX file: (N, S, S) grey or (N, C, S, S), of the network's shape."""
    from deepcompression.data.idx import decode_idx

    try:
        array = decode_idx(data)
    except DataError as err:
        raise CliError(f"{path_text(path)}: not a readable IDX file ({err})") from None
    stored = tuple(array.shape)
    if array.ndim == 3 and spec.channels == 1:
        array = array[:, None]
    if array.ndim != 4 or tuple(array.shape[1:]) != spec.shape:
        expected = f"(N, {spec.image_size}, {spec.image_size})" if spec.channels == 1 else ""
        shapes = " or ".join(filter(None, [expected, f"(N, {', '.join(map(str, spec.shape))})"]))
        raise CliError(
            f"{path_text(path)}: IDX images of shape {stored}, but the network reads "
            f"{shapes}; pass images of the data the file was made for (IDX files are not resized)."
        )
    return [(f"{path}[{row}]", image) for row, image in enumerate(array)]
