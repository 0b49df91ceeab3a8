"""Pruning and weight sharing on every Linear/Conv2d of the registered CNNs, BatchNorm untouched."""

import pytest
import torch
from torch import nn

from deepcompression.compress.pruning import (
    MaskGuard,
    densities,
    full_masks,
    layer_name,
    prunable_weights,
    prune_,
)
from deepcompression.compress.quantization import (
    cluster_model,
    distinct_nonzero_values,
    share_weights_,
    strip_,
)
from models import build_model

DENSITY = 0.1
BITS = 4


def _norm_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of every parameter and buffer of the model's BatchNorm layers."""
    return {
        f"{name}.{key}": value.detach().clone()
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        for key, value in module.state_dict().items()
    }


def _assert_norms_unchanged(model: nn.Module, before: dict[str, torch.Tensor]) -> None:
    """Every BatchNorm parameter and buffer equals its copy in `before`."""
    after = _norm_state(model)
    assert after.keys() == before.keys()
    for key, value in after.items():
        assert torch.equal(value, before[key]), key


def _layers(model: nn.Module) -> dict[str, nn.Module]:
    """Linear and Conv2d layers by name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear | nn.Conv2d)}


def _compress(model: nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Prune every layer to DENSITY, train one masked step, share BITS-bit weights, strip."""
    norms = _norm_state(model)
    masks = prune_(model, full_masks(model), {layer_name(k): DENSITY for k in full_masks(model)})
    _assert_norms_unchanged(model, norms)
    guard = MaskGuard(model, masks)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    model(x).sum().backward()
    guard.zero_gradients_()
    optimizer.step()
    guard.zero_weights_()
    model.zero_grad(set_to_none=True)  # share_weights_ would keep a stale full-shape .grad
    norms = _norm_state(model)
    share_weights_(model, cluster_model(model, masks, {layer_name(k): BITS for k in masks}))
    _assert_norms_unchanged(model, norms)
    model(x).sum().backward()  # in train mode this moves the BN running stats
    for layer in _layers(model).values():  # every conv kind passes gradients to its centroids
        centroids = layer.parametrizations["weight"].original
        assert centroids.grad is not None and centroids.grad.shape == centroids.shape
    norms = _norm_state(model)
    strip_(model)
    _assert_norms_unchanged(model, norms)
    return masks


@pytest.mark.parametrize(
    ("name", "channels", "size"),
    [("resnet18", 3, 32), ("small_bn_cnn", 3, 16), ("mobilenet_v2", 3, 32)],
)
def test_pruning_and_sharing_cover_every_layer(name, channels, size):
    torch.manual_seed(0)
    model = build_model(name, in_channels=channels, image_size=size, num_classes=3).eval()
    x = torch.randn(2, channels, size, size)
    assert model(x).shape == (2, 3)
    keys = list(model.state_dict())
    masks = _compress(model, x)
    assert list(model.state_dict()) == keys
    assert set(masks) == {f"{n}.weight" for n in _layers(model)}
    for layer, density in densities(masks).items():
        assert density == pytest.approx(DENSITY, abs=0.5 / masks[f"{layer}.weight"].numel() + 0.01)
    for key, weight in prunable_weights(model).items():
        assert not weight[~masks[key]].any(), key
        assert distinct_nonzero_values(weight) <= 2**BITS, key
    assert torch.isfinite(model(x)).all()


def test_grouped_and_depthwise_convs_are_pruned_and_shared():
    torch.manual_seed(0)
    model = build_model("small_bn_cnn", in_channels=3, image_size=16, num_classes=3).train()
    _compress(model, torch.randn(4, 3, 16, 16))
    grouped = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.groups > 1]
    assert [m.groups for m in grouped] == [grouped[0].in_channels, 2]
    for conv in grouped:
        assert type(conv.weight) is nn.Parameter
        assert 0 < distinct_nonzero_values(conv.weight) <= 2**BITS
        assert conv.weight.count_nonzero() == round(DENSITY * conv.weight.numel())
