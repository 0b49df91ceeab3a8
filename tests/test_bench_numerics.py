"""The oneDNN linear candidate weighed in benchmarks/bench_numerics.py computes nn.Linear's
outputs and gradients (to float32 rounding), for flat and batched-sequence inputs."""

from __future__ import annotations

import pytest
import torch

from benchmarks.bench_numerics import onednn_linear

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN"
)


@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7)])
def test_onednn_linear_matches_nn_linear_forward_and_backward(shape: tuple[int, ...]):
    torch.manual_seed(0)
    layer = torch.nn.Linear(7, 4)
    x = torch.randn(*shape, requires_grad=True)
    grad = torch.randn(*shape[:-1], 4)
    expected = layer(x)
    expected.backward(grad)
    want = (x.grad.clone(), layer.weight.grad.clone(), layer.bias.grad.clone())
    x.grad = layer.weight.grad = layer.bias.grad = None
    got = onednn_linear(layer, x)
    got.backward(grad)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected)
    for mine, theirs in zip((x.grad, layer.weight.grad, layer.bias.grad), want, strict=True):
        torch.testing.assert_close(mine, theirs)
