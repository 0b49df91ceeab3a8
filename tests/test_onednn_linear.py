"""nn.Linear through oneDNN (deepcompression/onednn_linear.py, installed by `pin_torch`): the
outputs and gradients of torch's own linear to float32 rounding, for any leading shape, with
and without bias; torch's own path for what oneDNN does not take; nothing cached across steps."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepcompression.numerics import linear_route, numerics_record, pin_linear, unpin_linear
from deepcompression.onednn_linear import TORCH_FORWARD, onednn_computes, pinned_linear

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN"
)


def grads(layer: nn.Linear, x: torch.Tensor, forward, upstream: torch.Tensor) -> list:
    """Output, then the gradients of x and of each parameter, for `forward(layer, x)`."""
    out = forward(layer, x)
    wrt = [x, *layer.parameters()] if x.requires_grad else list(layer.parameters())
    return [out, *torch.autograd.grad(out, wrt, upstream)]


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7), (7,), (1, 7), (0, 7)])
def test_matches_torch_linear_forward_and_backward(shape: tuple[int, ...], bias: bool):
    torch.manual_seed(0)
    layer = nn.Linear(7, 4, bias=bias)
    x = torch.randn(*shape, requires_grad=True)
    upstream = torch.randn(*shape[:-1], 4)
    want = grads(layer, x, TORCH_FORWARD, upstream)
    got = grads(layer, x, pinned_linear, upstream)
    assert len(got) == len(want) == (3 + bias)
    for mine, theirs in zip(got, want, strict=True):
        assert mine.shape == theirs.shape
        torch.testing.assert_close(mine, theirs)


def test_an_input_without_grad_gives_only_parameter_grads():
    torch.manual_seed(1)
    layer = nn.Linear(6, 3)
    x = torch.randn(4, 6)
    upstream = torch.randn(4, 3)
    for mine, theirs in zip(
        grads(layer, x, pinned_linear, upstream), grads(layer, x, TORCH_FORWARD, upstream),
        strict=True,
    ):
        torch.testing.assert_close(mine, theirs)


def test_an_in_place_weight_update_is_seen_at_once():
    """Weights change every SGD step in place: no product may reuse a packed copy."""
    torch.manual_seed(2)
    layer = nn.Linear(5, 3)
    x = torch.randn(8, 5)
    before = pinned_linear(layer, x)
    with torch.no_grad():
        layer.weight.mul_(-2.0)
        layer.bias.add_(1.0)
    after = pinned_linear(layer, x)
    torch.testing.assert_close(after, TORCH_FORWARD(layer, x))
    assert not torch.allclose(before, after)


def test_a_non_contiguous_weight_is_read_as_its_values():
    torch.manual_seed(3)
    layer = nn.Linear(5, 3)
    layer.weight = nn.Parameter(torch.randn(5, 3).t())
    assert not layer.weight.is_contiguous()
    x = torch.randn(4, 5)
    torch.testing.assert_close(pinned_linear(layer, x), TORCH_FORWARD(layer, x))


def test_other_dtypes_take_torch_linear_exactly():
    layer = nn.Linear(4, 2).double()
    x = torch.randn(3, 4, dtype=torch.float64)
    assert not onednn_computes(x, layer.weight)
    assert torch.equal(pinned_linear(layer, x), TORCH_FORWARD(layer, x))
    assert onednn_computes(x.float(), layer.weight.float())


def test_pin_linear_installs_the_route_and_the_record_names_it():
    before = nn.Linear.forward  # this worker's state (an in-process stage may have pinned it)
    try:
        pin_linear()
        assert nn.Linear.forward is pinned_linear
        assert linear_route() == "onednn" == numerics_record("cpu")["linear"]
        unpin_linear()
        assert nn.Linear.forward is TORCH_FORWARD
        assert linear_route() == "torch" == numerics_record("cpu")["linear"]
    finally:
        nn.Linear.forward = before
