"""Do linear layers give the same bytes on another CPU? 20 pinned SGD steps of LeNet-300-100 on
synthetic data, with its products through MKL's GEMM (the pipeline's path: MKL's COMPATIBLE
branch) and through oneDNN's matmul (bench_numerics' `--onednn-linear`, the faster candidate);
prints the md5 of the weights for each. Run it natively and under emulation of another CPU:

    .venv/bin/python -m benchmarks.linear_identity
    qemu-x86_64 -cpu Haswell-v4 .venv/bin/python -m benchmarks.linear_identity
"""

from __future__ import annotations

import hashlib
import os

from deepcompression.numerics import pin_environment

STEPS = 20
BATCH = 64


def weights_md5(onednn: bool) -> str:
    """md5 of LeNet-300-100's parameters after STEPS pinned SGD steps (seed 0), its linear
    layers through oneDNN's matmul when `onednn`, else through MKL's GEMM."""
    import torch

    from benchmarks.bench_numerics import onednn_linear

    original = torch.nn.Linear.forward
    if onednn:
        torch.nn.Linear.forward = onednn_linear
    try:
        return trained_md5()
    finally:
        torch.nn.Linear.forward = original


def trained_md5() -> str:
    """The STEPS steps on synthetic MNIST-shaped data; md5 of the parameters."""
    import torch
    import torch.nn.functional as F

    from deepcompression.numerics import pin_threads
    from models import build_model

    generator = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model("lenet_300_100")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    images = torch.randn(STEPS * BATCH, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (STEPS * BATCH,), generator=generator)
    pin_threads(2)
    for start in range(0, STEPS * BATCH, BATCH):
        optimizer.zero_grad()
        batch = slice(start, start + BATCH)
        F.cross_entropy(model(images[batch]), labels[batch]).backward()
        optimizer.step()
    weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    return hashlib.md5(weights).hexdigest()


if __name__ == "__main__":
    pin_environment(os.environ)  # before torch loads
    import torch

    for name, onednn in (("MKL GEMM (COMPATIBLE)", False), ("oneDNN matmul", True)):
        print(f"{name}: {weights_md5(onednn)}  ({torch.backends.cpu.get_cpu_capability()})")
