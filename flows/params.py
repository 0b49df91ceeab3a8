"""Read params.yaml into a validated `Params`, checking every layer table against the model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import yaml

from deepcompression.config import ConfigError, Params, RunParams, from_dict, to_dict
from deepcompression.plan import LayerPlan, plan_layers

DEFAULT_PARAMS = Path("params.yaml")


def read_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """Parse and validate the whole params.yaml, every model's plan included; ConfigError if bad."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass the params file")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    params = from_dict(Params, raw)
    for model in params.models:
        plan_layers(params.select(model))
    return params


def load_params(
    path: Path | str = DEFAULT_PARAMS, model: str | None = None
) -> tuple[RunParams, dict[str, LayerPlan]]:
    """One model's validated params and per-layer plan (the first model listed when `model` is
    None); the whole file is checked, so a typo anywhere fails before any work."""
    params = read_params(path)
    run = params.select(model if model is not None else next(iter(params.models)))
    return run, plan_layers(run)


def params_hash(params: Params | RunParams) -> str:
    """Short, stable hash of params: a tag that groups runs of one configuration."""
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
    params = from_dict(Params, raw)
    for model in params.models:
        plan_layers(params.select(model))
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
