"""Read params.yaml once per process into validated `Params` and every model's per-layer plan.

The file is parsed, checked and planned once per content: a stage process that asks again (the
stage entry, then the flow) gets the same objects back. Errors name the file and the key's path.
The `schedule:` section belongs to the scheduled reruns (runtime/schedule.py reads and checks it);
no stage reads it, so it is set aside here.
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import Any

import yaml

from deepcompression.config import ConfigError, ModelParams, Params, RunParams
from deepcompression.data.tensors import DataShape
from deepcompression.plan import LayerPlan, plan_layers, shape_hint
from deepcompression.schema import from_dict, to_dict

DEFAULT_PARAMS = Path("params.yaml")
RUNTIME_SECTIONS = ("schedule",)
"""Top-level sections no stage reads: checked by the runtime that uses them."""

Plans = dict[str, dict[str, LayerPlan]]
"""Every model's per-layer plan, by model name."""


def check_raw(raw: Any) -> tuple[Params, Plans]:
    """Validate a parsed params file and plan every model's layers; ConfigError if bad."""
    if isinstance(raw, dict):
        raw = {k: v for k, v in raw.items() if k not in RUNTIME_SECTIONS}
    params = from_dict(Params, raw)
    return params, {model: plan_model(params.select(model)) for model in params.models}


def plan_model(params: RunParams, shape: DataShape | None = None) -> dict[str, LayerPlan]:
    """`plan_layers`, where a network that cannot be built for the data's shape (default: as
    far as the params tell it) is a ConfigError naming the model, the data key and the fix."""
    try:
        return plan_layers(params, shape)
    except ConfigError:
        raise
    except ValueError as err:
        name, size = params.model.name, (shape or shape_hint(params.data))
        raise ConfigError(
            f"models.{name}: {err}; the data gives it {size.channels}x{size.image_size}x"
            f"{size.image_size} inputs (data.image_size, else the images' own size). Set "
            f"data.image_size to a size {name} takes, or remove models.{name} from params.yaml "
            "(every model under `models` is run)"
        ) from None


@functools.lru_cache(maxsize=8)
def _parsed(path: str, text: bytes) -> tuple[Params, Plans]:
    """The checked params and plans of a file's content, computed once per content."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    try:
        return check_raw(raw)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None


def _read(path: Path | str) -> tuple[Params, Plans]:
    """The file's checked params and plans (from the cache when its content was seen)."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found; run from the project root or pass the params file")
    return _parsed(str(path), path.read_bytes())


def read_params(path: Path | str = DEFAULT_PARAMS) -> Params:
    """The whole params file, validated with every model's plan; ConfigError if bad."""
    return _read(path)[0]


def load_params(
    path: Path | str = DEFAULT_PARAMS, model: str | None = None
) -> tuple[RunParams, dict[str, LayerPlan]]:
    """One model's validated params and per-layer plan (the first model listed when `model` is
    None); the whole file is checked, so a typo anywhere fails before any work."""
    params, plans = _read(path)
    run = params.select(model if model is not None else next(iter(params.models)))
    return run, dict(plans[run.model.name])


def model_section(path: Path | str, model: str, key: str) -> ModelParams:
    """The model's whole section; its `key` section (sensitivity, search) must be present."""
    section = read_params(path).models[model]
    if getattr(section, key) is None:
        raise ConfigError(
            f"{path}: models.{model}.{key}: missing section; the {key} stage needs it "
            "(see params.yaml in the repository)"
        )
    return section


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
    try:
        check_raw(raw)
    except ConfigError as err:
        raise ConfigError(f"{base} with {' '.join(assignments)}: {err}") from None
    root.mkdir(parents=True, exist_ok=True)
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path
