"""Tests for unit (structured) pruning: chain tracing, unit selection, mask composition, and
equality of the masked network with a physically shrunk one."""

from collections.abc import Callable

import pytest
import torch
from torch import nn

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.pruning import MaskGuard, check_masks, full_masks, prune_
from deepcompression.compress.schedule import unit_targets, units_kept
from deepcompression.compress.unit_pruning import (
    UnitMasks,
    UnitPruningError,
    apply_unit_masks_,
    dead_units,
    select_units,
    trace_consumers,
    unit_masks,
    unit_norms,
    units_to_keep,
    zero_unread_biases_,
)
from deepcompression.plan import LayerPlan
from models import LeNet5, LeNet300100


def mlp() -> nn.Sequential:
    """Flatten -> 12-8-6-3 MLP with two different activations."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 6), nn.Tanh(), nn.Linear(6, 3)
    )


def convnet() -> nn.Sequential:
    """Conv -> BN -> pool -> conv -> flatten -> linear -> linear, on 2x10x10 inputs."""
    torch.manual_seed(1)
    net = nn.Sequential(
        nn.Conv2d(2, 5, 3), nn.BatchNorm2d(5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(5, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(16, 7), nn.ReLU(), nn.Linear(7, 3),
    )  # fmt: skip
    with torch.no_grad():
        net[1].running_mean.uniform_(-0.5, 0.5)
        net[1].running_var.uniform_(0.5, 2.0)
        net[1].weight.uniform_(0.5, 1.5)
        net[1].bias.uniform_(-0.5, 0.5)
    return net.eval()


def shrink(net: nn.Sequential, kept: dict[str, torch.Tensor]) -> nn.Sequential:
    """A physically smaller copy of a Sequential chain without the dropped units."""
    layers: list[nn.Module] = []
    inputs: torch.Tensor | None = None
    for name, module in net.named_children():
        rows = kept.get(name)
        if isinstance(module, nn.Linear | nn.Conv2d):
            weight, bias = module.weight.detach(), module.bias.detach()
            if inputs is not None:
                weight = weight[:, inputs.repeat_interleave(weight.shape[1] // inputs.numel())]
            if rows is not None:
                weight, bias = weight[rows], bias[rows]
            small = (
                nn.Linear(weight.shape[1], weight.shape[0])
                if isinstance(module, nn.Linear)
                else nn.Conv2d(weight.shape[1], weight.shape[0], module.kernel_size)
            )
            with torch.no_grad():
                small.weight.copy_(weight)
                small.bias.copy_(bias)
            layers.append(small)
            inputs = rows
        elif isinstance(module, nn.BatchNorm2d) and inputs is not None:
            norm = nn.BatchNorm2d(int(inputs.sum()))
            for attr in ("weight", "bias", "running_mean", "running_var"):
                getattr(norm, attr).data.copy_(getattr(module, attr).detach()[inputs])
            layers.append(norm)
        else:
            layers.append(module)
    return nn.Sequential(*layers).eval()


def test_trace_consumers_of_sequential_and_functional_models() -> None:
    assert trace_consumers(mlp()) == {"1": "3", "3": "5", "5": None}
    assert trace_consumers(convnet()) == {"0": "4", "4": "7", "7": "9", "9": None}
    assert trace_consumers(LeNet5()) == {
        "conv1": "conv2", "conv2": "fc1", "fc1": "fc2", "fc2": None,
    }  # fmt: skip
    assert trace_consumers(LeNet300100()) == {"fc1": "fc2", "fc2": "fc3", "fc3": None}


class Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(4, 4), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.fc1(x))
        return self.fc2(h + x)


class Reused(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.fc(x))


class Branching(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(4, 4), nn.Linear(4, 2), nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x)
        return self.fc2(h) * self.fc3(h)


class Viewed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 2, 3), nn.Linear(2 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(x).view(x.shape[0], -1))


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x) if x.sum() > 0 else -self.fc(x)


@pytest.mark.parametrize(
    ("model", "match"),
    [
        (Residual(), "not a channel-wise op"),
        (Reused(), "called 2 times"),
        (Branching(), "feeds 2 operations"),
        (Viewed(), "not a channel-wise op"),
        (DataDependent(), "cannot trace"),
        (nn.Sequential(nn.Linear(4, 4), nn.Flatten(0), nn.Linear(16, 2)), "flatten"),
    ],
)
def test_trace_rejects_networks_that_are_not_simple_chains(model: nn.Module, match: str) -> None:
    with pytest.raises(UnitPruningError, match=match):
        trace_consumers(model)


def test_norms_use_surviving_weights_and_the_chosen_norm() -> None:
    weight = torch.tensor([[3.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    torch.testing.assert_close(unit_norms(weight), torch.tensor([3.0, 2.0], dtype=torch.float64))
    assert select_units(unit_norms(weight, norm="l2"), 1).tolist() == [True, False]
    assert select_units(unit_norms(weight, norm="l1"), 1).tolist() == [False, True]
    mask = torch.tensor([[False, True, True, True], [True] * 4])
    assert select_units(unit_norms(weight, mask), 1).tolist() == [False, True]
    assert select_units(torch.zeros(4, dtype=torch.float64), 2).tolist() == [1, 1, 0, 0]


def expected_masks(
    net: nn.Module, base: dict[str, torch.Tensor], result: UnitMasks, consumers: dict
) -> dict[str, torch.Tensor]:
    """``base`` ANDed with the rows of dropped units and the consumers' matching inputs."""
    out = {name: mask.clone() for name, mask in base.items()}
    for layer, kept in result.kept.items():
        out[f"{layer}.weight"][~kept] = False
        if consumers[layer] is not None:
            target = out[f"{consumers[layer]}.weight"]
            block = target.shape[1] // kept.numel()
            target[:, ~kept.repeat_interleave(block)] = False
    return out


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize(
    ("factory", "keep"),
    [(mlp, {"1": 5, "3": 2}), (convnet, {"0": 3, "4": 2, "7": 4})],
)
def test_unit_masks_keep_the_requested_units_and_compose_with_weight_masks(
    factory: Callable[[], nn.Module], keep: dict[str, int], norm: str
) -> None:
    net = factory()
    consumers = trace_consumers(net)
    generator = torch.Generator().manual_seed(3)
    base = {
        name: torch.rand(mask.shape, generator=generator) < 0.8
        for name, mask in full_masks(net).items()
    }
    result = unit_masks(net, keep, consumers, base, norm=norm)
    check_masks(net, result.weights)
    assert {layer: int(kept.sum()) for layer, kept in result.kept.items()} == keep
    assert {name: mask.tolist() for name, mask in result.biases.items()} == {
        f"{layer}.bias": kept.tolist() for layer, kept in result.kept.items()
    }
    expected = expected_masks(net, base, result, consumers)
    for name, mask in result.weights.items():
        assert torch.equal(mask, expected[name]), name
    apply_unit_masks_(net, result)
    params = dict(net.named_parameters())
    for layer, kept in result.kept.items():
        assert not params[f"{layer}.weight"][~kept].any()
        assert not params[f"{layer}.bias"][~kept].any()
        consumer = params[f"{consumers[layer]}.weight"]
        assert not consumer[:, ~kept.repeat_interleave(consumer.shape[1] // kept.numel())].any()


@pytest.mark.parametrize(
    ("factory", "keep", "shape"),
    [(mlp, {"1": 5, "3": 2}, (6, 3, 4)), (convnet, {"0": 3, "4": 2, "7": 4}, (6, 2, 10, 10))],
)
def test_masked_network_equals_the_physically_shrunk_network(
    factory: Callable[[], nn.Sequential], keep: dict[str, int], shape: tuple[int, ...]
) -> None:
    net = factory()
    result = unit_masks(net, keep, trace_consumers(net))
    apply_unit_masks_(net, result)
    small = shrink(net, result.kept)
    for layer, n in keep.items():
        assert small.get_submodule(layer).weight.shape[0] == n
    x = torch.randn(shape, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(net(x), small(x), rtol=1e-5, atol=1e-6)


def test_unit_masks_work_with_mask_guard_and_prune() -> None:
    net = LeNet300100()
    result = unit_masks(net, {"fc1": 100, "fc2": 40}, trace_consumers(net))
    apply_unit_masks_(net, result)
    guard = MaskGuard(net, result.weights)
    net.fc1.weight.data.fill_(1.0)
    guard.zero_weights_()
    assert int(net.fc1.weight.count_nonzero()) == 100 * 784
    assert int((net.fc2.weight != 0).any(dim=1).sum()) == 40
    masks = prune_(net, result.weights, {"fc1": 0.05})
    assert not (masks["fc1.weight"] & ~result.weights["fc1.weight"]).any()
    assert int(masks["fc1.weight"].sum()) == round(0.05 * 300 * 784)


def test_later_layers_rank_units_without_inputs_dropped_upstream() -> None:
    net = nn.Sequential(nn.Linear(2, 2, bias=False), nn.Linear(2, 2, bias=False))
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 1.0], [0.1, 0.1]]))
        net[1].weight.copy_(torch.tensor([[0.0, 5.0], [1.0, 0.0]]))
    result = unit_masks(net, {"0": 1, "1": 1}, trace_consumers(net))
    assert result.kept["1"].tolist() == [False, True]
    assert result.biases == {}


def test_dead_units_reports_fully_pruned_and_unread_units() -> None:
    net = mlp()
    masks = full_masks(net)
    masks["1.weight"][2] = False
    masks["3.weight"][:, 5] = False
    masks["3.weight"][4] = False
    dead = dead_units(masks)
    assert dead["1"].tolist() == [2] and dead["3"].tolist() == [4] and dead["5"].tolist() == []
    with_consumers = dead_units(masks, trace_consumers(net))
    assert with_consumers["1"].tolist() == [2, 5]
    assert with_consumers["3"].tolist() == [4]


def test_dead_units_of_a_conv_feeding_a_linear_use_the_channel_block() -> None:
    net = convnet()
    masks = full_masks(net)
    masks["7.weight"][:, 4:8] = False
    masks["7.weight"][:, 8:11] = False
    dead = dead_units(masks, trace_consumers(net))
    assert dead["4"].tolist() == [1]


@pytest.mark.parametrize(
    ("keep", "consumers", "match"),
    [
        ({"fc9": 2}, {"fc9": None}, "unknown layer"),
        ({"fc1": 0}, {"fc1": "fc2"}, "n_keep"),
        ({"fc1": 301}, {"fc1": "fc2"}, "n_keep"),
        ({"fc1": 2.0}, {"fc1": "fc2"}, "n_keep"),
        ({"fc1": 2}, {}, "no entry in consumers"),
        ({"fc1": 2}, {"fc1": "fc3"}, "not a multiple"),
    ],
)
def test_invalid_requests_raise(keep: dict, consumers: dict, match: str) -> None:
    with pytest.raises(UnitPruningError, match=match):
        unit_masks(LeNet300100(), keep, consumers)


def test_invalid_norm_and_grouped_consumer_raise() -> None:
    with pytest.raises(UnitPruningError, match="unknown norm"):
        unit_norms(torch.ones(2, 2), norm="l3")  # type: ignore[arg-type]
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(UnitPruningError, match="groups=1"):
        unit_masks(net, {"0": 2}, trace_consumers(net))


def test_units_to_keep_counts_units_and_refuses_the_output_layer() -> None:
    net = mlp()
    consumers = trace_consumers(net)
    assert units_to_keep(net, {"1": 0.5, "3": 1.0, "5": 1.0}, consumers) == {"1": 4}
    assert units_to_keep(net, {"3": 0.01}, consumers) == {"3": 1}
    with pytest.raises(UnitPruningError, match="output layer.*keep all of them"):
        units_to_keep(net, {"5": 0.5}, consumers)
    with pytest.raises(UnitPruningError, match="unknown layer 'fc9'"):
        units_to_keep(net, {"fc9": 0.5}, consumers)
    with pytest.raises(UnitPruningError, match=r"fraction in \(0, 1\]"):
        units_to_keep(net, {"1": 0.0}, consumers)


def test_zeroing_unread_biases_keeps_the_network_s_outputs() -> None:
    net = convnet()
    consumers = trace_consumers(net)
    result = unit_masks(net, {"0": 3, "7": 4}, consumers)
    apply_unit_masks_(net, result)
    with torch.no_grad():  # biases of dropped units back to non-zero, as retraining leaves them
        net[0].bias.add_(1.0)
        net[7].bias.add_(1.0)
    x = torch.randn(5, 2, 10, 10, generator=torch.Generator().manual_seed(2))
    before = net(x)
    zeroed = zero_unread_biases_(net, result.weights, consumers)
    assert zeroed == {"0": 2, "4": 0, "7": 3}
    assert torch.equal(net(x), before)
    assert not net[0].bias[~result.kept["0"]].any() and not net[7].bias[~result.kept["7"]].any()
    assert net[0].bias[result.kept["0"]].all()


def test_zeroing_unread_biases_leaves_a_depthwise_consumer_alone() -> None:
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3, groups=4), nn.Flatten(), nn.Linear(16, 3)
    )  # fmt: skip
    masks = full_masks(net)
    masks["2.weight"][1:] = False  # depthwise filters 1..3 empty: still not a reason to zero
    before = net[0].bias.detach().clone()
    assert zero_unread_biases_(net, masks, trace_consumers(net)) == {"2": 0}
    assert torch.equal(net[0].bias, before)


def _lenet_plan(units: dict[str, float]) -> dict[str, LayerPlan]:
    """A LeNet-300-100 plan keeping the given fraction of each layer's units (others: all)."""
    numel = {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10}
    return {
        name: LayerPlan(name, "fc", n, 0.1, 4, None, units.get(name, 1.0))
        for name, n in numel.items()
    }


def test_unit_targets_trace_the_network_only_when_a_layer_drops_units() -> None:
    dense = Checkpoint.of(LeNet300100(), {"name": "lenet_300_100", "kwargs": {}})
    assert unit_targets(dense, _lenet_plan({})) == ({}, {})
    units, consumers = unit_targets(dense, _lenet_plan({"fc1": 0.5, "fc2": 0.25}))
    assert units == {"fc1": 150, "fc2": 25}
    assert consumers == {"fc1": "fc2", "fc2": "fc3", "fc3": None}


def test_units_kept_counts_the_units_with_a_surviving_weight() -> None:
    model = LeNet300100()
    masks = full_masks(model)
    masks["fc1.weight"][:40] = False  # 40 units of fc1 lose every weight
    kept = units_kept(Checkpoint.of(model, {"name": "lenet_300_100", "kwargs": {}}, masks=masks))
    assert kept == {"fc1": (260, 300), "fc2": (100, 100), "fc3": (10, 10)}
