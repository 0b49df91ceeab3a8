"""Read params.yaml into a validated `Params`, checking every layer table against the model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from deepcompression.config import ConfigError, Params, from_dict, to_dict
from deepcompression.plan import LayerPlan, plan_layers

DEFAULT_PARAMS = Path("params.yaml")


def load_params(path: Path | str = DEFAULT_PARAMS) -> tuple[Params, dict[str, LayerPlan]]:
    """Parse and validate params.yaml and resolve its per-layer plan; ConfigError on any problem."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass the params file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    params = from_dict(Params, raw)
    return params, plan_layers(params)


def params_hash(params: Params) -> str:
    """Short, stable hash of the whole params: a tag that groups runs of one configuration."""
    canonical = json.dumps(to_dict(params), sort_keys=True).encode()
    return hashlib.sha256(canonical).hexdigest()[:10]


def apply_override(raw: dict, assignment: str) -> None:
    """Apply `a.b.c=value` to nested dict `raw` (value parsed as YAML), like `dvc exp run -S`."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {assignment!r} is not KEY=VALUE (e.g. train.epochs=5)")
    *parents, last = key.split(".")
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {assignment!r}: {part!r} is not a section")
    node[last] = yaml.safe_load(text)


def write_overridden_params(base: Path | str, assignments: list[str], root: Path) -> Path:
    """Write `root/params.yaml`: `base` with the overrides applied, validated first."""
    raw = yaml.safe_load(Path(base).read_text()) or {}
    for assignment in assignments:
        apply_override(raw, assignment)
    plan_layers(from_dict(Params, raw))
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
