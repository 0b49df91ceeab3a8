"""What ``encode_model`` checks before it writes: every input the reader would refuse is an
InvalidArgument here, naming the tensor and the fix, so no file is written that cannot be read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch

from deepcompression.format.errors import InvalidArgument
from deepcompression.format.header import arch_problem
from deepcompression.format.huffman import MAX_SYMBOL_BITS
from deepcompression.format.info import InputMeta, QuantizedTensor
from deepcompression.format.spec import (
    DTYPE_NAMES,
    MAX_CLASSES,
    MAX_IMAGE_SIZE,
    MAX_INPUT_CHANNELS,
    MAX_NDIM,
    MAX_NONZERO_PRODUCT,
    MAX_TOTAL_NUMEL,
    RAW_DTYPES,
    SUPPORTED_VERSIONS,
)

__all__ = ["check_input_spec", "check_inputs"]


def check_input_spec(spec: InputMeta | None, binary: bool) -> None:
    """An input spec needs version 4 or later and the types and ranges the reader accepts."""
    if spec is None:
        return
    if not binary:
        raise InvalidArgument("an input spec needs format version 4 or later; drop format_version")
    if not isinstance(spec, InputMeta):
        raise InvalidArgument(f"input_spec must be an InputMeta, got {type(spec).__name__}")
    sizes_ok = (
        type(spec.channels) is int
        and type(spec.image_size) is int
        and type(spec.num_classes) is int
        and 1 <= spec.channels <= MAX_INPUT_CHANNELS
        and 1 <= spec.image_size <= MAX_IMAGE_SIZE
        and 1 <= spec.num_classes <= MAX_CLASSES
    )
    values = (*spec.mean, *spec.std)
    if not sizes_ok or len(spec.mean) != spec.channels or len(spec.std) != spec.channels:
        raise InvalidArgument(
            f"input spec: channels, image_size and num_classes must be ints in [1, "
            f"{MAX_INPUT_CHANNELS}], [1, {MAX_IMAGE_SIZE}] and [1, {MAX_CLASSES}], with one mean "
            f"and std per channel; got {spec}"
        )
    if (
        not all(isinstance(v, float | int) and math.isfinite(v) for v in values)
        or min(spec.std) <= 0
    ):
        raise InvalidArgument(f"input spec: mean and std must be finite and std > 0, got {spec}")
    names = spec.classes
    if names is not None and (
        len(names) != spec.num_classes or not all(isinstance(n, str) for n in names)
    ):
        raise InvalidArgument(
            f"input spec: classes must be None or {spec.num_classes} strings, got {names!r:.80}"
        )


def check_inputs(
    quantized: Sequence[QuantizedTensor],
    raw: Mapping[str, torch.Tensor],
    arch: dict,
    provenance: dict,
    version: int,
) -> None:
    """Raise InvalidArgument unless the encoder's inputs make a file the reader accepts."""
    if version not in SUPPORTED_VERSIONS:
        raise InvalidArgument(f"format_version must be one of {SUPPORTED_VERSIONS}")
    _check_names(quantized, raw)
    _check_metadata(arch, provenance, version)
    for q in quantized:
        _check_quantized(q)
    for name, tensor in raw.items():
        _check_raw(name, tensor, version)
    total = sum(math.prod(q.shape) for q in quantized) + sum(t.numel() for t in raw.values())
    if total > MAX_TOTAL_NUMEL:
        raise InvalidArgument(
            f"model has {total} elements; one file holds at most {MAX_TOTAL_NUMEL}"
        )


def _check_names(quantized: Sequence[QuantizedTensor], raw: Mapping[str, torch.Tensor]) -> None:
    """Tensor names must be non-empty strings, each given once."""
    seen: set[str] = set()
    for name in [q.name for q in quantized] + list(raw):
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"tensor names must be non-empty strings, got {name!r}")
        if name in seen:
            raise InvalidArgument(
                f"tensor name {name!r} is given more than once (quantized and raw names must be "
                "unique); pass each parameter exactly once"
            )
        seen.add(name)


def _check_metadata(arch: dict, provenance: dict, version: int) -> None:
    """``arch`` and ``provenance`` must be dicts; version 2 types arch's name and kwargs."""
    for what, value in (("arch", arch), ("provenance", provenance)):
        if not isinstance(value, dict):
            raise InvalidArgument(f"{what} must be a JSON-able dict, got {type(value).__name__}")
    if version >= 2 and (problem := arch_problem(arch)):
        raise InvalidArgument(problem)


def _check_bits(value: object, what: str, name: str) -> int:
    """A bit width in 1..16."""
    if type(value) is not int or not 1 <= value <= MAX_SYMBOL_BITS:
        raise InvalidArgument(
            f"layer {name!r}: {what} must be an int in 1..{MAX_SYMBOL_BITS}, got {value!r}"
        )
    return value


def _check_shape(shape: tuple[int, ...], where: str) -> None:
    """At most MAX_NDIM dimensions, each at most MAX_TOTAL_NUMEL, the non-zero ones multiplying
    to at most MAX_NONZERO_PRODUCT (the reader's limits)."""
    if len(shape) > MAX_NDIM:
        raise InvalidArgument(f"{where}: at most {MAX_NDIM} dimensions are supported")
    if any(dim > MAX_TOTAL_NUMEL for dim in shape):
        raise InvalidArgument(
            f"{where}: shape {list(shape)} has a dimension over {MAX_TOTAL_NUMEL}"
        )
    if math.prod(dim for dim in shape if dim) > MAX_NONZERO_PRODUCT:
        raise InvalidArgument(
            f"{where}: shape {list(shape)} has non-zero dimensions multiplying to more than "
            f"{MAX_NONZERO_PRODUCT}; the reader refuses such an empty tensor"
        )


def _check_quantized(q: QuantizedTensor) -> None:
    """A quantized layer's mask, labels, centroids and bit widths fit the format."""
    name = q.name
    weight_bits = _check_bits(q.weight_bits, "weight_bits", name)
    if q.index_bits is not None:
        _check_bits(q.index_bits, "index_bits", name)
    if not isinstance(q.mask, torch.Tensor) or q.mask.dtype != torch.bool:
        raise InvalidArgument(f"layer {name!r}: mask must be a torch.bool tensor")
    _check_shape(q.shape, f"layer {name!r}")
    labels = q.labels
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dtype.is_floating_point
        or labels.dtype.is_complex
        or labels.dtype == torch.bool
    ):
        raise InvalidArgument(f"layer {name!r}: labels must be an integer torch tensor")
    if tuple(labels.shape) != q.shape:
        raise InvalidArgument(
            f"layer {name!r}: labels shape {tuple(labels.shape)} != mask shape {q.shape}"
        )
    if not isinstance(q.centroids, torch.Tensor) or q.centroids.dtype != torch.float32:
        raise InvalidArgument(f"layer {name!r}: centroids must be a float32 tensor (use .float())")
    if q.centroids.dim() != 1:
        raise InvalidArgument(f"layer {name!r}: centroids must be 1-D, got {q.centroids.dim()}-D")
    if q.centroids.numel() > 1 << weight_bits:
        raise InvalidArgument(
            f"layer {name!r}: {q.centroids.numel()} centroids do not fit weight_bits="
            f"{weight_bits} (at most {1 << weight_bits}); raise weight_bits or use fewer clusters"
        )


def _check_raw(name: str, tensor: torch.Tensor, version: int) -> None:
    """A raw tensor is dense, of a supported dtype (float32 in version 1), within the limits."""
    if version == 1 and (not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32):
        raise InvalidArgument(
            f"raw tensor {name!r} must be a float32 torch tensor in format version 1 "
            "(convert with .float())"
        )
    if not isinstance(tensor, torch.Tensor) or tensor.dtype not in DTYPE_NAMES:
        got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise InvalidArgument(
            f"raw tensor {name!r} has dtype {got}; supported: {', '.join(RAW_DTYPES)} "
            "(convert with .to(dtype))"
        )
    if tensor.layout != torch.strided:
        raise InvalidArgument(f"raw tensor {name!r} must be dense (strided), not {tensor.layout}")
    _check_shape(tuple(tensor.shape), f"raw tensor {name!r}")
