"""Per-layer compression plan: the params tables resolved against a concrete network.

Every Linear and Conv2d layer gets its pruning target, weight bits and index width here, so a
missing or misspelt entry fails at start-up with the layer's name, never half-way through a run.
Layers matched by `prune.exclude` (fnmatch patterns of layer names) get no plan: they are neither
pruned nor shared, and stay dense float32 in the file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
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
from deepcompression.data.mnist import MNIST_SHAPE
from deepcompression.data.tensors import DataShape
from deepcompression.networks import build_model, model_names


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
            f"models.{name}: unknown model {name!r}; registered: {', '.join(model_names())}"
        )


def shape_hint(data: DataConfig) -> DataShape:
    """The data's shape as far as its config tells it, before the data is prepared: MNIST's, or
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
                f"{key}[{i}]: {pattern!r} matches no Linear/Conv2d layer; layers: "
                f"{', '.join(layers)}"
            )
        excluded += [name for name in matched if name not in excluded]
    return [name for name in layers if name in excluded]


def _index_bits(value: float | str) -> int | None:
    """A fixed index width, or None for `auto`."""
    return None if value == "auto" else int(value)


@dataclass(frozen=True)
class NetworkLayer:
    """What a plan needs of one Linear/Conv2d layer: its kind and its weight count."""

    kind: str
    numel: int


def network_layers(model: str, shape: DataShape) -> dict[str, NetworkLayer]:
    """Every Linear and Conv2d layer of `model` built for `shape`, by name, in model order."""
    check_model_name(model)
    layers = compressible_layers(build_model(model, **shape.model_kwargs()))
    return {
        name: NetworkLayer(layer_kind(module), module.weight.numel())
        for name, module in layers.items()
    }


def plan_layers(params: RunParams, shape: DataShape | None = None) -> dict[str, LayerPlan]:
    """Resolve every per-layer table of one model's params for the network built for `shape`
    (default: `shape_hint`); raises ConfigError on any gap. Excluded layers get no plan."""
    shape = shape if shape is not None else shape_hint(params.data)
    layers = network_layers(params.model.name, shape)
    section = f"models.{params.model.name}"
    excluded = excluded_layers(list(layers), params.prune.exclude or (), f"{section}.prune.exclude")
    if len(excluded) == len(layers):
        raise ConfigError(
            f"{section}.prune.exclude: excludes every Linear/Conv2d layer "
            f"({', '.join(layers)}); nothing would be compressed"
        )
    for key, table in _tables(params).items():
        for name in table:
            if name in excluded and name not in LAYER_KINDS:
                raise ConfigError(
                    f"{key}.{name}: layer {name!r} is excluded by {section}.prune.exclude (stored "
                    "dense); remove this entry"
                )
    return resolve_plan(params, {n: a for n, a in layers.items() if n not in excluded})


def _tables(params: RunParams) -> dict[str, LayerTable]:
    """The model's per-layer tables by key path: prune target, units kept, bits, index widths."""
    section = f"models.{params.model.name}"
    target = "density" if params.prune.method == "magnitude" else "quality"
    return {
        f"{section}.prune.{target}": getattr(params.prune, target),
        f"{section}.prune.units": params.prune.units,
        f"{section}.quantize.bits": params.quantize.bits,
        f"{section}.encode.index_bits": params.encode.index_bits,  # type: ignore[dict-item]
    }


def resolve_plan(params: RunParams, layers: Mapping[str, NetworkLayer]) -> dict[str, LayerPlan]:
    """Every layer's values from the params' tables (a layer's own entry, else its kind's); a
    table entry naming no layer, or a layer without a value, is a ConfigError."""
    kinds = {name: layer.kind for name, layer in layers.items()}
    tables = _tables(params)
    for key, table in tables.items():
        check_layer_table(table, kinds, key)
    prune_key, units_key, bits_key, index_key = tables
    return {
        name: LayerPlan(
            name=name,
            kind=layer.kind,
            numel=layer.numel,
            prune_target=layer_value(tables[prune_key], name, layer.kind, prune_key),
            weight_bits=int(layer_value(tables[bits_key], name, layer.kind, bits_key)),
            index_bits=_index_bits(layer_value(tables[index_key], name, layer.kind, index_key)),
            units_kept=layer_value(tables[units_key], name, layer.kind, units_key),
        )
        for name, layer in layers.items()
    }
