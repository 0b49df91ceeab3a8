"""Per-layer sensitivity (the paper's Figures 5-7): how validation error grows as one layer alone
is pruned, or one layer alone is shared at fewer bits, the others left dense.

Each point starts from the dense checkpoint. The curves seed a compression search: for a tolerated
error increase, each layer's lowest density and bits that stay within it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import torch

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.pruning import full_masks, prune_
from deepcompression.compress.quantization import cluster_model, share_weights_
from deepcompression.config import CentroidInit, KMeansEngine, OptimConfig
from deepcompression.search.space import Allocation, LayerAllocation
from deepcompression.training import Splits, TrainingDiverged, evaluate, fit, seed_everything

Axis = Literal["density", "bits"]


@dataclass(frozen=True)
class SensitivityPoint:
    """Validation error with one layer pruned to a density, or shared at a number of bits."""

    layer: str
    axis: Axis
    value: float
    val_error: float

    def to_dict(self) -> dict[str, float | str]:
        """Plain JSON-able dict."""
        return asdict(self)


def prune_layer_alone(
    dense: Checkpoint,
    layer: str,
    density: float,
    retrain: OptimConfig,
    data: Splits,
    seed: int,
    device: torch.device | str = "cpu",
    eval_batch_size: int = 1000,
) -> float:
    """Validation error with `layer` pruned by magnitude to `density` (briefly retrained with the
    mask held when `retrain.epochs` > 0), every other layer dense."""
    model = dense.build(device)
    masks = prune_(model, full_masks(model), {layer: density})
    if retrain.epochs > 0:  # every other layer's mask is full: held, it holds nothing
        try:
            fit(model, data, retrain, seed_everything(seed), masks=masks,
                eval_batch_size=eval_batch_size)  # fmt: skip
        except TrainingDiverged:
            return 1.0  # a layer whose retraining diverges at this density is unusable there
    return evaluate(model, data[2], data[3], eval_batch_size).error


def share_layer_alone(
    dense: Checkpoint,
    layer: str,
    bits: int,
    init: CentroidInit,
    engine: KMeansEngine,
    data: Splits,
    seed: int,
    device: torch.device | str = "cpu",
    eval_batch_size: int = 1000,
) -> float:
    """Validation error with `layer` alone shared by k-means at `bits` (2^bits values), dense."""
    model = dense.build(device)
    codebooks = cluster_model(model, {}, {layer: bits}, init=init, seed=seed, engine=engine)
    share_weights_(model, codebooks)
    return evaluate(model, data[2], data[3], eval_batch_size).error


def lowest_within(
    points: Sequence[SensitivityPoint], layer: str, axis: Axis, limit: float
) -> float | None:
    """The smallest value of `axis` for `layer` whose validation error is at most `limit`."""
    values = [
        p.value for p in points if p.layer == layer and p.axis == axis and p.val_error <= limit
    ]
    return min(values) if values else None


def seed_allocations(
    points: Sequence[SensitivityPoint],
    dense_error: float,
    tolerances: Sequence[float],
    fallback: Allocation,
) -> list[Allocation]:
    """One allocation per tolerance: every layer at its lowest density and bits whose error is
    within `dense_error + tolerance`; a layer with no such point keeps `fallback`'s value."""
    seeds = []
    for tolerance in tolerances:
        limit = dense_error + tolerance
        layers = {}
        for layer, base in fallback.layers.items():
            density = lowest_within(points, layer, "density", limit)
            bits = lowest_within(points, layer, "bits", limit)
            layers[layer] = LayerAllocation(
                density=base.density if density is None else density,
                units=base.units,
                weight_bits=base.weight_bits if bits is None else int(bits),
                index_bits=base.index_bits,
            )
        seeds.append(Allocation(layers=layers, bias=fallback.bias))
    return seeds
