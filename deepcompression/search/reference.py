"""What a search's results are read against: the dense size, today's hand-set tables as a trial,
and the choice of one front point within an error budget of that reference."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.unit_pruning import UnitPruningError, trace_consumers
from deepcompression.config import RunParams
from deepcompression.plan import LayerPlan
from deepcompression.search.space import Allocation, LayerAllocation, SearchSpace
from deepcompression.search.study import TrialRecord, choose


def dense_float32_bytes(dense: Checkpoint) -> int:
    """All floating-point parameters as dense float32: the ratio's numerator."""
    return sum(4 * t.numel() for t in dense.state_dict.values() if t.is_floating_point())


def output_layers(dense: Checkpoint, layers: list[str]) -> list[str]:
    """Layers whose units are never dropped: the outputs (all `layers` when the network is not a
    simple chain that unit pruning can trace)."""
    try:
        consumers = trace_consumers(dense.build())
    except UnitPruningError:
        return layers
    return [layer for layer, consumer in consumers.items() if consumer is None]


def default_allocation(
    params: RunParams, plan: Mapping[str, LayerPlan], space: SearchSpace
) -> Allocation:
    """Today's hand-set tables as an allocation (index width: the space's choice; threshold
    pruning, whose density is not known in advance: the space's largest density)."""
    layers = {
        name: LayerAllocation(
            density=p.prune_target
            if params.prune.method == "magnitude"
            else space.layers[name].density_max,
            units=p.units_kept,
            weight_bits=p.weight_bits,
            index_bits=p.index_bits if space.index_bits == "search" else None,
        )
        for name, p in plan.items()
    }
    return Allocation(layers=layers, bias=params.quantize.bias)


def tables_record(records: Sequence[TrialRecord], defaults: Allocation) -> TrialRecord:
    """Today's tables as a trial: its error is the reference the error budget adds to."""
    for record in records:
        if record.allocation == defaults:
            return record
    raise RuntimeError(
        "the trial of today's tables (the study's first seed) did not complete; its error is "
        "the reference of search.error_budget: see that trial's log"
    )


def chosen_record(front: Sequence[TrialRecord], limit: float) -> tuple[TrialRecord, bool]:
    """The smallest file with at most `limit` validation error, else (flagged) the lowest."""
    chosen = choose(list(front), limit)
    if chosen is not None:
        return chosen, True
    return min(front, key=lambda r: (r.val_error, r.file_bytes)), False


def front_row(record: TrialRecord, dense_bytes: int) -> dict:
    """One point of the front: bytes, ratio, validation error and every choice, flat."""
    row = {
        "trial": record.number,
        "file_bytes": record.file_bytes,
        "ratio": dense_bytes / record.file_bytes,
        "val_error": record.val_error,
        "bias": record.allocation.bias,
    }
    for layer, a in record.allocation.layers.items():
        row[f"density_{layer}"] = a.density
        row[f"units_{layer}"] = a.units
        row[f"bits_{layer}"] = a.weight_bits
        row[f"index_{layer}"] = "auto" if a.index_bits is None else a.index_bits
    return row
