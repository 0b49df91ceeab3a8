"""Per-layer compression plan: the params tables resolved against a concrete network.

Every Linear and Conv2d layer gets its pruning target, weight bits and index width here, so a
missing or misspelt entry fails at start-up with the layer's name, never half-way through a run.
Layers matched by `prune.exclude` (fnmatch patterns of layer names) get no plan: they are neither
pruned nor shared, and stay dense float32 in the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase

from torch import nn

from deepcompression.config import (
    LAYER_KINDS,
    ConfigError,
    DataConfig,
    LayerTable,
    RunParams,
    check_layer_table,
    layer_value,
)
from deepcompression.data.mnist import MNIST_SHAPE, DataShape
from models import build_model, model_names


@dataclass(frozen=True)
class LayerPlan:
    """What happens to one layer: prune target (density or quality), fraction of output units
    kept, weight bits, index bits (None: `auto`, the writer picks the smallest file's width)."""

    name: str
    kind: str
    numel: int
    prune_target: float
    weight_bits: int
    index_bits: int | None
    units_kept: float = 1.0


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


def shape_hint(data: DataConfig) -> DataShape:
    """The data's shape as far as params.yaml tells it, before the data is prepared: MNIST's, or
    the channels of `mean` and the `image_size` (class count and other sizes: MNIST's). Enough to
    check the layer tables by name; the stages plan with the prepared data's real shape."""
    if data.is_mnist:
        return MNIST_SHAPE
    return DataShape(
        channels=len(data.mean) if data.mean is not None else MNIST_SHAPE.channels,
        image_size=data.image_size or MNIST_SHAPE.image_size,
        num_classes=MNIST_SHAPE.num_classes,
    )


def excluded_layers(layers: Sequence[str], patterns: Sequence[str], key: str) -> list[str]:
    """The layers matched by any exclude pattern (fnmatch, case-sensitive, on the full layer
    name); a pattern matching no layer is an error listing the layers."""
    excluded = []
    for i, pattern in enumerate(patterns):
        matched = [name for name in layers if fnmatchcase(name, pattern)]
        if not matched:
            raise ConfigError(
                f"params.yaml: {key}[{i}]: {pattern!r} matches no Linear/Conv2d layer; layers: "
                f"{', '.join(layers)}"
            )
        excluded += [name for name in matched if name not in excluded]
    return [name for name in layers if name in excluded]


def _index_bits(value: float | str) -> int | None:
    """A fixed index width, or None for `auto`."""
    return None if value == "auto" else int(value)


def plan_layers(params: RunParams, shape: DataShape | None = None) -> dict[str, LayerPlan]:
    """Resolve every per-layer table of one model's params for the network built for `shape`
    (default: `shape_hint`); raises ConfigError on any gap. Excluded layers get no plan."""
    check_model_name(params.model.name)
    shape = shape if shape is not None else shape_hint(params.data)
    model = build_model(params.model.name, **shape.model_kwargs())
    layers = compressible_layers(model)
    section = f"models.{params.model.name}"
    excluded = excluded_layers(list(layers), params.prune.exclude or (), f"{section}.prune.exclude")
    if len(excluded) == len(layers):
        raise ConfigError(
            f"params.yaml: {section}.prune.exclude: excludes every Linear/Conv2d layer "
            f"({', '.join(layers)}); nothing would be compressed"
        )
    kinds = {name: layer_kind(module) for name, module in layers.items() if name not in excluded}
    prune_table: LayerTable
    if params.prune.method == "magnitude":
        prune_table, prune_key = params.prune.density, f"{section}.prune.density"
    else:
        prune_table, prune_key = params.prune.quality, f"{section}.prune.quality"
    bits_key, index_key = f"{section}.quantize.bits", f"{section}.encode.index_bits"
    units_key = f"{section}.prune.units"
    tables = {
        prune_key: prune_table,
        units_key: params.prune.units,
        bits_key: params.quantize.bits,
        index_key: params.encode.index_bits,
    }
    for key, table in tables.items():
        for name in table:
            if name in excluded and name not in LAYER_KINDS:
                raise ConfigError(
                    f"params.yaml: {key}.{name}: layer {name!r} is excluded by "
                    f"{section}.prune.exclude (stored dense); remove this entry"
                )
        check_layer_table(table, kinds, key)
    return {
        name: LayerPlan(
            name=name,
            kind=kind,
            numel=layers[name].weight.numel(),
            prune_target=layer_value(prune_table, name, kind, prune_key),
            weight_bits=int(layer_value(params.quantize.bits, name, kind, bits_key)),
            index_bits=_index_bits(layer_value(params.encode.index_bits, name, kind, index_key)),
            units_kept=layer_value(params.prune.units, name, kind, units_key),
        )
        for name, kind in kinds.items()
    }
