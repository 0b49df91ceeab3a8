"""One compression-search trial: dense checkpoint -> pruned, shared network -> exact file bytes.

A trial starts from the dense checkpoint (never from the prune stage it may feed), keeps the
strongest output units where the allocation drops some, prunes by magnitude over a short schedule
with brief masked retraining, shares weights by k-means, fine-tunes the centroids, finishes the
model as the file holds it (`compress.finish`), and measures the validation error and the exact
bytes of the file the encoder writes for it (`allocation.encoded_file_bytes`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.finish import finish_quantized_
from deepcompression.compress.pruning import (
    Masks,
    densities,
    density_schedule,
    full_masks,
    layer_name,
    prune_,
)
from deepcompression.compress.quantization import cluster_model, share_weights_
from deepcompression.compress.unit_pruning import (
    apply_unit_masks_,
    trace_consumers,
    unit_masks,
    units_to_keep,
)
from deepcompression.config import (
    CentroidInit,
    CodebookDtype,
    KMeansEngine,
    OptimConfig,
    ScheduleKind,
)
from deepcompression.format.allocation import encoded_file_bytes, encoder_inputs
from deepcompression.format.info import InputMeta
from deepcompression.search.space import Allocation
from deepcompression.training import Splits, evaluate, fit, seed_everything


@dataclass(frozen=True)
class TrialSettings:
    """How every trial prunes, retrains and shares (the same for all trials of a search)."""

    iterations: int
    schedule: ScheduleKind
    retrain: OptimConfig
    finetune: OptimConfig
    init: CentroidInit
    engine: KMeansEngine
    codebook: CodebookDtype
    seed: int
    eval_batch_size: int = 1000


@dataclass(frozen=True)
class TrialOutcome:
    """What a trial reached: the file's exact bytes, validation error, and the model itself."""

    file_bytes: int
    val_error: float
    densities: dict[str, float]
    index_bits: dict[str, int | None]
    units_kept: dict[str, int]
    checkpoint: Checkpoint


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
    fractions = {layer: a.units for layer, a in allocation.layers.items() if a.units < 1.0}
    if fractions:
        consumers = trace_consumers(model)
        keep = units_to_keep(model, fractions, consumers)
        result = unit_masks(model, keep, consumers, masks)
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


def run_trial(
    dense: Checkpoint,
    allocation: Allocation,
    settings: TrialSettings,
    data: Splits,
    provenance: dict,
    device: torch.device | str = "cpu",
    input_spec: InputMeta | None = None,
) -> TrialOutcome:
    """Compress the dense checkpoint to `allocation`; measure validation error and the bytes of
    the file the encode stage would write (with its `provenance` and `input_spec`)."""
    model = dense.build(device)
    masks = prune_to(model, allocation, settings, data)
    bits = {layer: choice.weight_bits for layer, choice in allocation.layers.items()}
    codebooks = cluster_model(
        model, masks, bits, init=settings.init, seed=settings.seed, engine=settings.engine
    )
    share_weights_(model, codebooks)
    fit(model, data, settings.finetune, seed_everything(settings.seed),
        eval_batch_size=settings.eval_batch_size)  # fmt: skip
    finished = finish_quantized_(
        model, masks, list(allocation.layers), allocation.bias, data[2],
        codebook=settings.codebook, init=settings.init, seed=settings.seed,
        engine=settings.engine,
    )  # fmt: skip
    books, masks = finished.books, finished.masks
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
    index_bits = {layer: a.index_bits for layer, a in allocation.layers.items()}
    quantized, raw = encoder_inputs(checkpoint, index_bits, allocation.bias)
    file_bytes = encoded_file_bytes(quantized, raw, dense.arch, provenance, input_spec=input_spec)
    return TrialOutcome(
        file_bytes=file_bytes,
        val_error=val_error,
        densities=densities(cpu_masks),
        index_bits=index_bits,
        units_kept=units_alive(cpu_masks),
        checkpoint=checkpoint,
    )


def units_alive(masks: Masks) -> dict[str, int]:
    """Output units with at least one surviving weight, per layer."""
    return {
        layer_name(name): int(mask.reshape(mask.shape[0], -1).any(dim=1).sum())
        for name, mask in masks.items()
    }
