"""Pinned CPU numerics: the same inputs give the same bytes on every x86-64 CPU with AVX2.

What a CPU offers changes torch's results: ATen's vector kernels follow the widest ISA (AVX-512
sums in another order than AVX2), MKL picks a code path per CPU and vendor, oneDNN
(convolutions) JITs for the widest ISA, and every parallel reduction splits by the thread count.
The project fixes all of them: `PINNED_ENV` before torch is imported (the stage entry, the warm
runner and every Dask worker set it), `pin_torch` at the start of each stage body (threads,
deterministic algorithms, linear layers through oneDNN: MKL's only vendor-neutral branch is slow),
`numerics_record` for the metrics and the provenance hash. Other CPUs (no AVX2, ARM) and CUDA
run the same pipeline with results that are not byte-identical.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "COMPATIBLE",
    "MKL_DYNAMIC": "FALSE",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "CUBLAS_WORKSPACE_CONFIG": ":4096:8",
}
"""Read once, when torch (ATen, MKL, oneDNN) loads: ATen's kernels at AVX2; MKL's conditional
numerical reproducibility on its COMPATIBLE branch (SSE2 without approximate instructions: MKL's
only branch that runs alike on Intel and AMD; its AVX2 branch is Intel-only and falls back to
AUTO elsewhere), with exactly the threads it is given; oneDNN's JIT at most AVX2; cuBLAS's
deterministic workspace (CUDA runs with deterministic algorithms). BENCHMARKS.md: the cost."""

CAPABILITY = "AVX2"
"""What torch.backends.cpu.get_cpu_capability() reports once ATen is pinned on an AVX2 CPU."""


def pinned_env(env: Mapping[str, str]) -> dict[str, str]:
    """`env` with the pinned values over it: what a stage process runs with."""
    return {**env, **PINNED_ENV}


def pin_environment(environ: MutableMapping[str, str]) -> None:
    """Set the pinned values in `environ` (os.environ, before torch is imported)."""
    environ.update(PINNED_ENV)


def unpinned(environ: Mapping[str, str]) -> list[str]:
    """The pinned variables whose value in `environ` differs (empty: all in force)."""
    return sorted(k for k, v in PINNED_ENV.items() if environ.get(k) != v)


def pin_torch(threads: int) -> None:
    """torch's intra-op threads to `threads` (not the core count: a machine with fewer cores
    splits every reduction alike), deterministic algorithms on, and nn.Linear's products through
    oneDNN (`pin_linear`); ValueError for threads < 1."""
    import torch

    if threads < 1:
        raise ValueError(f"threads must be at least 1, got {threads}; set run.threads")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    pin_linear()


def pin_linear() -> None:
    """Route every nn.Linear's forward through `pinned_linear`: on CPU its three products run
    in oneDNN at the pinned AVX2 (the same bytes on Intel and AMD, as MKL's COMPATIBLE branch
    gives, at about the unpinned speed; BENCHMARKS.md, "Pinned numerics")."""
    import torch

    from deepcompression.onednn_linear import pinned_linear

    torch.nn.Linear.forward = pinned_linear


def unpin_linear() -> None:
    """Give nn.Linear back its own forward (MKL's GEMM on CPU): what `pin_linear` replaced."""
    import torch

    from deepcompression.onednn_linear import TORCH_FORWARD

    torch.nn.Linear.forward = TORCH_FORWARD


def linear_route() -> str:
    """Which products nn.Linear runs: 'onednn' once `pin_linear` is in force, else 'torch'."""
    import torch

    from deepcompression.onednn_linear import pinned_linear

    return "onednn" if torch.nn.Linear.forward is pinned_linear else "torch"


def library_versions() -> dict[str, str]:
    """torch's version and the MKL and oneDNN versions it was built with ('none' if absent)."""
    import torch

    shown = torch.__config__.show()
    mkl = re.search(r"Math Kernel Library Version (\S+)", shown)
    onednn = re.search(r"MKL-DNN v(\S+)", shown)
    return {
        "torch": torch.__version__,
        "mkl": mkl.group(1) if mkl else "none",
        "onednn": onednn.group(1) if onednn else "none",
    }


def numerics_record(device: str = "cpu") -> dict[str, Any]:
    """The numeric settings in force in this process and the library versions; on CUDA also
    its versions (`device`: the resolved device type). Equal records: equal bytes (on CPU)."""
    import torch

    record: dict[str, Any] = {
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "env": {key: os.environ.get(key) for key in sorted(PINNED_ENV)},
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "linear": linear_route(),
        "device": device,
        **library_versions(),
    }
    if device == "cuda":
        record["cuda"] = torch.version.cuda
        record["cudnn"] = torch.backends.cudnn.version()
    return record
