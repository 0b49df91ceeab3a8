"""The last step of trained quantization: turn the fine-tuned model into the one the file holds.

Shared weights are baked back into plain weights, constant units fold into their consumers,
unread biases become exact zeros, unused centroids go, and biases take their stored precision,
so that the validation error measured next is the error of the decoded file. The quantize stage
and the search's trials both end here, so a trial's bytes are the file's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

import torch
from torch import nn

from deepcompression.compress.kmeans import CentroidInit, KMeansEngine
from deepcompression.compress.pruning import Masks
from deepcompression.compress.quantization import (
    LayerCodebook,
    drop_unused_centroids,
    round_biases_,
    strip_,
)
from deepcompression.compress.unit_pruning import (
    consumers_or_none,
    fold_constant_units_,
    zero_unread_biases_,
)
from deepcompression.config import BiasMode

__all__ = ["PROBE_INPUTS", "finish_quantized_"]

PROBE_INPUTS = 16
"""Inputs (validation images) on which a unit with every input weight pruned must be constant."""


def finish_quantized_(
    model: nn.Module,
    masks: Masks,
    bias_layers: Iterable[str],
    bias: BiasMode,
    probe: torch.Tensor,
    *,
    init: CentroidInit,
    seed: int,
    engine: KMeansEngine,
) -> tuple[dict[str, LayerCodebook], Masks]:
    """Bake, fold constant units (``probe``: a few inputs), zero unread biases, drop unused
    centroids and round the biases of ``bias_layers`` to ``bias``; returns the final codebooks
    and masks (a folded unit's reads leave its consumer's mask)."""
    books = strip_(model)
    consumers = consumers_or_none(model)
    masks, _ = fold_constant_units_(model, masks, consumers, probe)
    zero_unread_biases_(model, masks, consumers)
    final = {
        key: drop_unused_centroids(
            dataclasses.replace(book, mask=book.mask & masks[key].to(book.mask.device))
        )
        for key, book in books.items()
    }
    round_biases_(model, bias_layers, bias, init=init, seed=seed, engine=engine)
    return final, masks
