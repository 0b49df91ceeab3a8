"""Exact-size helpers for a compression search: per-layer index width, whole-file bytes.

Sizes come from the encoder itself, not from a formula: ``index_bytes`` runs the same
``sparse_index`` + ``huffman`` calls as ``container.encode_model`` does for one layer's index
(code table plus coded stream), and ``encoded_file_bytes`` encodes the whole file and counts it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from deepcompression.container import QuantizedTensor, encode_model
from deepcompression.huffman import InvalidArgument, encode_symbols, encode_table
from deepcompression.sparse_index import encode_positions

__all__ = [
    "DEFAULT_INDEX_CANDIDATES",
    "MaskOrPositions",
    "index_bytes",
    "best_index_bits",
    "encoded_file_bytes",
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
    """Exact size of the file ``encode_model`` writes for these tensors (``options`` passed on)."""
    data = encode_model(quantized, raw or {}, arch or {}, provenance or {}, **options)
    return len(data)
