"""The per-layer choices the prune, quantize and encode stages use: params.yaml's hand-set tables,
or (with `allocation: searched`) the search stage's chosen file, search/<model>/allocation.json."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from deepcompression.config import ConfigError, RunParams
from deepcompression.plan import LayerPlan
from deepcompression.search.space import Allocation


def allocation_path(root: Path | str, model: str) -> Path:
    """`search/<model>/allocation.json`: the search stage's chosen allocation (git-tracked)."""
    return Path(root) / "search" / model / "allocation.json"


def read_allocation(root: Path | str, model: str) -> Allocation:
    """The chosen allocation; a missing file says what to run."""
    path = allocation_path(root, model)
    if not path.is_file():
        raise ConfigError(
            f"params.yaml: models.{model}.allocation: 'searched' needs {path}; run the search "
            f"(dvc repro search@{model}) or set allocation: params"
        )
    return Allocation.from_dict(json.loads(path.read_text())["allocation"])


def effective_params(
    params: RunParams, plan: dict[str, LayerPlan], root: Path | str
) -> tuple[RunParams, dict[str, LayerPlan]]:
    """`params` and `plan` as given (allocation: params), or with the searched densities
    (magnitude pruning), units kept, weight bits, index widths (None: auto) and bias storage in
    place of the hand tables."""
    if params.allocation != "searched":
        return params, plan
    chosen = read_allocation(root, params.model.name)
    missing = sorted(set(plan) - set(chosen.layers))
    if missing:
        raise ConfigError(
            f"params.yaml: models.{params.model.name}.allocation: the searched allocation has no "
            f"entry for layers {missing}; rerun the search (dvc repro search@{params.model.name})"
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
    new_plan = {
        name: dataclasses.replace(
            p,
            prune_target=layers[name].density,
            weight_bits=layers[name].weight_bits,
            index_bits=layers[name].index_bits,
            units_kept=layers[name].units,
        )
        for name, p in plan.items()
    }
    new_params = dataclasses.replace(params, prune=prune, quantize=quantize, encode=encode)
    return new_params, new_plan
