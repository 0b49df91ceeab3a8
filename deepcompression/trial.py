"""One compression-search trial: dense checkpoint -> pruned, shared network -> exact file bytes.

A trial starts from the dense checkpoint (never from the prune stage it may feed), keeps the
strongest output units where the allocation drops some, prunes by magnitude over a short schedule
with brief masked retraining, shares weights by k-means, fine-tunes the centroids, rounds biases
to their storage, and measures the validation error and the exact bytes of the file the encoder
writes for it (`allocation.encoded_file_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepcompression.allocation import best_index_bits, encoded_file_bytes
from deepcompression.checkpoint import Checkpoint
from deepcompression.config import CentroidInit, KMeansEngine, OptimConfig, ScheduleKind
from deepcompression.container import QuantizedTensor
from deepcompression.pruning import (
    Masks,
    densities,
    density_schedule,
    full_masks,
    layer_name,
    prune_,
    weight_name,
)
from deepcompression.quantization import (
    cluster_model,
    drop_unused_centroids,
    share_weights_,
    strip_,
)
from deepcompression.search_space import INDEX_BITS_RANGE, Allocation
from deepcompression.training import evaluate, fit, seed_everything
from deepcompression.unit_pruning import apply_unit_masks_, trace_consumers, unit_masks

Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""(train_x, train_y, val_x, val_y) on the model's device."""


@dataclass(frozen=True)
class TrialSettings:
    """How every trial prunes, retrains and shares (the same for all trials of a search)."""

    iterations: int
    schedule: ScheduleKind
    retrain: OptimConfig
    finetune: OptimConfig
    init: CentroidInit
    engine: KMeansEngine
    seed: int
    eval_batch_size: int = 1000


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial reached: the file's exact bytes, validation error, and the model itself."""

    file_bytes: int
    val_error: float
    densities: dict[str, float]
    index_bits: dict[str, int]
    units_kept: dict[str, int]
    checkpoint: Checkpoint


def units_to_keep(model: nn.Module, allocation: Allocation) -> dict[str, int]:
    """Output units kept per layer whose allocation drops some (at least one is always kept)."""
    modules = dict(model.named_modules())
    keep = {}
    for layer, choice in allocation.layers.items():
        total = modules[layer].weight.shape[0]
        n_keep = max(1, round(choice.units * total))
        if n_keep < total:
            keep[layer] = n_keep
    return keep


def _zero_biases_(model: nn.Module, biases: Masks) -> None:
    """Re-zero the biases of dropped units (training may move them)."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, kept in biases.items():
            params[name].masked_fill_(~kept.to(params[name].device), 0.0)


def prune_to(
    model: nn.Module, allocation: Allocation, settings: TrialSettings, data: Splits
) -> Masks:
    """Drop units, then prune each layer to its density over the schedule, retraining after
    each step with the masks held; returns the final masks."""
    masks = full_masks(model)
    biases: Masks = {}
    keep = units_to_keep(model, allocation)
    if keep:
        result = unit_masks(model, keep, trace_consumers(model), masks)
        apply_unit_masks_(model, result)
        masks, biases = result.weights, result.biases
    steps = {
        layer: density_schedule(choice.density, settings.iterations, settings.schedule)
        for layer, choice in allocation.layers.items()
    }
    for i in range(settings.iterations):
        generator = seed_everything(settings.seed + i + 1)
        masks = prune_(model, masks, {layer: s[i] for layer, s in steps.items()})
        fit(model, data, settings.retrain, generator, masks=masks,
            eval_batch_size=settings.eval_batch_size)  # fmt: skip
        _zero_biases_(model, biases)
    return masks


def round_biases_(model: nn.Module, layers: list[str], storage: str) -> dict[str, torch.Tensor]:
    """Round the layers' biases to their storage in place; returns them as the file stores them."""
    modules = dict(model.named_modules())
    stored = {}
    with torch.no_grad():
        for layer in layers:
            bias = modules[layer].bias
            if bias is None:
                continue
            kept = bias.detach().half() if storage == "float16" else bias.detach().clone()
            bias.copy_(kept.float())
            stored[f"{layer}.bias"] = kept.cpu()
    return stored


def encoder_inputs(
    checkpoint: Checkpoint, index_bits: dict[str, int], raw_overrides: dict[str, torch.Tensor]
) -> tuple[list[QuantizedTensor], dict[str, torch.Tensor]]:
    """The shared layers and raw tensors of a quantized checkpoint, in state_dict order, as the
    encode stage passes them (raw tensors replaced by `raw_overrides`, e.g. float16 biases)."""
    quantized = [
        QuantizedTensor(
            name=name,
            mask=checkpoint.masks[name],
            labels=checkpoint.labels[name],
            centroids=checkpoint.centroids[name],
            weight_bits=checkpoint.bits[name],
            index_bits=index_bits[layer_name(name)],
        )
        for name in checkpoint.state_dict
        if name in checkpoint.centroids
    ]
    shared = {q.name for q in quantized}
    raw = {k: raw_overrides.get(k, v) for k, v in checkpoint.state_dict.items() if k not in shared}
    return quantized, raw


def run_trial(
    dense: Checkpoint,
    allocation: Allocation,
    settings: TrialSettings,
    data: Splits,
    provenance: dict,
    device: torch.device | str = "cpu",
) -> TrialOutcome:
    """Compress the dense checkpoint to `allocation`; measure validation error and file bytes."""
    model = dense.build(device)
    masks = prune_to(model, allocation, settings, data)
    bits = {layer: choice.weight_bits for layer, choice in allocation.layers.items()}
    codebooks = cluster_model(
        model, masks, bits, init=settings.init, seed=settings.seed, engine=settings.engine
    )
    share_weights_(model, codebooks)
    fit(model, data, settings.finetune, seed_everything(settings.seed),
        eval_batch_size=settings.eval_batch_size)  # fmt: skip
    books = {k: drop_unused_centroids(b) for k, b in strip_(model).items()}
    raw = round_biases_(model, list(allocation.layers), allocation.bias)
    val_error = evaluate(model, data[2], data[3], settings.eval_batch_size).error
    cpu_masks = {k: v.cpu() for k, v in masks.items()}
    checkpoint = Checkpoint.of(
        model,
        dense.arch,
        masks=cpu_masks,
        centroids={k: b.centroids.detach().cpu() for k, b in books.items()},
        labels={k: b.labels.cpu() for k, b in books.items()},
        bits={k: bits[layer_name(k)] for k in books},
    )
    index_bits = chosen_index_bits(cpu_masks, allocation)
    quantized, raw_tensors = encoder_inputs(checkpoint, index_bits, raw)
    file_bytes = encoded_file_bytes(quantized, raw_tensors, dense.arch, provenance)
    return TrialOutcome(
        file_bytes=file_bytes,
        val_error=val_error,
        densities=densities(cpu_masks),
        index_bits=index_bits,
        units_kept=units_alive(cpu_masks),
        checkpoint=checkpoint,
    )


def chosen_index_bits(masks: Masks, allocation: Allocation) -> dict[str, int]:
    """Each layer's index width: the allocation's, else the width with the fewest exact bytes."""
    low, high = INDEX_BITS_RANGE
    return {
        layer: choice.index_bits
        if choice.index_bits is not None
        else best_index_bits(masks[weight_name(layer)], range(low, high + 1))[0]
        for layer, choice in allocation.layers.items()
    }


def units_alive(masks: Masks) -> dict[str, int]:
    """Output units with at least one surviving weight, per layer."""
    return {
        layer_name(name): int(mask.reshape(mask.shape[0], -1).any(dim=1).sum())
        for name, mask in masks.items()
    }
