"""The search's chosen allocation in place of a model's hand-set tables (`allocation: searched`).

Only the stages that use the choice (prune, quantize, encode) import this: the others' results do
not depend on the search.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from deepcompression.config import ConfigError, RunParams
from deepcompression.plan import LayerPlan, NetworkLayer, resolve_plan
from deepcompression.search.space import Allocation


def apply_allocation(
    params: RunParams, plan: Mapping[str, LayerPlan], chosen: Allocation
) -> tuple[RunParams, dict[str, LayerPlan]]:
    """`params` with a searched allocation's densities (magnitude pruning), units kept, weight
    bits, index widths (None: auto) and bias storage in place of the hand-set tables, checked as
    the tables are, and the plan resolved from them for the same layers."""
    key = f"models.{params.model.name}.allocation"
    missing = sorted(set(plan) - set(chosen.layers))
    if missing:
        raise ConfigError(
            f"{key}: the searched allocation has no entry for layers {missing}; rerun the search "
            f"(dvc repro search@{params.model.name})"
        )
    layers = {name: chosen.layers[name] for name in plan}
    prune = dataclasses.replace(
        params.prune,
        method="magnitude",
        density={name: a.density for name, a in layers.items()},
        units={name: a.units for name, a in layers.items()},
    )
    quantize = dataclasses.replace(
        params.quantize,
        bits={name: a.weight_bits for name, a in layers.items()},
        bias=chosen.bias,
    )
    encode = dataclasses.replace(
        params.encode,
        index_bits={
            name: "auto" if a.index_bits is None else a.index_bits for name, a in layers.items()
        },
    )
    for section, config in (("prune", prune), ("quantize", quantize), ("encode", encode)):
        config.validate(f"{key}.{section}")
    searched = dataclasses.replace(params, prune=prune, quantize=quantize, encode=encode)
    kept = {name: NetworkLayer(p.kind, p.numel) for name, p in plan.items()}
    return searched, resolve_plan(searched, kept)
