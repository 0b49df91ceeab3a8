"""The last step of trained quantization: turn the fine-tuned model into the one the file holds.

Shared weights are baked back into plain weights, constant units fold into their consumers,
unread biases become exact zeros, unused centroids go, and centroids and biases take their stored
precision, so that the validation error measured next is the error of the decoded file. The
quantize stage and the search's trials both end here, so a trial's bytes are the file's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from deepcompression.compress.kmeans import CentroidInit, KMeansEngine
from deepcompression.compress.pruning import Masks, layer_name
from deepcompression.compress.quantization import (
    LayerCodebook,
    QuantizationError,
    drop_unused_centroids,
    round_biases_,
    strip_,
)
from deepcompression.compress.unit_pruning import (
    consumers_or_empty,
    fold_constant_units_,
    zero_unread_biases_,
)
from deepcompression.config import BiasMode, CodebookDtype

__all__ = ["PROBE_INPUTS", "Finished", "finish_quantized_"]

PROBE_INPUTS = 16
"""Inputs (validation images) on which a unit with every input weight pruned must be constant."""
HALF_MAX = 65504.0
"""Largest finite float16: a centroid beyond it has no float16 form."""


@dataclass(frozen=True)
class Finished:
    """The file's codebooks and masks, and the units folded per layer (for the stage's record)."""

    books: dict[str, LayerCodebook]
    masks: Masks
    folded: dict[str, int]


def finish_quantized_(
    model: nn.Module,
    masks: Masks,
    bias_layers: Iterable[str],
    bias: BiasMode,
    images: torch.Tensor,
    *,
    codebook: CodebookDtype,
    init: CentroidInit,
    seed: int,
    engine: KMeansEngine,
) -> Finished:
    """Bake, fold constant units (probed on the first PROBE_INPUTS of ``images``), zero unread
    biases, drop unused centroids, round the centroids to ``codebook`` and the biases of
    ``bias_layers`` to ``bias`` (k-means-shared ones to ``codebook`` too)."""
    books = strip_(model)
    consumers = consumers_or_empty(model)
    masks, folded = fold_constant_units_(model, masks, consumers, images[:PROBE_INPUTS])
    zero_unread_biases_(model, masks, consumers)
    final = {
        key: drop_unused_centroids(
            dataclasses.replace(book, mask=book.mask & masks[key].to(book.mask.device))
        )
        for key, book in books.items()
    }
    layers = list(bias_layers)
    round_biases_(model, layers, bias, init=init, seed=seed, engine=engine)
    if codebook == "float16":
        final = {key: _half_book_(model, key, book) for key, book in final.items()}
        if not isinstance(bias, str):
            _half_biases_(model, layers)
    return Finished(final, masks, folded)


def _half_book_(model: nn.Module, key: str, book: LayerCodebook) -> LayerCodebook:
    """The codebook with float16-rounded centroids, written back into the layer's weight."""
    if book.centroids.numel() and book.centroids.abs().max() > HALF_MAX:
        raise QuantizationError(
            f"{key} has a centroid beyond float16's range (+-{HALF_MAX:g}): store its codebook "
            "as float32 (quantize.codebook: float32)"
        )
    rounded = dataclasses.replace(book, centroids=book.centroids.half().float())
    weight = model.get_submodule(layer_name(key)).weight
    with torch.no_grad():
        weight.copy_(rounded.weight().to(weight.device))
    return rounded


def _half_biases_(model: nn.Module, layers: list[str]) -> None:
    """Round k-means-shared biases to float16 values (their distinct values are the codebook)."""
    modules = dict(model.named_modules())
    for layer in layers:
        bias = getattr(modules[layer], "bias", None)
        if bias is None:
            continue
        if bias.numel() and bias.abs().max() > HALF_MAX:
            raise QuantizationError(
                f"{layer}.bias has a value beyond float16's range (+-{HALF_MAX:g}): store the "
                "codebooks as float32 (quantize.codebook: float32)"
            )
        with torch.no_grad():
            bias.copy_(bias.half().float())
