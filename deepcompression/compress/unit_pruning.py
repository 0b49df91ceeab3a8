"""Structured (unit) pruning: drop whole output units, expressed as ordinary weight masks.

A unit is a row of a Linear weight or a filter of a Conv2d. Dropping it zeroes its row (and bias
entry) and the matching inputs of the layer that consumes its output: the same column of a Linear,
the channel's block of ``H*W`` columns of a Linear behind a flatten, or the input-channel slice of
a Conv2d. The result is a mask dict in ``compress.pruning``'s convention (bool tensors keyed
"<layer>.weight"), so MaskGuard, prune_, quantization and encoding use it unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import fx, nn

from deepcompression.compress.pruning import (
    Masks,
    check_masks,
    full_masks,
    layer_name,
    prunable_weights,
    weight_name,
)

__all__ = [
    "Consumers",
    "UnitNorm",
    "UnitPruningError",
    "UnitMasks",
    "trace_consumers",
    "unit_norms",
    "select_units",
    "unit_masks",
    "apply_unit_masks_",
    "dead_units",
    "units_to_keep",
    "zero_unread_biases_",
    "consumers_or_empty",
    "fold_constant_units_",
]

Consumers = dict[str, str | None]
"""Layer name -> name of the layer that consumes its output units (None for the output layer)."""
UnitNorm = Literal["l1", "l2"]

_LAYER_TYPES = (nn.Linear, nn.Conv2d)
_CHANNELWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Hardtanh,
    nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity, nn.MaxPool2d, nn.AvgPool2d,
    nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.BatchNorm1d, nn.BatchNorm2d,
)  # fmt: skip
_CHANNELWISE_FUNCTIONS = {
    torch.relu, torch.tanh, torch.sigmoid, F.relu, F.relu6, F.leaky_relu, F.elu, F.gelu, F.silu,
    F.hardtanh, F.dropout, F.dropout1d, F.dropout2d, F.max_pool2d, F.avg_pool2d,
    F.adaptive_avg_pool2d, F.adaptive_max_pool2d,
}  # fmt: skip
_CHANNELWISE_METHODS = {"relu", "tanh", "sigmoid", "contiguous"}


class UnitPruningError(ValueError):
    """Invalid unit-pruning request, or a network whose layers do not form a simple chain."""


@dataclass(frozen=True)
class UnitMasks:
    """Masks after unit pruning: ``weights`` for every prunable weight, ``biases`` and ``kept``
    (bool per output unit) for the layers whose units were selected."""

    weights: Masks
    biases: Masks
    kept: dict[str, torch.Tensor]


def _node_layer(node: fx.Node, layers: Mapping[str, nn.Module]) -> str | None:
    """The prunable layer a graph node calls, if any."""
    if node.op == "call_module" and node.target in layers:
        return str(node.target)
    return None


def _flatten_start(node: fx.Node, modules: Mapping[str, nn.Module]) -> int | None:
    """start_dim of a flatten node (None if the node is no flatten or does not end at -1)."""
    if node.op == "call_module" and isinstance(modules[str(node.target)], nn.Flatten):
        module = modules[str(node.target)]
        return module.start_dim if module.end_dim == -1 else None
    is_method = node.op == "call_method" and node.target == "flatten"
    if not (is_method or (node.op == "call_function" and node.target is torch.flatten)):
        return None
    args = [*node.args[1:], None, None]
    start = node.kwargs.get("start_dim", args[0] if args[0] is not None else 0)
    end = node.kwargs.get("end_dim", args[1] if args[1] is not None else -1)
    return start if end == -1 else None


def _is_channelwise(node: fx.Node, modules: Mapping[str, nn.Module]) -> bool:
    """Tell whether a node maps each unit/channel to itself (activation, pool, dropout, ...)."""
    extra = [a for a in (*node.args[1:], *node.kwargs.values()) if isinstance(a, fx.Node)]
    if extra:
        return False
    if node.op == "call_module":
        return isinstance(modules[str(node.target)], _CHANNELWISE_MODULES)
    if node.op == "call_function":
        return node.target in _CHANNELWISE_FUNCTIONS
    return node.op == "call_method" and node.target in _CHANNELWISE_METHODS


def _describe(node: fx.Node) -> str:
    """A short name for a graph node in error messages."""
    target = getattr(node.target, "__name__", node.target)
    return f"{node.op} {target!s}"


def _follow(
    start: fx.Node, layers: Mapping[str, nn.Module], modules: Mapping[str, nn.Module]
) -> str | None:
    """Walk from a layer's output through channel-wise ops to the next layer (None: the output)."""
    name, node = str(start.target), start
    while True:
        users = list(node.users)
        if len(users) != 1:
            raise UnitPruningError(
                f"the output of layer {name!r} feeds {len(users)} operations after "
                f"{_describe(node)}; unit pruning needs a simple chain (no branches or skips)"
            )
        user = users[0]
        if user.op == "output":
            return None
        if user.args[:1] != (node,):
            raise UnitPruningError(
                f"{_describe(user)} takes the output of layer {name!r} as a secondary input; "
                "unit pruning needs a simple chain"
            )
        consumer = _node_layer(user, layers)
        if consumer is not None:
            return consumer
        if _flatten_start(user, modules) != 1 and not _is_channelwise(user, modules):
            raise UnitPruningError(
                f"{_describe(user)} after layer {name!r} is not a channel-wise op or flatten(1); "
                "unit pruning supports chains of Linear/Conv2d joined by activations, pooling, "
                "dropout, batch norm and flatten(1); pass `consumers` by hand otherwise"
            )
        node = user


def trace_consumers(model: nn.Module) -> Consumers:
    """Map each Linear/Conv2d to the next one in the forward chain (traced with torch.fx)."""
    layers = {layer_name(n): m for n, m in _prunable_modules(model).items()}
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as err:  # noqa: BLE001 - fx raises many types for untraceable code
        raise UnitPruningError(
            f"cannot trace {type(model).__name__} with torch.fx ({err}); pass `consumers` by hand"
        ) from err
    modules = dict(model.named_modules())
    calls = [node for node in graph.nodes if _node_layer(node, layers) is not None]
    called = [str(node.target) for node in calls]
    for layer in layers:
        if called.count(layer) != 1:
            raise UnitPruningError(
                f"layer {layer!r} is called {called.count(layer)} times in forward; unit pruning "
                "needs every Linear/Conv2d called exactly once in a simple chain"
            )
    consumers = {str(node.target): _follow(node, layers, modules) for node in calls}
    return {layer: consumers[layer] for layer in layers}


def _prunable_modules(model: nn.Module) -> dict[str, nn.Module]:
    """Linear/Conv2d modules keyed by weight name, in model order."""
    return {
        weight_name(name): module
        for name, module in model.named_modules()
        if isinstance(module, _LAYER_TYPES)
    }


def unit_norms(
    weight: torch.Tensor, mask: torch.Tensor | None = None, norm: UnitNorm = "l2"
) -> torch.Tensor:
    """L1 or L2 norm of each output unit's surviving weights (float64, one per row/filter)."""
    values = weight.detach().double()
    if mask is not None:
        values = values * mask.to(values.device)
    order = {"l1": 1, "l2": 2}.get(norm)
    if order is None:
        raise UnitPruningError(f"unknown norm {norm!r}; use 'l1' or 'l2'")
    return torch.linalg.vector_norm(values.reshape(values.shape[0], -1), ord=order, dim=1)


def select_units(norms: torch.Tensor, n_keep: int) -> torch.Tensor:
    """Bool per unit: the ``n_keep`` largest norms (ties broken towards lower unit index)."""
    n_units = norms.numel()
    if isinstance(n_keep, bool) or not isinstance(n_keep, int) or not 1 <= n_keep <= n_units:
        raise UnitPruningError(f"n_keep must be an int in 1..{n_units}, got {n_keep!r}")
    order = torch.argsort(norms, descending=True, stable=True)
    keep = torch.zeros(n_units, dtype=torch.bool, device=norms.device)
    keep[order[:n_keep]] = True
    return keep


def _input_mask(consumer: nn.Module, kept: torch.Tensor, where: str) -> torch.Tensor:
    """Bool mask shaped like the consumer's weight, False on the inputs of dropped units."""
    units = kept.numel()
    weight = consumer.weight
    if isinstance(consumer, nn.Conv2d):
        if consumer.groups != 1 or consumer.in_channels != units:
            raise UnitPruningError(
                f"{where}: consumer Conv2d has {consumer.in_channels} input channels in "
                f"{consumer.groups} groups; unit pruning needs groups=1 and {units} channels"
            )
        return kept.view(1, units, 1, 1).expand_as(weight).clone()
    if weight.shape[1] % units:
        raise UnitPruningError(
            f"{where}: consumer has {weight.shape[1]} inputs, not a multiple of {units} units"
        )
    columns = kept.repeat_interleave(weight.shape[1] // units)
    return columns.view(1, -1).expand_as(weight).clone()


def _check_request(
    modules: Mapping[str, nn.Module], keep: Mapping[str, int], consumers: Mapping[str, str | None]
) -> None:
    """Validate layer names in ``keep`` and ``consumers`` before anything is computed."""
    layers = [layer_name(name) for name in modules]
    for layer in [*keep, *consumers, *(c for c in consumers.values() if c is not None)]:
        if weight_name(layer) not in modules:
            raise UnitPruningError(f"unknown layer {layer!r}; prunable layers: {layers}")
    missing = [layer for layer in keep if layer not in consumers]
    if missing:
        raise UnitPruningError(
            f"layers {missing} have no entry in consumers; map them to their next layer "
            "(None for the output layer), e.g. with trace_consumers(model)"
        )


def unit_masks(
    model: nn.Module,
    keep: Mapping[str, int],
    consumers: Mapping[str, str | None],
    masks: Masks | None = None,
    norm: UnitNorm = "l2",
) -> UnitMasks:
    """Keep the ``keep[layer]`` strongest units per layer; returns masks ANDed with ``masks``.

    Layers are handled in model order, so a layer's norms already exclude inputs dropped upstream.
    """
    modules = _prunable_modules(model)
    _check_request(modules, keep, consumers)
    current = dict(full_masks(model) if masks is None else masks)
    check_masks(model, current)
    biases: Masks = {}
    kept: dict[str, torch.Tensor] = {}
    for name, module in modules.items():
        layer = layer_name(name)
        if layer not in keep:
            continue
        units = select_units(unit_norms(module.weight, current[name], norm), keep[layer])
        kept[layer] = units
        rows = units.view(-1, *([1] * (module.weight.dim() - 1))).expand_as(module.weight)
        current[name] = current[name] & rows.to(current[name].device)
        if module.bias is not None:
            biases[f"{layer}.bias"] = units.clone()
        consumer = consumers[layer]
        if consumer is not None:
            target = weight_name(consumer)
            cols = _input_mask(modules[target], units, f"layer {layer!r} -> {consumer!r}")
            current[target] = current[target] & cols.to(current[target].device)
    return UnitMasks(weights=current, biases=biases, kept=kept)


def apply_unit_masks_(model: nn.Module, result: UnitMasks) -> None:
    """Zero the pruned weights and the biases of dropped units in place."""
    check_masks(model, result.weights)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, weight in prunable_weights(model).items():
            weight.masked_fill_(~result.weights[name].to(weight.device), 0.0)
        for name, mask in result.biases.items():
            params[name].masked_fill_(~mask.to(params[name].device), 0.0)


def dead_units(
    masks: Masks, consumers: Mapping[str, str | None] | None = None
) -> dict[str, torch.Tensor]:
    """Indices (int64) of each layer's units with every weight pruned, per layer name.

    With ``consumers``, a unit whose every outgoing weight in the consumer is pruned also counts
    as dead (its output is never read).
    """
    dead: dict[str, torch.Tensor] = {}
    for name, mask in masks.items():
        flags = ~mask.reshape(mask.shape[0], -1).any(dim=1)
        consumer = None if consumers is None else consumers.get(layer_name(name))
        if consumer is not None:
            flags |= ~_outgoing_alive(masks[weight_name(consumer)], mask.shape[0])
        dead[layer_name(name)] = torch.nonzero(flags).flatten()
    return dead


def _reads_units(consumer: nn.Module, producer: nn.Module) -> bool:
    """Whether the consumer reads each producer unit through its own inputs: a Linear with a
    whole block of inputs per unit, or an ungrouped Conv2d with one input channel per unit."""
    units = producer.weight.shape[0]
    if isinstance(consumer, nn.Conv2d):
        return consumer.groups == 1 and consumer.in_channels == units
    return consumer.weight.shape[1] % units == 0


def _outgoing_alive(consumer_mask: torch.Tensor, units: int) -> torch.Tensor:
    """Bool per producer unit: any of its input weights in the consumer survives."""
    inputs = consumer_mask.transpose(0, 1).reshape(consumer_mask.shape[1], -1).any(dim=1)
    if inputs.numel() % units:
        raise UnitPruningError(
            f"consumer has {inputs.numel()} inputs, not a multiple of {units} units"
        )
    return inputs.view(units, -1).any(dim=1)


def units_to_keep(
    model: nn.Module, fractions: Mapping[str, float], consumers: Mapping[str, str | None]
) -> dict[str, int]:
    """Output units to keep per layer for fractions of its units (``round``, at least 1); layers
    at 1.0 are left out. The network's output layer (consumer None) must keep every unit."""
    modules = _prunable_modules(model)
    keep: dict[str, int] = {}
    for layer, fraction in fractions.items():
        if weight_name(layer) not in modules:
            known = [layer_name(name) for name in modules]
            raise UnitPruningError(f"unknown layer {layer!r}; prunable layers: {known}")
        if not 0.0 < fraction <= 1.0:
            raise UnitPruningError(
                f"layer {layer!r}: units kept must be a fraction in (0, 1], got {fraction!r}"
            )
        if fraction == 1.0:
            continue
        if layer not in consumers:
            raise UnitPruningError(f"layer {layer!r} has no entry in consumers")
        if consumers[layer] is None:
            raise UnitPruningError(
                f"layer {layer!r} is the network's output layer: its units are the outputs "
                f"(classes), so it must keep all of them (units 1.0), got {fraction!r}"
            )
        units = modules[weight_name(layer)].weight.shape[0]
        keep[layer] = max(1, round(fraction * units))
    return keep


def zero_unread_biases_(
    model: nn.Module, masks: Masks, consumers: Mapping[str, str | None]
) -> dict[str, int]:
    """Zero the bias of every unit whose outputs its consumer never reads (all its input weights
    there pruned): the network computes the same, and the file stores exact zeros. Returns the
    number of such units per layer; the output layer, and layers feeding a grouped convolution,
    are left alone."""
    modules = _prunable_modules(model)
    zeroed: dict[str, int] = {}
    for name, module in modules.items():
        layer = layer_name(name)
        consumer = consumers.get(layer)
        if consumer is None or not _reads_units(modules[weight_name(consumer)], module):
            continue
        unread = ~_outgoing_alive(masks[weight_name(consumer)], module.weight.shape[0])
        zeroed[layer] = int(unread.sum())
        if module.bias is not None:
            with torch.no_grad():
                module.bias.masked_fill_(unread.to(module.bias.device), 0.0)
    return zeroed


def consumers_or_empty(model: nn.Module) -> Consumers:
    """Each layer's consumer (``trace_consumers``); empty for a network that is not a chain."""
    try:
        return trace_consumers(model)
    except UnitPruningError:
        return {}


def fold_constant_units_(
    model: nn.Module, masks: Masks, consumers: Mapping[str, str | None], probe: torch.Tensor
) -> tuple[Masks, dict[str, int]]:
    """Fold each unit with every input weight pruned, whose output its Linear consumer still
    reads, into that consumer's bias, and prune those reads.

    Such a unit outputs a constant (its bias through channel-wise ops), so the consumer's bias
    absorbs ``W[:, block] @ constant`` and the unit becomes removable (its bias unread, zeroed
    by ``zero_unread_biases_``, no bytes in the file). The constant is read from the consumer's
    input on the ``probe`` batch (eval mode), and a unit is folded only where it is the same for
    every probe row. Returns the new masks (the given tensors are not changed) and the units
    folded per producer layer.
    """
    if probe.shape[0] < 2:
        raise UnitPruningError("fold_constant_units_ needs a probe batch of at least 2 inputs")
    modules = _prunable_modules(model)
    todo = _constant_units(modules, masks, consumers)
    if not todo:
        return dict(masks), {}
    inputs = _consumer_inputs(model, {consumer for consumer, _ in todo.values()}, probe)
    masks = dict(masks)
    folded: dict[str, int] = {}
    for producer, (consumer, units) in todo.items():
        module, x = modules[weight_name(consumer)], inputs[consumer]
        per = x.shape[1] // modules[weight_name(producer)].weight.shape[0]
        mask = masks[weight_name(consumer)].clone()
        count = 0
        for unit in units.tolist():
            block = slice(unit * per, (unit + 1) * per)
            if not torch.equal(x[:, block], x[:1, block].expand(x.shape[0], -1)):
                continue
            with torch.no_grad():
                delta = module.weight[:, block].double() @ x[0, block].double()
                module.bias.add_(delta.to(module.bias.dtype))
                module.weight[:, block] = 0.0
            mask[:, block] = False
            count += 1
        masks[weight_name(consumer)] = mask
        folded[producer] = count
    return masks, folded


def _constant_units(
    modules: Mapping[str, nn.Module], masks: Masks, consumers: Mapping[str, str | None]
) -> dict[str, tuple[str, torch.Tensor]]:
    """Producer layer -> (its Linear consumer with a bias, the producer's units whose inputs are
    all pruned but whose outputs the consumer reads)."""
    found: dict[str, tuple[str, torch.Tensor]] = {}
    for name, module in modules.items():
        consumer = consumers.get(layer_name(name))
        target = None if consumer is None else modules.get(weight_name(consumer))
        if (
            name not in masks
            or not isinstance(target, nn.Linear)
            or target.bias is None
            or weight_name(consumer) not in masks
            or not _reads_units(target, module)
        ):
            continue
        mask = masks[name]
        empty = ~mask.reshape(mask.shape[0], -1).any(dim=1)
        read = _outgoing_alive(masks[weight_name(consumer)], mask.shape[0]).to(empty.device)
        units = torch.nonzero(empty & read).flatten()
        if units.numel():
            found[layer_name(name)] = (consumer, units)
    return found


def _consumer_inputs(
    model: nn.Module, layers: set[str], probe: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Each named Linear's input on ``probe`` in eval mode, as (batch, in_features)."""
    seen: dict[str, torch.Tensor] = {}
    modules = dict(model.named_modules())
    hooks = [
        modules[layer].register_forward_hook(
            lambda _m, args, _out, layer=layer: seen.__setitem__(
                layer, args[0].detach().reshape(args[0].shape[0], -1)
            )
        )
        for layer in layers
    ]
    training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(probe)
    finally:
        model.train(training)
        for hook in hooks:
            hook.remove()
    return seen
