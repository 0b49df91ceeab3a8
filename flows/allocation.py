"""The per-layer choices the prune, quantize and encode stages use: params.yaml's hand-set tables,
or (with `allocation: searched`) the search stage's chosen file, search/<model>/allocation.json."""

from __future__ import annotations

import json
from pathlib import Path

from deepcompression.config import ConfigError, RunParams
from deepcompression.plan import LayerPlan
from deepcompression.search.chosen import apply_allocation
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
    """`params` and `plan` as given (allocation: params), or with the search's chosen allocation
    in place of the hand-set tables (allocation: searched)."""
    if params.allocation != "searched":
        return params, plan
    chosen = read_allocation(root, params.model.name)
    try:
        return apply_allocation(params, plan, chosen)
    except ConfigError as err:
        raise ConfigError(f"{allocation_path(root, params.model.name)}: {err}") from None
