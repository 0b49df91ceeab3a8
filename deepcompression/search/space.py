"""What a compression search varies per layer, and how one point of it is written down.

An `Allocation` is one choice for every compressed layer (density, fraction of output units kept,
weight bits, index width) plus the bias storage; a `SearchSpace` holds each layer's ranges,
resolved from the search section's per-layer tables. Optuna parameters are named
`<what>.<layer>` (e.g. `density.fc1`), so a study's trials read back as allocations.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from deepcompression.config import (
    BiasMode,
    ConfigError,
    IndexChoice,
    SearchConfig,
    check_layer_table,
    layer_value,
)

INDEX_BITS_RANGE = (2, 12)
"""Index widths a `search` index choice tries (the exact-size `auto` choice tries the same)."""


@dataclass(frozen=True)
class LayerAllocation:
    """One layer's choice: density, fraction of output units kept, weight bits, index width
    (None: the width with the fewest exact bytes)."""

    density: float
    units: float
    weight_bits: int
    index_bits: int | None


@dataclass(frozen=True)
class Allocation:
    """A choice for every compressed layer, and how biases are stored."""

    layers: dict[str, LayerAllocation]
    bias: BiasMode = "float32"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (the allocation file, the front's rows)."""
        return {"layers": {k: asdict(v) for k, v in self.layers.items()}, "bias": self.bias}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Allocation:
        """Inverse of `to_dict`."""
        layers = {k: LayerAllocation(**v) for k, v in data["layers"].items()}
        return cls(layers=layers, bias=data["bias"])


@dataclass(frozen=True)
class LayerRange:
    """A layer's search ranges; `units_min` 1.0 (or an output layer) means units are not varied."""

    density_min: float
    density_max: float
    units_min: float
    bits_min: int
    bits_max: int


@dataclass(frozen=True)
class SearchSpace:
    """Per-layer ranges, the index-width choice and the bias storages to try."""

    layers: dict[str, LayerRange]
    index_bits: IndexChoice
    bias: tuple[BiasMode, ...]


def resolve_space(
    cfg: SearchConfig, kinds: Mapping[str, str], outputs: Sequence[str], key: str
) -> SearchSpace:
    """Each layer's ranges from the per-layer tables (`kinds`: layer -> conv/fc); layers in
    `outputs` keep every unit. A gap or an unknown layer name is a ConfigError naming the key."""
    tables = ("density_min", "density_max", "units_min", "bits_min", "bits_max")
    for name in tables:
        check_layer_table(getattr(cfg, name), kinds, f"{key}.{name}")
    layers = {}
    for layer, kind in kinds.items():
        values = {n: layer_value(getattr(cfg, n), layer, kind, f"{key}.{n}") for n in tables}
        for low, high in (("density_min", "density_max"), ("bits_min", "bits_max")):
            if values[low] > values[high]:
                raise ConfigError(
                    f"{key}.{low}: {values[low]!r} for layer {layer!r} is above "
                    f"{high} ({values[high]!r})"
                )
        layers[layer] = LayerRange(
            density_min=values["density_min"],
            density_max=values["density_max"],
            units_min=1.0 if layer in outputs else values["units_min"],
            bits_min=int(values["bits_min"]),
            bits_max=int(values["bits_max"]),
        )
    return SearchSpace(layers=layers, index_bits=cfg.index_bits, bias=cfg.bias)


def suggest(trial: Any, space: SearchSpace) -> Allocation:
    """The allocation an Optuna trial asks for (density on a log scale, the rest uniform)."""
    layers = {}
    for layer, r in space.layers.items():
        density = _float(trial, f"density.{layer}", r.density_min, r.density_max, log=True)
        units = _float(trial, f"units.{layer}", r.units_min, 1.0)
        bits = _int(trial, f"bits.{layer}", r.bits_min, r.bits_max)
        index = None
        if space.index_bits == "search":
            index = _int(trial, f"index.{layer}", *INDEX_BITS_RANGE)
        layers[layer] = LayerAllocation(density, units, bits, index)
    bias = space.bias[0] if len(space.bias) == 1 else trial.suggest_categorical("bias", space.bias)
    return Allocation(layers=layers, bias=bias)


def _float(trial: Any, name: str, low: float, high: float, log: bool = False) -> float:
    """A float parameter, or the fixed value when the range is a single point."""
    return low if low == high else trial.suggest_float(name, low, high, log=log)


def _int(trial: Any, name: str, low: int, high: int) -> int:
    """An int parameter, or the fixed value when the range is a single point."""
    return low if low == high else trial.suggest_int(name, low, high)


def trial_params(allocation: Allocation, space: SearchSpace) -> dict[str, Any]:
    """The Optuna parameters that make `suggest` return `allocation` (clipped into the space):
    what `enqueue_trial` takes to seed a study with a known point."""
    params: dict[str, Any] = {}
    for layer, r in space.layers.items():
        chosen = allocation.layers[layer]
        if r.density_min < r.density_max:
            params[f"density.{layer}"] = min(max(chosen.density, r.density_min), r.density_max)
        if r.units_min < 1.0:
            params[f"units.{layer}"] = min(max(chosen.units, r.units_min), 1.0)
        if r.bits_min < r.bits_max:
            params[f"bits.{layer}"] = min(max(chosen.weight_bits, r.bits_min), r.bits_max)
        if space.index_bits == "search" and chosen.index_bits is not None:
            low, high = INDEX_BITS_RANGE
            params[f"index.{layer}"] = min(max(chosen.index_bits, low), high)
    if len(space.bias) > 1:
        params["bias"] = allocation.bias if allocation.bias in space.bias else space.bias[0]
    return params


def describe(allocation: Allocation) -> list[str]:
    """Short `layer:d=..,u=..,q=..,i=..` tags of an allocation (task run tags in the UI)."""
    tags = []
    for layer, a in allocation.layers.items():
        index = "auto" if a.index_bits is None else str(a.index_bits)
        tags.append(f"{layer}:d={a.density:.4f},u={a.units:.2f},q={a.weight_bits},i={index}")
    return [*tags, f"bias:{allocation.bias}"]
