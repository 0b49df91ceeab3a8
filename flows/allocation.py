"""The per-layer choices the prune, quantize and encode stages use: params.yaml's hand-set tables,
or (with `allocation: searched`) the confirm stage's choice, search/<model>/confirmed.json: the
search's pick, or the front point after it whose full-length file met the validation target."""

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


def confirmed_path(root: Path | str, model: str) -> Path:
    """`search/<model>/confirmed.json`: the confirm stage's choice (git-tracked)."""
    return Path(root) / "search" / model / "confirmed.json"


def read_allocation(root: Path | str, model: str) -> Allocation:
    """The confirmed allocation; a missing or skipped one says what to run."""
    path = confirmed_path(root, model)
    if not path.is_file():
        raise ConfigError(
            f"params.yaml: models.{model}.allocation: 'searched' needs {path}; run the search "
            f"and its confirmation (dvc repro confirm@{model}) or set allocation: params"
        )
    record = json.loads(path.read_text())
    if "allocation" not in record:
        raise ConfigError(
            f"{path} holds no allocation ({record.get('skipped', 'not a confirm record')}); "
            f"run dvc repro confirm@{model}"
        )
    return Allocation.from_dict(record["allocation"])


def effective_params(
    params: RunParams, plan: dict[str, LayerPlan], root: Path | str
) -> tuple[RunParams, dict[str, LayerPlan]]:
    """`params` and `plan` as given (allocation: params), or with the confirmed allocation in
    place of the hand-set tables (allocation: searched)."""
    if params.allocation != "searched":
        return params, plan
    chosen = read_allocation(root, params.model.name)
    try:
        return apply_allocation(params, plan, chosen)
    except ConfigError as err:
        raise ConfigError(f"{confirmed_path(root, params.model.name)}: {err}") from None
