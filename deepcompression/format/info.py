"""The format's public records: a layer to encode, per-tensor and per-file sizes, a decoded model.

``QuantizedTensor`` is what ``encode_model`` takes; ``LayerInfo`` and ``FileInfo`` are what
``read_info`` reports without decoding; ``DecodedModel`` is what ``decode_model`` returns.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from deepcompression.format.spec import DTYPES, FLOAT_BYTES

__all__ = ["QuantizedTensor", "LayerInfo", "FileInfo", "DecodedModel", "InputMeta"]


@dataclass(frozen=True)
class InputMeta:
    """What the network reads, stored for deployment (version 4): (channels, image_size,
    image_size) images normalised as ``(byte / 255 - mean) / std`` per channel, and its classes'
    names (None: unnamed). The fields are ``deepcompression.inference.InputSpec``'s."""

    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    num_classes: int
    classes: tuple[str, ...] | None = None


@dataclass(frozen=True)
class QuantizedTensor:
    """A pruned, weight-shared layer: surviving ``mask``, cluster ``labels`` and ``centroids``.

    ``index_bits`` None lets the writer pick the width (from ``AUTO_INDEX_BITS``) that gives the
    smallest file.
    """

    name: str
    mask: torch.Tensor
    labels: torch.Tensor
    centroids: torch.Tensor
    weight_bits: int
    index_bits: int | None

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the weight tensor (the mask's shape)."""
        return tuple(self.mask.shape)


@dataclass(frozen=True)
class LayerInfo:
    """Header-level description and byte accounting of one stored tensor.

    For ``kind == "raw"`` tensors: nnz = numel, weight_bits = 8 * item size of ``dtype``,
    index_bits = 0, and only ``raw_bytes`` is non-zero among the byte counts. Huffman-coded
    tensors decode to float32; ``units`` gives the kept rows and columns of one that declares
    removed units (its index then runs over the compacted sub-tensor).
    """

    name: str
    kind: str
    shape: tuple[int, ...]
    numel: int
    nnz: int
    weight_bits: int
    index_bits: int
    codebook_size: int
    index_symbols: int
    index_stream_bits: int
    weight_stream_bits: int
    codebook_bytes: int
    index_table_bytes: int
    weight_table_bytes: int
    index_stream_bytes: int
    weight_stream_bytes: int
    raw_bytes: int
    dtype: str = "float32"
    units_bytes: int = 0
    kept_rows: int | None = None
    kept_cols: int | None = None
    index_coder: str = "huffman"
    weight_coder: str = "huffman"
    """Each stream's coder: "huffman" or (version 4) "arith", adaptive arithmetic coding."""

    @property
    def units(self) -> tuple[int, int] | None:
        """(kept rows, kept columns) if the tensor declares removed units (version 3), else None."""
        if self.kept_rows is None or self.kept_cols is None:
            return None
        return self.kept_rows, self.kept_cols

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded tensor (numel times the item size of ``dtype``)."""
        return self.numel * DTYPES[self.dtype][1]

    @property
    def total_bytes(self) -> int:
        """Payload bytes this tensor occupies in the file."""
        return (
            self.codebook_bytes
            + self.units_bytes
            + self.index_table_bytes
            + self.weight_table_bytes
            + self.index_stream_bytes
            + self.weight_stream_bytes
            + self.raw_bytes
        )


@dataclass(frozen=True)
class FileInfo:
    """File-level description of a compressed model, read without decoding any stream."""

    version: int
    header_compressed: bool
    file_bytes: int
    preamble_bytes: int
    header_bytes: int
    header_json_bytes: int
    payload_bytes: int
    arch: dict
    provenance: dict
    layers: tuple[LayerInfo, ...]
    input: InputMeta | None = None
    """The stored input spec (version 4), None when the file has none."""

    @property
    def dense_bytes(self) -> int:
        """Bytes of all stored tensors as dense float32 (the uncompressed baseline)."""
        return FLOAT_BYTES * sum(layer.numel for layer in self.layers)

    @property
    def decoded_bytes(self) -> int:
        """Bytes ``decode_model`` allocates for the tensors, each in its decoded dtype."""
        return sum(layer.decoded_bytes for layer in self.layers)

    @property
    def overhead_bytes(self) -> int:
        """Preamble plus stored header bytes."""
        return self.preamble_bytes + self.header_bytes


@dataclass(frozen=True)
class DecodedModel:
    """A decoded file: model description plus a CPU state_dict in file order.

    Huffman-coded tensors are float32; raw tensors keep the dtype they were stored with.
    """

    arch: dict
    provenance: dict
    state_dict: dict[str, torch.Tensor]
    layers: list[LayerInfo] = field(default_factory=list)
    input: InputMeta | None = None
    """The stored input spec (version 4), None when the file has none."""
