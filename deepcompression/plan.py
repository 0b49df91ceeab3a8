"""Per-layer compression plan: the params tables resolved against a concrete network.

Every Linear and Conv2d layer gets its pruning target, weight bits and index width here, so a
missing or misspelt entry fails at start-up with the layer's name, never half-way through a run.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from deepcompression.config import (
    ConfigError,
    LayerTable,
    RunParams,
    check_layer_table,
    layer_value,
)
from models import build_model, model_names


@dataclass(frozen=True)
class LayerPlan:
    """What happens to one layer: prune target (density or quality), weight bits, index bits."""

    name: str
    kind: str
    numel: int
    prune_target: float
    weight_bits: int
    index_bits: int


def compressible_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Every Linear and Conv2d layer, by module name, in model order."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear | nn.Conv2d)
    }


def layer_kind(module: nn.Module) -> str:
    """`conv` for convolutions, `fc` for fully connected layers (the params tables' kind keys)."""
    return "conv" if isinstance(module, nn.Conv2d) else "fc"


def check_model_name(name: str) -> None:
    """An unknown model name lists the registered ones."""
    if name not in model_names():
        raise ConfigError(
            f"params.yaml: models.{name}: unknown model {name!r}; registered: "
            f"{', '.join(model_names())}"
        )


def plan_layers(params: RunParams) -> dict[str, LayerPlan]:
    """Resolve every per-layer table of one model's params; raises ConfigError on any gap."""
    check_model_name(params.model.name)
    model = build_model(params.model.name)
    layers = compressible_layers(model)
    kinds = {name: layer_kind(module) for name, module in layers.items()}
    prune_table: LayerTable
    section = f"models.{params.model.name}"
    prune_table: LayerTable
    if params.prune.method == "magnitude":
        prune_table, prune_key = params.prune.density, f"{section}.prune.density"
    else:
        prune_table, prune_key = params.prune.quality, f"{section}.prune.quality"
    bits_key, index_key = f"{section}.quantize.bits", f"{section}.encode.index_bits"
    tables = {
        prune_key: prune_table,
        bits_key: params.quantize.bits,
        index_key: params.encode.index_bits,
    }
    for key, table in tables.items():
        check_layer_table(table, kinds, key)
    return {
        name: LayerPlan(
            name=name,
            kind=kind,
            numel=layers[name].weight.numel(),
            prune_target=layer_value(prune_table, name, kind, prune_key),
            weight_bits=int(layer_value(params.quantize.bits, name, kind, bits_key)),
            index_bits=int(layer_value(params.encode.index_bits, name, kind, index_key)),
        )
        for name, kind in kinds.items()
    }
