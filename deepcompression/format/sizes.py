"""Storage accounting as in the paper's Tables 2-3 (P = pruning, Q = quantization, H = Huffman).

P+Q bits of a layer = nnz * weight_bits + index_entries * index_bits (fillers included) + 32 * k;
P+Q+H bits = the Huffman stream bits + code-table bits + removed-units mask bits + 32 * k. Ratios
are against 32 * numel.
The honest file ratio compares the real file size with all parameters (biases too) as float32.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch

from deepcompression.format.huffman import InvalidArgument
from deepcompression.format.sparse_index import encode_positions

if TYPE_CHECKING:  # the file format is imported by the functions that read files' sizes only
    from deepcompression.format.info import FileInfo, LayerInfo

__all__ = [
    "FLOAT_BITS",
    "LayerSizes",
    "ModelSizes",
    "pq_bits",
    "pqh_bits",
    "compression_ratio",
    "layer_sizes",
    "model_sizes",
    "pq_index_bits",
    "pq_layer_sizes",
    "pq_layer_report",
]

FLOAT_BITS = 32


def pq_bits(
    nnz: int, weight_bits: int, index_entries: int, index_bits: int, codebook_size: int
) -> int:
    """Bits after pruning + quantization: fixed-width weights and indices, float32 codebook."""
    return nnz * weight_bits + index_entries * index_bits + FLOAT_BITS * codebook_size


def pqh_bits(
    index_stream_bits: int, weight_stream_bits: int, table_bits: int, codebook_size: int
) -> int:
    """Bits after Huffman coding: both coded streams, their code tables and the codebook."""
    return index_stream_bits + weight_stream_bits + table_bits + FLOAT_BITS * codebook_size


def compression_ratio(dense_bits: int, compressed_bits: int) -> float | None:
    """``dense_bits / compressed_bits``, or None when nothing is stored (ratio undefined)."""
    return dense_bits / compressed_bits if compressed_bits > 0 else None


def _per_symbol(bits: int | None, count: int) -> float | None:
    return bits / count if bits is not None and count > 0 else None


class _Ratios:
    """Paper-style ratios from `dense_bits`, `pq_bits` and `pqh_bits` (None before stage 3)."""

    dense_bits: int
    pq_bits: int
    pqh_bits: int | None

    @property
    def pq_ratio(self) -> float | None:
        """Compression ratio after pruning + quantization."""
        return compression_ratio(self.dense_bits, self.pq_bits)

    @property
    def pqh_ratio(self) -> float | None:
        """Compression ratio after Huffman coding (None before stage 3)."""
        bits = self.pqh_bits
        return None if bits is None else compression_ratio(self.dense_bits, bits)

    @property
    def ratio(self) -> float | None:
        """Ratio of the latest stage measured: P+Q+H when Huffman-coded, else P+Q."""
        return self.pq_ratio if self.pqh_bits is None else self.pqh_ratio


@dataclass(frozen=True)
class LayerSizes(_Ratios):
    """One quantized layer's counts and sizes; Huffman fields are None before stage 3."""

    name: str
    numel: int
    nnz: int
    weight_bits: int
    index_bits: int
    codebook_size: int
    index_entries: int
    index_stream_bits: int | None = None
    weight_stream_bits: int | None = None
    table_bits: int | None = None
    units_bits: int = 0
    kept_units: tuple[int, int] | None = None
    """(kept rows, kept columns) of a layer stored with removed units (format version 3)."""

    @property
    def dense_bits(self) -> int:
        """The layer as dense float32."""
        return FLOAT_BITS * self.numel

    @property
    def kept_percent(self) -> float | None:
        """Surviving weights as a percentage of all weights (None for an empty tensor)."""
        return 100.0 * self.nnz / self.numel if self.numel else None

    @property
    def pq_bits(self) -> int:
        """Bits after pruning and quantization (see ``pq_bits``)."""
        return pq_bits(
            self.nnz, self.weight_bits, self.index_entries, self.index_bits, self.codebook_size
        )

    @property
    def pqh_bits(self) -> int | None:
        """Bits after Huffman coding (see ``pqh_bits``), None if not Huffman-coded yet."""
        if self.index_stream_bits is None or self.weight_stream_bits is None:
            return None
        return self.units_bits + pqh_bits(
            self.index_stream_bits,
            self.weight_stream_bits,
            self.table_bits or 0,
            self.codebook_size,
        )

    @property
    def huffman_weight_bits(self) -> float | None:
        """Average coded bits per surviving weight (the paper's Huffman 'weight bits')."""
        return _per_symbol(self.weight_stream_bits, self.nnz)

    @property
    def huffman_index_bits(self) -> float | None:
        """Average coded bits per index entry (the paper's Huffman 'index bits')."""
        return _per_symbol(self.index_stream_bits, self.index_entries)

    def to_dict(self) -> dict[str, Any]:
        """Fields and derived sizes as a JSON-able dict (None where undefined)."""
        return {
            "name": self.name,
            "numel": self.numel,
            "nnz": self.nnz,
            "kept_percent": self.kept_percent,
            "weight_bits": self.weight_bits,
            "index_bits": self.index_bits,
            "codebook_size": self.codebook_size,
            "index_entries": self.index_entries,
            "index_stream_bits": self.index_stream_bits,
            "weight_stream_bits": self.weight_stream_bits,
            "table_bits": self.table_bits,
            "units_bits": self.units_bits,
            "kept_units": None if self.kept_units is None else list(self.kept_units),
            "huffman_weight_bits": self.huffman_weight_bits,
            "huffman_index_bits": self.huffman_index_bits,
            "dense_bits": self.dense_bits,
            "pq_bits": self.pq_bits,
            "pqh_bits": self.pqh_bits,
            "pq_ratio": self.pq_ratio,
            "pqh_ratio": self.pqh_ratio,
        }


@dataclass(frozen=True)
class ModelSizes(_Ratios):
    """Per-layer sizes plus totals; ``file_bytes`` (None before a file exists) gives the file ratio.

    ``raw_numel`` counts every parameter stored unquantized (biases, skipped layers).
    """

    layers: dict[str, LayerSizes] = field(default_factory=dict)
    raw_numel: int = 0
    file_bytes: int | None = None

    @property
    def numel(self) -> int:
        """Weights in the quantized layers."""
        return sum(layer.numel for layer in self.layers.values())

    @property
    def nnz(self) -> int:
        """Surviving weights in the quantized layers."""
        return sum(layer.nnz for layer in self.layers.values())

    @property
    def dense_bits(self) -> int:
        """Quantized layers as dense float32."""
        return FLOAT_BITS * self.numel

    @property
    def pq_bits(self) -> int:
        """Total P+Q bits of the quantized layers."""
        return sum(layer.pq_bits for layer in self.layers.values())

    @property
    def pqh_bits(self) -> int | None:
        """Total P+Q+H bits, None unless every layer is Huffman-coded."""
        bits = [layer.pqh_bits for layer in self.layers.values()]
        return None if any(b is None for b in bits) else sum(b for b in bits if b is not None)

    @property
    def all_params_dense_bytes(self) -> int:
        """Every stored parameter (quantized and raw) as dense float32 bytes."""
        return FLOAT_BITS // 8 * (self.numel + self.raw_numel)

    @property
    def file_ratio(self) -> float | None:
        """Honest ratio: dense float32 bytes of all parameters over the actual file bytes."""
        if self.file_bytes is None:
            return None
        return compression_ratio(self.all_params_dense_bytes, self.file_bytes)

    def to_dict(self) -> dict[str, Any]:
        """Layers and totals as a JSON-able dict (None where undefined)."""
        return {
            "layers": [layer.to_dict() for layer in self.layers.values()],
            "total": {
                "numel": self.numel,
                "nnz": self.nnz,
                "kept_percent": 100.0 * self.nnz / self.numel if self.numel else None,
                "dense_bits": self.dense_bits,
                "pq_bits": self.pq_bits,
                "pqh_bits": self.pqh_bits,
                "pq_ratio": self.pq_ratio,
                "pqh_ratio": self.pqh_ratio,
            },
            "raw_numel": self.raw_numel,
            "all_params_dense_bytes": self.all_params_dense_bytes,
            "file_bytes": self.file_bytes,
            "file_ratio": self.file_ratio,
        }


def layer_sizes(layer: LayerInfo) -> LayerSizes:
    """Sizes of one Huffman-coded layer as recorded in a file (see ``read_info``)."""
    from deepcompression.format.spec import KIND_HUFFMAN

    if layer.kind != KIND_HUFFMAN:
        raise InvalidArgument(
            f"layer {layer.name!r} is stored as {layer.kind!r}; only {KIND_HUFFMAN!r} layers "
            "have P+Q / P+Q+H sizes"
        )
    return LayerSizes(
        name=layer.name,
        numel=layer.numel,
        nnz=layer.nnz,
        weight_bits=layer.weight_bits,
        index_bits=layer.index_bits,
        codebook_size=layer.codebook_size,
        index_entries=layer.index_symbols,
        index_stream_bits=layer.index_stream_bits,
        weight_stream_bits=layer.weight_stream_bits,
        table_bits=8 * (layer.index_table_bytes + layer.weight_table_bytes),
        units_bits=8 * layer.units_bytes,
        kept_units=layer.units,
    )


def model_sizes(info: FileInfo) -> ModelSizes:
    """Per-layer and total sizes of a compressed file, including the honest file ratio."""
    from deepcompression.format.spec import KIND_HUFFMAN

    layers = {layer.name: layer_sizes(layer) for layer in info.layers if layer.kind == KIND_HUFFMAN}
    raw_numel = sum(layer.numel for layer in info.layers if layer.kind != KIND_HUFFMAN)
    return ModelSizes(layers=layers, raw_numel=raw_numel, file_bytes=info.file_bytes)


def pq_index_bits(mask: torch.Tensor) -> int:
    """The fixed index width (1..16) with the fewest P+Q index bits (entries x width; ties:
    narrowest): what an `auto` width means before Huffman coding."""
    flat = mask.detach().cpu().reshape(-1).numpy().astype(np.bool_, copy=False)
    cost = {bits: encode_positions(flat, bits).size * bits for bits in range(1, 17)}
    return min(cost, key=lambda bits: (cost[bits], bits))


def pq_layer_sizes(
    name: str, mask: torch.Tensor, codebook_size: int, weight_bits: int, index_bits: int | None
) -> LayerSizes:
    """P+Q sizes of a pruned, quantized layer before Huffman coding (counts filler entries);
    ``index_bits`` None takes ``pq_index_bits``."""
    if index_bits is None:
        index_bits = pq_index_bits(mask)
    flat = mask.detach().cpu().reshape(-1).numpy().astype(np.bool_, copy=False)
    return LayerSizes(
        name=name,
        numel=int(flat.size),
        nnz=int(flat.sum()),
        weight_bits=weight_bits,
        index_bits=index_bits,
        codebook_size=codebook_size,
        index_entries=int(encode_positions(flat, index_bits).size),
    )


class _QuantizedState(Protocol):
    state_dict: dict[str, torch.Tensor]
    masks: dict[str, torch.Tensor]
    centroids: dict[str, torch.Tensor]
    bits: dict[str, int]


def pq_layer_report(
    checkpoint: _QuantizedState, index_bits: Mapping[str, int | None]
) -> ModelSizes:
    """P+Q sizes of a quantized checkpoint, keyed by layer name ("fc1" for "fc1.weight").

    ``index_bits`` is keyed by layer name (None: auto); weight bits come from
    ``checkpoint.bits`` (else ``ceil(log2 k)``). Parameters without centroids count as raw
    float32.
    """
    layers: dict[str, LayerSizes] = {}
    for name, centroids in checkpoint.centroids.items():
        layer = name.removesuffix(".weight")
        if layer not in index_bits or name not in checkpoint.masks:
            raise InvalidArgument(
                f"quantized parameter {name!r} needs a mask and index_bits[{layer!r}]; "
                "pass index bits for every quantized layer"
            )
        k = int(centroids.numel())
        bits = checkpoint.bits.get(name, max(1, math.ceil(math.log2(max(k, 1)))))
        layers[layer] = pq_layer_sizes(layer, checkpoint.masks[name], k, bits, index_bits[layer])
    raw_numel = sum(
        int(t.numel())
        for key, t in checkpoint.state_dict.items()
        if key not in checkpoint.centroids
    )
    return ModelSizes(layers=layers, raw_numel=raw_numel)
