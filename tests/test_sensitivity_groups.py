"""Sensitivity on a large network: one measured layer per group of one kind and weight shape, on
every other value of each axis; a small network (the LeNets) keeps every layer and every point,
in the same order as before, so its sensitivity.json keeps its bytes."""

from __future__ import annotations

from deepcompression.config import OptimConfig, SensitivityConfig
from deepcompression.plan import compressible_layers, layer_kind
from flows.sensitivity import LARGE_NETWORK_LAYERS, axis_values, layer_groups
from models import build_model


def _layers(name: str) -> dict[str, tuple[str, tuple[int, ...]]]:
    net = build_model(name, in_channels=3, image_size=32, num_classes=10)
    return {
        n: (layer_kind(m), tuple(m.weight.shape)) for n, m in compressible_layers(net).items()
    }


def _cfg() -> SensitivityConfig:
    return SensitivityConfig(
        densities=(0.5, 0.2, 0.1, 0.05, 0.02, 0.01), bits=(8, 6, 5, 4, 3, 2), retrain=OptimConfig()
    )


def test_a_small_network_measures_every_layer_at_every_point():
    layers = _layers("lenet5")
    assert len(layers) <= LARGE_NETWORK_LAYERS
    assert layer_groups(layers) == {layer: [layer] for layer in layers}
    assert axis_values(_cfg(), large=False) == [
        ("density", 0.5), ("density", 0.2), ("density", 0.1), ("density", 0.05),
        ("density", 0.02), ("density", 0.01),
        ("bits", 8), ("bits", 6), ("bits", 5), ("bits", 4), ("bits", 3), ("bits", 2),
    ]  # fmt: skip


def test_mobilenet_v2_is_measured_in_28_groups_at_6_points():
    layers = _layers("mobilenet_v2")
    groups = layer_groups(layers)
    assert (len(layers), len(groups)) == (53, 28)
    assert sorted(m for members in groups.values() for m in members) == sorted(layers)
    for measured, members in groups.items():
        assert members[0] == measured
        assert {layers[m] for m in members} == {layers[measured]}, "one kind and shape"
    points = axis_values(_cfg(), large=True)
    assert points == [
        ("density", 0.5), ("density", 0.1), ("density", 0.02), ("bits", 8), ("bits", 5), ("bits", 3)
    ]  # fmt: skip
    assert len(groups) * len(points) == 168  # 53 x 12 = 636 before


def test_depthwise_and_pointwise_convs_of_one_shape_count_apart_from_other_shapes():
    layers = {"a": ("conv", (8, 1, 3, 3)), "b": ("conv", (8, 8, 1, 1)), "c": ("fc", (10, 8))}
    layers |= {f"d{i}": ("conv", (8, 1, 3, 3)) for i in range(LARGE_NETWORK_LAYERS)}
    groups = layer_groups(layers)
    assert list(groups) == ["a", "b", "c"]
    assert groups["a"] == ["a"] + [f"d{i}" for i in range(LARGE_NETWORK_LAYERS)]
