"""nn.Linear through oneDNN: forward and backward products as oneDNN inner products.

Once the pinned environment caps oneDNN at AVX2, these give the same bytes on Intel and AMD
CPUs, as MKL's COMPATIBLE branch does, at about torch's unpinned speed (BENCHMARKS.md, "Pinned
numerics"). `deepcompression.numerics.pin_linear` installs `pinned_linear` as nn.Linear's
forward; anything oneDNN does not compute here (CUDA, other dtypes) runs torch's own linear.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TORCH_FORWARD = nn.Linear.forward
"""nn.Linear's own forward (this module loads before `pin_linear` replaces it)."""

_product = torch.ops.mkldnn._linear_pointwise
"""oneDNN's inner product on plain (not prepacked) layouts: `_product(x, w, b, ...)` is
x w^T + b, and a transposed view is read in place."""


def _inner(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x weight^T (+ bias) in oneDNN; `x` is 2-D."""
    return _product(x, weight, bias, "none", [], "")


class OnednnLinear(torch.autograd.Function):
    """y = x W^T + b on 2-D float32 CPU tensors; the gradients of x and W are oneDNN inner
    products too, the bias gradient ATen's sum over the batch."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _inner(x, weight, bias)

    @staticmethod
    def backward(
        ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        needs_x, needs_weight, needs_bias = ctx.needs_input_grad
        grad_x = _inner(grad, weight.t(), None) if needs_x else None
        grad_weight = _inner(grad.t(), x.t(), None) if needs_weight else None
        grad_bias = grad.sum(0) if needs_bias and ctx.has_bias else None
        return grad_x, grad_weight, grad_bias


def onednn_computes(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether oneDNN takes this product: float32 tensors on CPU, oneDNN built in, rows > 0."""
    return (
        x.device.type == "cpu"
        and weight.device.type == "cpu"
        and x.dtype == torch.float32
        and weight.dtype == torch.float32
        and x.numel() > 0
        and torch.backends.mkldnn.is_available()
    )


def pinned_linear(self: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """nn.Linear's forward with its products in oneDNN where `onednn_computes`, else F.linear;
    any leading dimensions are flattened into the batch and restored."""
    if not onednn_computes(x, self.weight):
        return F.linear(x, self.weight, self.bias)
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    out = OnednnLinear.apply(flat, self.weight, self.bias)
    return out.reshape(*x.shape[:-1], out.shape[-1])
