"""Magnitude pruning with explicit boolean masks (Han et al. NIPS 2015; Deep Compression 2016).

Masks are plain state: a dict of bool tensors keyed by parameter name ("fc1.weight"), so they can
be saved with checkpoints and reused by later pruning iterations. A pruned weight is never revived
and is kept at exactly +0.0 by masking gradients (before the optimiser step) and weights (after).
"""

import math
from collections.abc import Mapping
from itertools import pairwise
from typing import get_args

import torch
from torch import nn

from deepcompression.config import PruneMethod, ScheduleKind

Masks = dict[str, torch.Tensor]

_PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv2d)
_WEIGHT_SUFFIX = "weight"


class PruningError(ValueError):
    """Invalid pruning request, mask set or schedule; the message names the layer and the fix."""


def layer_name(param_name: str) -> str:
    """Return the module name owning a prunable weight ("fc1.weight" -> "fc1")."""
    if param_name == _WEIGHT_SUFFIX:
        return ""
    suffix = "." + _WEIGHT_SUFFIX
    if not param_name.endswith(suffix):
        raise PruningError(
            f"parameter name {param_name!r} is not a weight name; expected '<layer>.weight', "
            "e.g. 'fc1.weight'"
        )
    return param_name[: -len(suffix)]


def weight_name(layer: str) -> str:
    """Return the weight name of a layer ("fc1" -> "fc1.weight"); the inverse of layer_name."""
    return f"{layer}.{_WEIGHT_SUFFIX}" if layer else _WEIGHT_SUFFIX


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Return the weight of every Linear/Conv2d in model order, keyed '<module name>.weight'."""
    return {
        weight_name(name): module.weight
        for name, module in model.named_modules()
        if isinstance(module, _PRUNABLE_TYPES)
    }


def full_masks(model: nn.Module) -> Masks:
    """Return all-True masks for every prunable weight (the state before any pruning)."""
    return {
        name: torch.ones_like(weight, dtype=torch.bool)
        for name, weight in prunable_weights(model).items()
    }


def _check_layer_mask(weight: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Return the given mask (or an all-True one), after checking its dtype and shape."""
    if mask is None:
        return torch.ones_like(weight, dtype=torch.bool)
    if mask.dtype != torch.bool:
        raise PruningError(
            f"mask dtype is {mask.dtype}; masks must be torch.bool (use mask.bool())"
        )
    if mask.shape != weight.shape:
        raise PruningError(
            f"mask shape {tuple(mask.shape)} does not match weight shape {tuple(weight.shape)}; "
            "pass the mask that belongs to this weight"
        )
    return mask.to(weight.device)


def _check_density(density: float, where: str = "") -> None:
    """Raise PruningError unless density lies in (0, 1]."""
    if not 0.0 < density <= 1.0:
        raise PruningError(
            f"density {density!r}{where} is outside (0, 1]; give the fraction of weights to keep, "
            "e.g. 0.1 keeps 10%"
        )


def _check_quality(quality: float, where: str = "") -> None:
    """Raise PruningError unless quality is a finite number >= 0."""
    if not (math.isfinite(quality) and quality >= 0.0):
        raise PruningError(
            f"quality {quality!r}{where} must be a finite number >= 0 "
            "(threshold = quality * std of the layer's surviving weights)"
        )


def magnitude_mask(
    weight: torch.Tensor, density: float, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Keep the largest-|w| entries so that round((1 - density) * numel) are pruned over the layer.

    Entries already pruned by `mask` count first and are never revived (a density above the current
    one leaves the mask as is); for a fresh layer this equals l1_unstructured(amount=1 - density).
    """
    _check_density(density)
    old = _check_layer_mask(weight, mask)
    n_prune = round((1.0 - density) * weight.numel())
    with torch.no_grad():
        scores = weight.detach().abs()
        if mask is not None:
            scores = torch.where(old, scores, torch.full_like(scores, -1.0))
        keep = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
        if n_prune > 0:
            smallest = torch.topk(scores.reshape(-1), k=n_prune, largest=False)
            keep[smallest.indices] = False
        return keep.reshape(weight.shape) & old


def threshold_mask(
    weight: torch.Tensor,
    quality: float,
    mask: torch.Tensor | None = None,
    std: float | None = None,
) -> torch.Tensor:
    """Keep |w| > quality * std, ANDed with mask: the paper's per-layer rule.

    Pass `std` of the layer's dense (unpruned) weights when iterating, so that repeating the rule
    after retraining removes only weights that fell below the same threshold; without it the std
    of the currently surviving weights is used, which grows as small weights go.
    """
    _check_quality(quality)
    old = _check_layer_mask(weight, mask)
    with torch.no_grad():
        values = weight.detach()
        surviving = values[old]
        if surviving.numel() == 0:
            return old.clone()
        scale = std if std is not None else surviving.double().std(correction=0).item()
        return (values.abs().double() > quality * scale) & old


def weight_stds(model: nn.Module) -> dict[str, float]:
    """Population std of every prunable weight, keyed by layer name (the threshold rule's scale)."""
    return {
        layer_name(name): weight.detach().double().std(correction=0).item()
        for name, weight in prunable_weights(model).items()
    }


def density_schedule(final_density: float, iterations: int, kind: ScheduleKind) -> list[float]:
    """Densities for pruning iterations 1..n, strictly decreasing from below 1.0 to final_density.

    geometric: equal ratios from 1.0; cubic: Zhu & Gupta AGP d_f + (1 - d_f)(1 - i/n)^3; linear.
    """
    _check_density(final_density, " (final_density)")
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise PruningError(f"iterations={iterations!r} must be an integer >= 1")
    n = iterations
    if kind == "geometric":
        values = [final_density ** (i / n) for i in range(1, n)]
    elif kind == "cubic":
        values = [final_density + (1.0 - final_density) * (1.0 - i / n) ** 3 for i in range(1, n)]
    elif kind == "linear":
        values = [1.0 - (1.0 - final_density) * i / n for i in range(1, n)]
    else:
        raise PruningError(
            f"unknown schedule kind {kind!r}; use one of {list(get_args(ScheduleKind))}"
        )
    values.append(final_density)
    if final_density < 1.0 and any(b >= a for a, b in pairwise([1.0, *values])):
        raise PruningError(
            f"final_density={final_density!r} is too close to 1.0 for {n} strictly decreasing "
            "iterations in floating point; use fewer iterations or a lower final density"
        )
    return values


def check_masks(model: nn.Module, masks: Masks) -> None:
    """Raise PruningError unless masks hold one shape-matched bool mask per prunable weight."""
    weights = prunable_weights(model)
    prunable = list(weights)
    for name, mask in masks.items():
        if name not in weights:
            raise PruningError(
                f"mask {name!r} matches no prunable weight of this model; prunable weights: "
                f"{prunable} (was the checkpoint saved from a different model?)"
            )
        if not isinstance(mask, torch.Tensor):
            raise PruningError(f"mask {name!r} is a {type(mask).__name__}, not a torch.Tensor")
        if mask.dtype != torch.bool:
            raise PruningError(
                f"mask {name!r} has dtype {mask.dtype}; masks must be torch.bool (use mask.bool())"
            )
        if mask.shape != weights[name].shape:
            raise PruningError(
                f"mask {name!r} has shape {tuple(mask.shape)} but the weight has shape "
                f"{tuple(weights[name].shape)} (was the checkpoint saved from a different model?)"
            )
    missing = [name for name in prunable if name not in masks]
    if missing:
        raise PruningError(
            f"masks lack prunable weights {missing}; "
            "start from full_masks(model) and prune from there"
        )


def _check_targets(
    weights: Mapping[str, torch.Tensor], targets: Mapping[str, float], method: PruneMethod
) -> None:
    """Validate layer names and per-layer values of a prune_ request."""
    if method not in get_args(PruneMethod):
        raise PruningError(
            f"unknown prune method {method!r}; use one of {list(get_args(PruneMethod))}"
        )
    layers = [layer_name(name) for name in weights]
    for layer, value in targets.items():
        if weight_name(layer) not in weights:
            raise PruningError(f"unknown layer {layer!r}; prunable layers: {layers}")
        where = f" for layer {layer!r}"
        if method == "magnitude":
            _check_density(value, where)
        else:
            _check_quality(value, where)


def prune_(
    model: nn.Module,
    masks: Masks,
    targets: Mapping[str, float],
    method: PruneMethod = "magnitude",
    stds: Mapping[str, float] | None = None,
) -> Masks:
    """Prune the targeted layers further, zero their pruned weights in place and return new masks.

    targets map layer names ("fc1") to a density (magnitude) or a quality (threshold); layers not
    in targets keep their masks. For threshold pruning, `stds` (from `weight_stds` of the dense
    model) fixes each layer's scale across iterations. Everything is validated before the model
    is touched.
    """
    check_masks(model, masks)
    weights = prunable_weights(model)
    _check_targets(weights, targets, method)
    new_masks = dict(masks)
    for layer, value in targets.items():
        name = weight_name(layer)
        if method == "magnitude":
            new_masks[name] = magnitude_mask(weights[name], value, masks[name])
        else:
            std = None if stds is None else stds[layer]
            new_masks[name] = threshold_mask(weights[name], value, masks[name], std)
    for layer, value in targets.items():
        if not bool(new_masks[weight_name(layer)].any()):
            hint = "a higher density" if method == "magnitude" else "a lower quality"
            raise PruningError(
                f"layer {layer!r} would be left with 0 surviving weights at {method} target "
                f"{value!r}; use {hint}"
            )
    apply_masks_(model, new_masks)
    return new_masks


def apply_masks_(model: nn.Module, masks: Masks) -> None:
    """Set every pruned weight to exactly +0.0 in place (call after each optimiser step)."""
    check_masks(model, masks)
    with torch.no_grad():
        for name, weight in prunable_weights(model).items():
            weight.masked_fill_(~masks[name].to(weight.device), 0.0)


def mask_gradients_(model: nn.Module, masks: Masks) -> None:
    """Zero the gradients of pruned weights after backward, so their momentum/Adam state stays 0."""
    check_masks(model, masks)
    with torch.no_grad():
        for name, weight in prunable_weights(model).items():
            if weight.grad is not None:
                weight.grad.masked_fill_(~masks[name].to(weight.grad.device), 0.0)


def _numel(name: str, mask: torch.Tensor) -> int:
    """Return mask.numel(), refusing empty masks whose density is undefined."""
    if mask.numel() == 0:
        raise PruningError(f"mask {name!r} is empty; density of a zero-size layer is undefined")
    return mask.numel()


def densities(masks: Masks) -> dict[str, float]:
    """Fraction of surviving weights per layer, keyed by layer name ("fc1")."""
    return {
        layer_name(name): int(mask.count_nonzero()) / _numel(name, mask)
        for name, mask in masks.items()
    }


def overall_density(masks: Masks) -> float:
    """Fraction of surviving weights over all masked layers, weighted by layer size."""
    if not masks:
        raise PruningError("no masks given; overall density needs at least one layer")
    kept = sum(int(mask.count_nonzero()) for mask in masks.values())
    total = sum(_numel(name, mask) for name, mask in masks.items())
    return kept / total


class MaskGuard:
    """Masks bound once to a model's weights, for the training loop's hot path.

    `zero_gradients_` after backward and `zero_weights_` after the optimiser step keep pruned
    weights at exactly +0.0 without re-validating the masks on every batch.
    """

    def __init__(self, model: nn.Module, masks: Masks) -> None:
        check_masks(model, masks)
        self._pairs = [
            (weight, ~masks[name].to(weight.device))
            for name, weight in prunable_weights(model).items()
        ]

    def zero_gradients_(self) -> None:
        """Zero the gradients of pruned weights (their momentum/Adam state then stays 0)."""
        for weight, pruned in self._pairs:
            if weight.grad is not None:
                weight.grad.masked_fill_(pruned, 0.0)

    def zero_weights_(self) -> None:
        """Set every pruned weight to exactly +0.0."""
        with torch.no_grad():
            for weight, pruned in self._pairs:
                weight.masked_fill_(pruned, 0.0)
