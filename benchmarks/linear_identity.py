"""Do linear layers give the same bytes on another CPU? 20 pinned training steps of LeNet-300-100
on synthetic data (the library's `train_epoch`, params.yaml's recipe), with its products through
oneDNN's inner product (the pipeline's path, `pin_torch`) and through MKL's GEMM on its
COMPATIBLE branch (the path before it); prints the md5 of the weights for each. Run it natively
and under emulation of another CPU:

    .venv/bin/python -m benchmarks.linear_identity
    qemu-x86_64 -cpu Haswell-v4 .venv/bin/python -m benchmarks.linear_identity
"""

from __future__ import annotations

import hashlib
import os

from deepcompression.numerics import pin_environment

STEPS = 20
MODEL = "lenet_300_100"


def trained_md5(onednn: bool) -> str:
    """One epoch of STEPS batches of synthetic MNIST-shaped data, through the library's own
    training step, linear layers through oneDNN when `onednn` else MKL; md5 of the parameters."""
    import torch

    from deepcompression.numerics import pin_torch, unpin_linear
    from deepcompression.training import make_optimizer, seed_everything, train_epoch
    from flows.params import read_params
    from models import build_model

    params = read_params("params.yaml")
    cfg = params.models[MODEL].train
    pin_torch(params.run.threads)
    if not onednn:
        unpin_linear()
    generator = seed_everything(0)
    images = torch.randn(STEPS * cfg.batch_size, 1, 28, 28, generator=generator)
    labels = torch.randint(0, 10, (STEPS * cfg.batch_size,), generator=generator)
    model = build_model(MODEL)
    optimizer = make_optimizer(model.parameters(), cfg)
    shift = cfg.augment_shift or 0
    train_epoch(model, optimizer, images, labels, cfg.batch_size, generator, shift=shift)
    weights = b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    return hashlib.md5(weights).hexdigest()


if __name__ == "__main__":
    pin_environment(os.environ)  # before torch loads
    import torch

    for name, onednn in (("oneDNN inner product (pipeline)", True), ("MKL GEMM", False)):
        print(f"{name}: {trained_md5(onednn)}  ({torch.backends.cpu.get_cpu_capability()})")
