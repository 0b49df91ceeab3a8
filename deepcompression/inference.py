"""Predicting with a decoded network: the input spec it needs (shape, normalisation, class names),
raw uint8 images turned into its input exactly as in training, and class probabilities out.

Where the spec comes from is the caller's choice, first known wins: the compressed file's stored
one (format version 4, ``InputSpec.from_stored``), the prepared data folder's ``meta.json``
(``InputSpec.from_meta``), else MNIST's (``MNIST_INPUT``, every model's default shape). Without
class names, classes are their indices. ``stored_input`` is what the encode stage stores.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from deepcompression.data.files import stage_reader
from deepcompression.data.mnist import IMAGE_SIDE, MNIST_MEAN, MNIST_STD, NUM_CLASSES
from deepcompression.data.prepared import DatasetMeta, read_meta
from deepcompression.data.tensors import normalise
from deepcompression.format.info import InputMeta
from deepcompression.training import predict_logits


@dataclass(frozen=True)
class InputSpec(InputMeta):
    """What a network reads: the fields a version-4 file stores (``InputMeta``), checked for
    consistency before any image is normalised with them."""

    def __post_init__(self) -> None:
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(
                f"input spec: mean and std need one value per channel ({self.channels}), got "
                f"{len(self.mean)} and {len(self.std)}"
            )
        if min(self.std) <= 0:
            raise ValueError(f"input spec: std must be > 0, got {self.std}")
        if self.classes is not None and len(self.classes) != self.num_classes:
            raise ValueError(
                f"input spec: {len(self.classes)} class names for {self.num_classes} classes"
            )

    @classmethod
    def from_meta(cls, meta: DatasetMeta) -> InputSpec:
        """The spec a prepared data folder's meta.json describes (its networks were trained so);
        classes named by their own indices ("0", "1"...) count as unnamed."""
        classes = _named(meta.classes, meta.num_classes)
        return cls(meta.channels, meta.image_size, meta.mean, meta.std, meta.num_classes, classes)

    @classmethod
    def from_stored(cls, meta: InputMeta) -> InputSpec:
        """The spec a compressed file stores (``read_info(data).input``); digit names count as
        unnamed, as in ``from_meta``."""
        classes = _named(meta.classes, meta.num_classes)
        return cls(meta.channels, meta.image_size, meta.mean, meta.std, meta.num_classes, classes)

    def to_stored(self, classes: tuple[str, ...] | None = None) -> InputMeta:
        """This spec as the format stores it, with `classes` (default: this spec's names)."""
        names = self.classes if classes is None else classes
        return InputMeta(
            self.channels, self.image_size, self.mean, self.std, self.num_classes, names
        )

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, S, S) of one input image."""
        return self.channels, self.image_size, self.image_size

    def model_kwargs(self) -> dict[str, int]:
        """in_channels, image_size and num_classes, as the registry's factories take them."""
        return {
            "in_channels": self.channels,
            "image_size": self.image_size,
            "num_classes": self.num_classes,
        }

    def class_name(self, index: int) -> str | None:
        """The name of class `index`, None when the classes are unnamed."""
        return None if self.classes is None else self.classes[index]

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (N, C, S, S) -> the float32 network input, normalised as in training."""
        if images.dtype != torch.uint8 or tuple(images.shape[1:]) != self.shape:
            raise ValueError(
                f"expected uint8 images of shape (N, {', '.join(map(str, self.shape))}), got "
                f"{images.dtype} {tuple(images.shape)}"
            )
        return normalise(images, self.mean, self.std)


MNIST_INPUT = InputSpec(1, IMAGE_SIDE, (MNIST_MEAN,), (MNIST_STD,), NUM_CLASSES)
"""MNIST's input: 28x28 grey digits, normalised with MNIST's mean and std; classes are digits."""


def _named(classes: tuple[str, ...] | None, count: int) -> tuple[str, ...] | None:
    """`classes`, or None when absent or just the indices ("0", "1"...) as names."""
    digits = tuple(str(index) for index in range(count))
    return None if classes is None or classes == digits else classes


def stored_input(folder: Path, *, mnist: bool) -> InputMeta:
    """The input spec a compressed file of the data in `folder` stores: its meta.json's shape,
    normalisation and class names; MNIST's with classes "0".."9" for MNIST."""
    if mnist:
        return MNIST_INPUT.to_stored(tuple(str(index) for index in range(NUM_CLASSES)))
    meta = read_meta(stage_reader(Path(folder)), str(folder))
    return InputSpec(meta.channels, meta.image_size, meta.mean, meta.std, meta.num_classes,
                     meta.classes).to_stored()  # fmt: skip


@dataclass(frozen=True)
class Prediction:
    """One input's class probabilities (softmax of the logits), best first in ``top``."""

    probabilities: tuple[float, ...]

    @property
    def best(self) -> int:
        """Index of the most probable class (the lowest index on a tie, like argmax)."""
        return self.top(1)[0][0]

    def top(self, k: int) -> list[tuple[int, float]]:
        """The `k` most probable (class index, probability) pairs, most probable first."""
        order = sorted(range(len(self.probabilities)), key=lambda c: (-self.probabilities[c], c))
        return [(c, self.probabilities[c]) for c in order[:k]]


@torch.no_grad()
def predict(
    model: nn.Module, images: torch.Tensor, spec: InputSpec, batch_size: int = 256
) -> list[Prediction]:
    """Class probabilities of `model` (set to eval mode) for uint8 (N, C, S, S) `images`."""
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    logits = predict_logits(model, spec.prepare(images).to(device), batch_size)
    probabilities = torch.softmax(logits.double(), dim=1).cpu()
    return [Prediction(tuple(row.tolist())) for row in probabilities]


def mismatches(spec: InputSpec, kwargs: Mapping[str, object]) -> list[str]:
    """The data kwargs (in_channels, image_size, num_classes) on which a network built with
    `kwargs` and the spec disagree: ``["image_size: network 32, input 28"]``; empty if none."""
    wanted = spec.model_kwargs()
    return [
        f"{key}: network {value!r}, input {wanted[key]}"
        for key, value in kwargs.items()
        if key in wanted and value != wanted[key]
    ]
