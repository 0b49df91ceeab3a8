"""Exact-size helpers for a compression search, and the encoder's inputs from a checkpoint.

Sizes come from the encoder itself, not from a formula: ``index_bytes`` runs the same
``sparse_index`` + ``huffman`` calls as ``container.encode_model`` does for one layer's index
(code table plus coded stream), and ``encoded_file_bytes`` / ``checkpoint_file_bytes`` encode the
whole file and count it. ``encoder_inputs`` is what the encode stage writes, so a search that
calls ``checkpoint_file_bytes`` gets the size of the very file the pipeline would write.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.pruning import layer_name
from deepcompression.config import MAX_BIAS_BITS, BiasMode
from deepcompression.format.encoder import encode_model
from deepcompression.format.huffman import InvalidArgument, encode_symbols, encode_table
from deepcompression.format.info import InputMeta, QuantizedTensor
from deepcompression.format.sparse_index import encode_positions

__all__ = [
    "DEFAULT_INDEX_CANDIDATES",
    "MaskOrPositions",
    "index_bytes",
    "best_index_bits",
    "encoded_file_bytes",
    "encoder_inputs",
    "checkpoint_file_bytes",
]

DEFAULT_INDEX_CANDIDATES = range(2, 13)
MaskOrPositions = torch.Tensor | np.ndarray | Sequence[int]
"""A bool mask of any shape (row-major), or strictly increasing flat positions of survivors."""


def _flat_mask(mask_or_positions: MaskOrPositions) -> np.ndarray:
    """The flat bool mask of a mask, or of positions (a mask ending at the last position)."""
    if isinstance(mask_or_positions, torch.Tensor):
        values = mask_or_positions.detach().cpu().numpy()
    else:
        values = np.asarray(mask_or_positions)
    if values.dtype == np.bool_:
        return values.reshape(-1)
    if values.size == 0:
        return np.zeros(0, dtype=np.bool_)
    if values.ndim != 1 or not np.issubdtype(values.dtype, np.integer):
        raise InvalidArgument(
            f"expected a bool mask or 1-D integer positions, got shape {values.shape} "
            f"dtype {values.dtype}"
        )
    if values[0] < 0 or np.any(np.diff(values) <= 0):
        raise InvalidArgument("positions must be non-negative and strictly increasing")
    mask = np.zeros(int(values[-1]) + 1, dtype=np.bool_)
    mask[values] = True
    return mask


def _index_bytes(mask: np.ndarray, index_bits: int) -> int:
    """Index code table plus coded stream bytes of a flat bool mask, as the container writes."""
    stream = encode_symbols(encode_positions(mask, index_bits))
    table = encode_table(stream.count, stream.symbols, index_bits)
    return len(table) + len(stream.stream_bytes())


def index_bytes(mask_or_positions: MaskOrPositions, index_bits: int) -> int:
    """Payload bytes of one layer's relative index (code table + stream) at ``index_bits``."""
    return _index_bytes(_flat_mask(mask_or_positions), index_bits)


def best_index_bits(
    mask_or_positions: MaskOrPositions, candidates: Iterable[int] = DEFAULT_INDEX_CANDIDATES
) -> tuple[int, dict[int, int]]:
    """The index width with the fewest index bytes (ties: narrowest), and bytes per width."""
    mask = _flat_mask(mask_or_positions)
    sizes = {int(bits): _index_bytes(mask, int(bits)) for bits in candidates}
    if not sizes:
        raise InvalidArgument("candidates is empty; give at least one index width")
    best = min(sizes, key=lambda bits: (sizes[bits], bits))
    return best, sizes


def encoded_file_bytes(
    quantized: Sequence[QuantizedTensor],
    raw: Mapping[str, torch.Tensor] | None = None,
    arch: dict | None = None,
    provenance: dict | None = None,
    **options: Any,
) -> int:
    """Exact size of the file ``encode_model(quantized, raw, arch, provenance, **options)``
    writes: version 5 by default, so removed units and ``index_bits=None`` (auto) widths are
    chosen as the writer chooses them."""
    data = encode_model(quantized, raw or {}, arch or {}, provenance or {}, **options)
    return len(data)


def encoder_inputs(
    checkpoint: Checkpoint,
    index_bits: Mapping[str, int | None],
    bias: BiasMode = "float32",
) -> tuple[list[QuantizedTensor], dict[str, torch.Tensor]]:
    """The encode stage's ``encode_model`` inputs for a quantized checkpoint.

    ``index_bits`` maps each shared layer ("fc1") to its width, None for auto. ``bias`` is how
    the shared layers' biases are stored, as the quantize stage rounded them
    (``quantization.round_biases_``): float32 and float16 raw, k-means bits as a Huffman tensor
    (its distinct non-zero values as the codebook, +0.0 entries pruned). Every other tensor is
    raw in its own dtype.
    """
    if not checkpoint.centroids:
        raise ValueError("the checkpoint has no codebooks: encode a quantized checkpoint")
    quantized = [
        QuantizedTensor(
            name=name,
            mask=checkpoint.masks[name],
            labels=checkpoint.labels[name],
            centroids=checkpoint.centroids[name],
            weight_bits=checkpoint.bits[name],
            index_bits=index_bits[layer_name(name)],
        )
        for name in checkpoint.state_dict
        if name in checkpoint.centroids
    ]
    biases = {f"{layer_name(q.name)}.bias" for q in quantized} & set(checkpoint.state_dict)
    shared_biases = [] if bias in ("float32", "float16") else [
        _shared_bias(name, checkpoint.state_dict[name], int(bias)) for name in checkpoint.state_dict
        if name in biases
    ]  # fmt: skip
    stored = {q.name for q in quantized} | {q.name for q in shared_biases}
    raw = {
        name: _raw_bias(name, tensor) if bias == "float16" and name in biases else tensor
        for name, tensor in checkpoint.state_dict.items()
        if name not in stored
    }
    return quantized + shared_biases, raw


def _raw_bias(name: str, bias: torch.Tensor) -> torch.Tensor:
    """The float16 form of a bias that the quantize stage rounded to float16 values."""
    half = bias.half()
    if not torch.equal(half.float(), bias.float()):
        raise ValueError(
            f"bias {name!r} holds values that float16 does not represent: quantize with "
            "`quantize.bias: float16` before encoding it as float16"
        )
    return half


def _shared_bias(name: str, bias: torch.Tensor, bits: int) -> QuantizedTensor:
    """A k-means-rounded bias as a Huffman tensor: +0.0 entries pruned, distinct values shared."""
    if not 1 <= bits <= MAX_BIAS_BITS:
        raise ValueError(f"bias bits must be in 1..{MAX_BIAS_BITS}, got {bits}")
    values = bias.detach().cpu().float().reshape(-1)
    pattern = values.view(torch.int32)
    mask = pattern != 0
    codes, labels = torch.unique(pattern[mask], return_inverse=True)
    if codes.numel() > 1 << bits:
        raise ValueError(
            f"bias {name!r} has {codes.numel()} distinct values, more than 2**{bits}: quantize "
            f"with `quantize.bias: {bits}` before encoding it with {bits} bits"
        )
    full = torch.zeros(values.numel(), dtype=torch.int64)
    full[mask] = labels
    return QuantizedTensor(
        name=name,
        mask=mask.reshape(bias.shape),
        labels=full.reshape(bias.shape),
        centroids=codes.view(torch.float32).clone(),
        weight_bits=bits,
        index_bits=None,
    )


def checkpoint_file_bytes(
    checkpoint: Checkpoint,
    index_bits: Mapping[str, int | None],
    bias: BiasMode = "float32",
    provenance: dict | None = None,
    input_spec: InputMeta | None = None,
) -> int:
    """Exact bytes of the file the encode stage writes for ``checkpoint`` (see
    ``encoder_inputs``) with this ``provenance`` (the stage records the run's; ``{}`` here) and
    ``input_spec`` (the stage stores its data's, ``inference.stored_input``)."""
    quantized, raw = encoder_inputs(checkpoint, index_bits, bias)
    return encoded_file_bytes(
        quantized, raw, checkpoint.arch, provenance or {}, input_spec=input_spec
    )
