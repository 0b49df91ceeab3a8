"""Trained quantization by weight sharing (Deep Compression, section 3).

Each Linear/Conv2d weight is clustered with 1-D k-means over its surviving (mask True) entries.
While sharing is active the layer's weight is computed as ``centroids[labels]`` at surviving
positions and exactly ``+0.0`` at pruned ones, from a trainable centroid Parameter, so autograd
gives every centroid the sum of its weights' gradients (paper eq. 3).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from deepcompression.compress.kmeans import (
    DEFAULT_ENGINE,
    DEFAULT_INIT,
    CentroidInit,
    KMeansEngine,
    kmeans_1d,
)
from deepcompression.config import MAX_BIAS_BITS, MAX_BITS, BiasMode

MIN_BITS = 1
SHAREABLE_LAYERS: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)


class QuantizationError(ValueError):
    """Raised for invalid codebooks, bit widths, masks or layer names in weight sharing."""


class _SharedGather(torch.autograd.Function):
    """Weights from shared centroids; a centroid's gradient is the sum of its weights' (eq. 3).

    The backward sums with `index_add_` over the surviving weights in a fixed order, so that
    fine-tuning on the CPU is bitwise repeatable (autograd's indexing backward is not).
    """

    @staticmethod
    def forward(ctx, centroids: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        ctx.save_for_backward(labels, mask)
        ctx.n_clusters = centroids.numel()
        return torch.where(mask, centroids[labels], centroids.new_zeros(()))

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        labels, mask = ctx.saved_tensors
        summed = grad.new_zeros(ctx.n_clusters).index_add_(0, labels[mask], grad[mask])
        return summed, None, None


def _gather(centroids: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
    """``centroids[labels]`` where ``mask`` is True and +0.0 elsewhere (differentiable)."""
    if centroids.numel() == 0:
        return centroids.new_zeros(mask.shape)
    return _SharedGather.apply(centroids, labels, mask)


@dataclass(frozen=True)
class LayerCodebook:
    """A layer's shared weights: ``centroids`` (k,), a cluster label per weight, and the mask."""

    centroids: Tensor
    labels: Tensor
    mask: Tensor
    bits: int

    def __post_init__(self) -> None:
        """Check shapes, dtypes and label range so that ``weight()`` cannot fail later."""
        _check_bits("bits", self.bits)
        if self.centroids.dim() != 1 or not self.centroids.is_floating_point():
            raise QuantizationError(
                f"centroids must be a 1-D float tensor, got shape {tuple(self.centroids.shape)} "
                f"and dtype {self.centroids.dtype}"
            )
        if self.centroids.numel() > 2**self.bits:
            raise QuantizationError(
                f"{self.centroids.numel()} centroids do not fit in {self.bits} bits; "
                f"use at most {2**self.bits} centroids or more bits"
            )
        if self.labels.dtype != torch.int64 or self.mask.dtype != torch.bool:
            raise QuantizationError(
                f"labels must be int64 and mask bool, got {self.labels.dtype} and {self.mask.dtype}"
            )
        if self.labels.shape != self.mask.shape:
            raise QuantizationError(
                f"labels shape {tuple(self.labels.shape)} differs from mask shape "
                f"{tuple(self.mask.shape)}; both must have the weight's shape"
            )
        used = self.labels[self.mask]
        if used.numel() and (int(used.min()) < 0 or int(used.max()) >= self.centroids.numel()):
            raise QuantizationError(
                f"labels at surviving positions must lie in [0, {self.centroids.numel()}); "
                "rebuild the codebook with cluster_layer"
            )

    @property
    def n_clusters(self) -> int:
        """Number of centroids in the codebook."""
        return self.centroids.numel()

    def weight(self) -> Tensor:
        """The shared weight: ``centroids[labels]`` at surviving positions, +0.0 at pruned ones."""
        return _gather(self.centroids, self.labels, self.mask)


def _check_bits(key: str, bits: object) -> None:
    """Reject bit widths that are not ints in ``MIN_BITS..MAX_BITS``."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not MIN_BITS <= bits <= MAX_BITS:
        raise QuantizationError(
            f"bits for {key!r} must be an int in {MIN_BITS}..{MAX_BITS}, got {bits!r}"
        )


def _check_mask(key: str, weight: Tensor, mask: Tensor) -> None:
    """Require a bool mask with the weight's shape."""
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise QuantizationError(f"mask for {key!r} must be a bool tensor, got {mask!r:.60}")
    if mask.shape != weight.shape:
        raise QuantizationError(
            f"mask for {key!r} has shape {tuple(mask.shape)} but the weight has "
            f"{tuple(weight.shape)}; pass the mask produced for this weight"
        )


def cluster_layer(
    weight: Tensor,
    mask: Tensor,
    bits: int,
    init: CentroidInit = DEFAULT_INIT,
    seed: int = 0,
    engine: KMeansEngine = DEFAULT_ENGINE,
) -> LayerCodebook:
    """Cluster the surviving entries of one weight into at most ``2**bits`` shared values."""
    _check_bits("weight", bits)
    _check_mask("weight", weight, mask)
    return _cluster(weight, mask, bits, init, seed, engine)


def _cluster(
    weight: Tensor, mask: Tensor, bits: int, init: CentroidInit, seed: int, engine: KMeansEngine
) -> LayerCodebook:
    """``cluster_layer`` for a width and mask already checked."""
    if not weight.is_floating_point():
        raise QuantizationError(f"weight must be a float tensor, got dtype {weight.dtype}")
    mask = mask.to(weight.device)
    values = weight.detach()[mask].to("cpu", torch.float64).numpy()
    centroids, labels = kmeans_1d(values, 2**bits, init=init, seed=seed, engine=engine)
    full_labels = torch.zeros(weight.shape, dtype=torch.int64, device=weight.device)
    full_labels[mask] = torch.from_numpy(labels).to(weight.device)
    return LayerCodebook(
        centroids=torch.from_numpy(centroids).to(weight.device),
        labels=full_labels,
        mask=mask.clone(),
        bits=bits,
    )


def _shareable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear and Conv2d submodules of ``model`` by name."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, SHAREABLE_LAYERS) and name
    }


def cluster_model(
    model: nn.Module,
    masks: Mapping[str, Tensor],
    bits: Mapping[str, int],
    init: CentroidInit = DEFAULT_INIT,
    seed: int = 0,
    engine: KMeansEngine = DEFAULT_ENGINE,
) -> dict[str, LayerCodebook]:
    """Codebooks for the layers named in ``bits`` (layer name -> bit width), keyed "layer.weight".

    A layer without an entry in ``masks`` is treated as unpruned (every weight survives).
    Everything is validated before any clustering starts.
    """
    layers = _shareable_layers(model)
    plan: dict[str, tuple[Tensor, Tensor, int]] = {}
    for name, width in bits.items():
        if name not in layers:
            raise QuantizationError(
                f"bits names layer {name!r}, which is not a Linear/Conv2d layer of the model; "
                f"allowed layer names: {sorted(layers)}"
            )
        _check_bits(name, width)
        key = f"{name}.weight"
        weight = layers[name].weight
        mask = masks.get(key)
        if mask is None:
            mask = torch.ones_like(weight, dtype=torch.bool)
        _check_mask(key, weight, mask)
        plan[key] = (weight, mask, width)
    return {
        key: _cluster(weight, mask, width, init, seed, engine)
        for key, (weight, mask, width) in plan.items()
    }


class _SharedWeight(nn.Module):
    """Parametrization computing a weight from its centroids; labels and mask are buffers."""

    def __init__(self, codebook: LayerCodebook, device: torch.device, param_order: tuple[str, ...]):
        super().__init__()
        self.register_buffer("labels", codebook.labels.to(device).clone())
        self.register_buffer("mask", codebook.mask.to(device).clone())
        self.n_clusters = codebook.n_clusters
        self.bits = codebook.bits
        self.param_order = param_order

    def forward(self, centroids: Tensor) -> Tensor:
        """Expand the centroids to the full weight."""
        return _gather(centroids, self.labels, self.mask)

    def right_inverse(self, weight: Tensor) -> Tensor:
        """Least-squares centroids for a full weight: each cluster's mean surviving value."""
        picked = self.labels[self.mask]
        sums = weight.new_zeros(self.n_clusters).index_add_(0, picked, weight[self.mask])
        ones = torch.ones_like(picked, dtype=weight.dtype)
        counts = weight.new_zeros(self.n_clusters).index_add_(0, picked, ones)
        return sums / counts.clamp(min=1)


def _shared_parametrization(module: nn.Module) -> _SharedWeight | None:
    """The weight-sharing parametrization of ``module``'s weight, if it has one."""
    if not parametrize.is_parametrized(module, "weight"):
        return None
    found = [p for p in module.parametrizations["weight"] if isinstance(p, _SharedWeight)]
    return found[0] if found else None


def _resolve(model: nn.Module, key: str, codebook: LayerCodebook) -> nn.Module:
    """The layer behind a "layer.weight" key, checked to be shareable with ``codebook``."""
    layers = _shareable_layers(model)
    name, _, attr = key.rpartition(".")
    if attr != "weight" or name not in layers:
        raise QuantizationError(
            f"codebook key {key!r} must be '<layer>.weight' for a Linear/Conv2d layer; "
            f"allowed keys: {sorted(f'{n}.weight' for n in layers)}"
        )
    module = layers[name]
    if parametrize.is_parametrized(module, "weight"):
        raise QuantizationError(f"{key!r} is already parametrized; call strip_(model) first")
    if codebook.labels.shape != module.weight.shape:
        raise QuantizationError(
            f"codebook for {key!r} has shape {tuple(codebook.labels.shape)} but the weight has "
            f"{tuple(module.weight.shape)}; rebuild it with cluster_model for this model"
        )
    return module


def share_weights_(model: nn.Module, codebooks: Mapping[str, LayerCodebook]) -> None:
    """Replace each listed weight by trainable centroids gathered through fixed labels (in place).

    Afterwards ``model.parameters()`` yields the centroids instead of those weights.
    """
    modules = {key: _resolve(model, key, codebook) for key, codebook in codebooks.items()}
    for key, codebook in codebooks.items():
        module = modules[key]
        order = tuple(name for name, _ in module.named_parameters(recurse=False))
        shared = _SharedWeight(codebook, module.weight.device, order)
        parametrize.register_parametrization(module, "weight", shared)
        with torch.no_grad():
            module.parametrizations["weight"].original.copy_(codebook.centroids)


def strip_(model: nn.Module) -> dict[str, LayerCodebook]:
    """Bake shared weights back into plain weight Parameters and return the trained codebooks.

    The state_dict keys and their order become those of the model before ``share_weights_``.
    """
    codebooks: dict[str, LayerCodebook] = {}
    for name, module in list(model.named_modules()):
        shared = _shared_parametrization(module)
        if shared is None:
            continue
        original = module.parametrizations["weight"].original
        codebook = LayerCodebook(
            centroids=original.detach().clone(),
            labels=shared.labels.clone(),
            mask=shared.mask.clone(),
            bits=shared.bits,
        )
        parametrize.remove_parametrizations(module, "weight", leave_parametrized=False)
        del module.weight
        module.register_parameter(
            "weight", nn.Parameter(codebook.weight(), requires_grad=original.requires_grad)
        )
        for param_name in shared.param_order:
            param = getattr(module, param_name)
            delattr(module, param_name)
            module.register_parameter(param_name, param)
        codebooks[f"{name}.weight"] = codebook
    return codebooks


def distinct_nonzero_values(weight: Tensor) -> int:
    """Number of distinct non-zero values in ``weight`` (the shared values of a layer)."""
    return int(torch.unique(weight.detach()[weight.detach() != 0]).numel())


def drop_unused_centroids(codebook: LayerCodebook) -> LayerCodebook:
    """The same weights with only the centroids that surviving weights use, relabelled in order.

    k-means can leave clusters empty (e.g. linear init puts centroids in the pruned gap around
    zero); storing them would waste codebook bytes in the compressed file.
    """
    used = torch.unique(codebook.labels[codebook.mask])  # sorted ascending, like the centroids
    labels = torch.zeros_like(codebook.labels)
    labels[codebook.mask] = torch.searchsorted(used, codebook.labels[codebook.mask])
    return LayerCodebook(
        centroids=codebook.centroids[used].clone(),
        labels=labels,
        mask=codebook.mask,
        bits=codebook.bits,
    )


def _check_bias_storage(storage: object) -> None:
    """float32, float16, or k-means bits as an int in 1..MAX_BIAS_BITS."""
    if storage in ("float32", "float16"):
        return
    if (
        isinstance(storage, bool)
        or not isinstance(storage, int)
        or not 1 <= storage <= MAX_BIAS_BITS
    ):
        raise QuantizationError(
            f"bias storage must be 'float32', 'float16' or k-means bits 1..{MAX_BIAS_BITS}, "
            f"got {storage!r}"
        )


def round_bias(
    bias: Tensor,
    storage: BiasMode,
    init: CentroidInit = DEFAULT_INIT,
    seed: int = 0,
    engine: KMeansEngine = DEFAULT_ENGINE,
) -> Tensor:
    """The bias as it will be stored: unchanged, rounded to float16 values, or its non-zero
    entries k-means shared into at most ``2**bits`` values (zeros stay +0.0), all in float32."""
    _check_bias_storage(storage)
    values = bias.detach().to("cpu", torch.float32)
    if storage == "float32":
        return values.clone()
    if storage == "float16":
        return values.half().float()
    kept = values != 0
    rounded = torch.zeros_like(values)
    if bool(kept.any()):
        points = values[kept].to(torch.float64).numpy()
        centroids, labels = kmeans_1d(points, 2**storage, init=init, seed=seed, engine=engine)
        rounded[kept] = torch.from_numpy(centroids[labels]).float()
    return rounded.masked_fill(rounded == 0, 0.0)  # -0.0 -> +0.0: the stored bits


def round_biases_(
    model: nn.Module,
    layers: Iterable[str],
    storage: BiasMode,
    init: CentroidInit = DEFAULT_INIT,
    seed: int = 0,
    engine: KMeansEngine = DEFAULT_ENGINE,
) -> None:
    """Round the biases of the named layers in place to their storage (see ``round_bias``), so
    that the evaluated model is the stored one."""
    modules = dict(model.named_modules())
    for layer in layers:
        bias = getattr(modules[layer], "bias", None)
        if bias is None:
            continue
        with torch.no_grad():
            bias.copy_(round_bias(bias, storage, init=init, seed=seed, engine=engine))
