"""What each pruning iteration aims at: per-layer targets over the iterations, and the output
units each layer keeps (Deep Compression's iterative prune -> retrain, section 2)."""

from __future__ import annotations

from collections.abc import Mapping

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.pruning import density_schedule
from deepcompression.compress.unit_pruning import dead_units, trace_consumers, units_to_keep
from deepcompression.config import PruneConfig
from deepcompression.plan import LayerPlan


def iteration_targets(prune: PruneConfig, plan: Mapping[str, LayerPlan]) -> list[dict[str, float]]:
    """Per-iteration targets: scheduled densities (magnitude) or the quality (threshold)."""
    n = prune.iterations
    if prune.method == "threshold":
        return [{name: p.prune_target for name, p in plan.items()} for _ in range(n)]
    steps = {name: density_schedule(p.prune_target, n, prune.schedule) for name, p in plan.items()}
    return [{name: steps[name][i] for name in plan} for i in range(n)]


def unit_targets(
    checkpoint: Checkpoint, plan: Mapping[str, LayerPlan]
) -> tuple[dict[str, int], dict[str, str | None]]:
    """Units to keep per layer from `prune.units` and the network's consumers (none traced when
    every layer keeps all its units); the output layer keeping fewer is an error."""
    fractions = {name: p.units_kept for name, p in plan.items() if p.units_kept < 1.0}
    if not fractions:
        return {}, {}
    model = checkpoint.build()
    consumers = trace_consumers(model)
    return units_to_keep(model, fractions, consumers), consumers


def units_kept(checkpoint: Checkpoint) -> dict[str, tuple[int, int]]:
    """(units with a surviving weight, all units) per layer of a pruned checkpoint."""
    kept = {}
    for layer, dead in dead_units(checkpoint.masks).items():
        units = checkpoint.masks[f"{layer}.weight"].shape[0]
        kept[layer] = (units - int(dead.numel()), units)
    return kept
