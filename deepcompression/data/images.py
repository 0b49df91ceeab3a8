"""Image files as uint8 (C, S, S) arrays: decoded with PIL, converted to grey or RGB, resized, and
(ImageReader) held to one size across a dataset."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from deepcompression.data.errors import DataError
from deepcompression.data.files import read_source_file

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


class ImageReader:
    """ImageFolder's loader: one image file as uint8 (C, S, S). Without an image_size, the first
    image sets S and every other image must have that size."""

    def __init__(self, channels: int, image_size: int | None) -> None:
        self.channels = channels
        self.image_size = image_size
        self.first: str | None = None

    def __call__(self, path: str) -> np.ndarray:
        return self.array(open_image(read_source_file(Path(path)), path), path)

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
