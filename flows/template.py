"""A starting `models:` section for a registered network: `python -m flows.check --new-model NAME`.

The section's keys are those of a section already in params.yaml (every key is required, so any
valid section has them all); its per-layer tables are keyed by kind (conv, fc) for the network
built for the data, with the output layer by name where it must keep every unit. The values are
starting points, not tuned: `allocation: params` uses them at no search cost, `searched` lets
the search choose per layer within the ranges.
"""

from __future__ import annotations

import copy
import textwrap
from typing import Any

import yaml

from deepcompression.config import ConfigError
from deepcompression.data.tensors import DataShape
from deepcompression.plan import NetworkLayer, network_layers
from models import model_names

KIND_VALUES: dict[str, dict[str, float | str]] = {
    "prune.density": {"conv": 0.4, "fc": 0.1},
    "prune.quality": {"conv": 1.0, "fc": 1.0},
    "prune.units": {"conv": 1.0, "fc": 1.0},
    "quantize.bits": {"conv": 8, "fc": 5},
    "encode.index_bits": {"conv": "auto", "fc": "auto"},
    "search.density_min": {"conv": 0.05, "fc": 0.01},
    "search.density_max": {"conv": 1.0, "fc": 0.5},
    "search.units_min": {"conv": 1.0, "fc": 1.0},
    "search.bits_min": {"conv": 2, "fc": 2},
    "search.bits_max": {"conv": 8, "fc": 6},
}
"""Each table's value per layer kind: the paper's ballpark (conv layers keep more weights and bits
than fully connected ones)."""

OUTPUT_VALUES = {"prune.density": 0.3}
"""Tables whose output layer gets its own entry (it is small: pruning it hard costs accuracy)."""


def _set(section: dict[str, Any], dotted: str, value: Any) -> None:
    """section[a][b] = value for `dotted` "a.b"."""
    parent, key = dotted.split(".")
    section[parent][key] = value


def template_section(base: dict[str, Any], layers: dict[str, NetworkLayer]) -> dict[str, Any]:
    """A copy of the section `base` with every table sized for `layers`, no checkpoint, no
    excluded layer, no distillation and `allocation: params`."""
    section = copy.deepcopy(base)
    kinds = sorted({layer.kind for layer in layers.values()})
    output = list(layers)[-1]
    for dotted, values in KIND_VALUES.items():
        if section.get(dotted.split(".")[0]) is None:
            continue  # an optional section (search) the base leaves out
        table: dict[str, Any] = {kind: values[kind] for kind in kinds}
        if dotted in OUTPUT_VALUES:
            table[output] = OUTPUT_VALUES[dotted]
        _set(section, dotted, table)
    _set(section, "train.checkpoint", None)
    _set(section, "prune.exclude", [])
    section.update(allocation="params", distill=None)
    return section


def _summary(name: str, layers: dict[str, NetworkLayer], shape: DataShape) -> list[str]:
    """Comment lines: what the network is for this data, and its layers by kind."""
    by_kind: dict[str, list[int]] = {}
    for layer in layers.values():
        by_kind.setdefault(layer.kind, []).append(layer.numel)
    counts = ", ".join(
        f"{len(sizes)} {kind} ({sum(sizes):,} weights)" for kind, sizes in sorted(by_kind.items())
    )
    text = (
        f"{name} for this data ({shape.channels}x{shape.image_size}x{shape.image_size} inputs, "
        f"{shape.num_classes} classes): {len(layers)} Linear/Conv2d layers, {counts}; output "
        f"layer {list(layers)[-1]}. Tables are keyed by kind; add a layer's name to set it alone. "
        "Units (unit pruning) start at 1.0, all kept: lower them for a plain chain of layers. "
        "Start with allocation: params (these tables, no sensitivity or search cost); set it to "
        "searched to let the search choose per layer within the ranges of `search` (trials and "
        "train_limit set its cost). Raise train.epochs for a small data set; give "
        "train.checkpoint a state_dict file to skip training."
    )
    return [f"# {line}" for line in textwrap.wrap(text, 96)]


def new_model_text(name: str, base: dict[str, Any], shape: DataShape) -> str:
    """The commented YAML of a `models:` entry for registered network `name`, to paste under
    `models:` in params.yaml."""
    if name not in model_names():
        raise ConfigError(
            f"--new-model {name}: not a registered network; registered: {', '.join(model_names())}"
        )
    layers = network_layers(name, shape)
    body = yaml.safe_dump(
        {name: template_section(base, layers)}, sort_keys=False, default_flow_style=False
    )
    indented = "".join(f"  {line}\n" for line in body.splitlines())
    return "\n".join(_summary(name, layers, shape)) + "\n" + indented
