"""Relative (gap) indexing of the surviving positions of a pruned weight tensor.

Positions are row-major flat indices. Gap ``g = p_j - p_{j-1}`` (with ``p_{-1} = -1``) is written
as ``(g - 1) // M`` FILLER symbols ``M = 2**index_bits - 1`` (each: advance M, no weight) followed
by the symbol ``g - 1 - M * fillers`` in ``0..M-1`` (advance that plus one; a weight goes there).
Fillers live only in the index stream, so no zero weights are stored for long gaps.
"""

from __future__ import annotations

import numpy as np

from deepcompression.format.huffman import MAX_SYMBOL_BITS, CorruptStream, InvalidArgument

__all__ = ["filler_symbol", "encode_positions", "decode_positions", "constant_positions"]


def filler_symbol(index_bits: int) -> int:
    """The FILLER symbol ``2**index_bits - 1`` (advance that many positions, no weight)."""
    if type(index_bits) is not int or not 1 <= index_bits <= MAX_SYMBOL_BITS:
        raise InvalidArgument(
            f"index_bits must be an int in 1..{MAX_SYMBOL_BITS}, got {index_bits!r}"
        )
    return (1 << index_bits) - 1


def encode_positions(mask_flat: np.ndarray, index_bits: int) -> np.ndarray:
    """Index symbols (int64, fillers included) for the True positions of a flat boolean mask."""
    filler = filler_symbol(index_bits)
    mask = np.asarray(mask_flat)
    if mask.ndim != 1 or mask.dtype != np.bool_:
        raise InvalidArgument(
            f"mask_flat must be a 1-D bool array, got shape {mask.shape} dtype {mask.dtype}"
        )
    positions = np.flatnonzero(mask)
    if positions.size == 0:
        return np.empty(0, dtype=np.int64)
    steps = np.diff(positions, prepend=-1) - 1
    fillers = steps // filler
    rest = steps - fillers * filler
    if not fillers.any():
        return rest.astype(np.int64, copy=False)
    out = np.full(positions.size + int(fillers.sum()), filler, dtype=np.int64)
    out[np.cumsum(fillers + 1) - 1] = rest
    return out


def decode_positions(symbols: np.ndarray, index_bits: int, numel: int) -> np.ndarray:
    """Strictly increasing flat positions (int64) encoded by ``symbols``; all must be < numel.

    Raises CorruptStream for symbols above the filler, a trailing filler, or a position >= numel.
    """
    filler = filler_symbol(index_bits)
    if type(numel) is not int or numel < 0:
        raise InvalidArgument(f"numel must be a non-negative int, got {numel!r}")
    syms = np.asarray(symbols)
    if syms.ndim != 1 or not (np.issubdtype(syms.dtype, np.integer) or syms.size == 0):
        raise InvalidArgument(
            f"symbols must be a 1-D integer array, got shape {syms.shape} dtype {syms.dtype}"
        )
    if syms.size == 0:
        return np.empty(0, dtype=np.int64)
    syms = syms.astype(np.int64, copy=False)
    if syms.min() < 0 or syms.max() > filler:
        raise CorruptStream(
            f"index symbol outside 0..{filler} for index_bits={index_bits}: "
            f"range [{syms.min()}, {syms.max()}]"
        )
    is_filler = syms == filler
    if is_filler[-1]:
        raise _trailing_filler()
    ends = syms + 1
    ends[is_filler] = filler
    np.cumsum(ends, out=ends)
    ends -= 1
    if ends[-1] >= numel:
        raise _out_of_range(int(ends[-1]), numel)
    np.logical_not(is_filler, out=is_filler)
    return ends[is_filler]


def constant_positions(symbol: int, n_symbols: int, index_bits: int, numel: int) -> slice:
    """The positions ``n_symbols`` copies of one index symbol encode, as a slice of the flat tensor.

    Same result and errors as ``decode_positions`` on ``np.full(n_symbols, symbol)``, in O(1)
    memory: a zero-bit index code declares its symbol count in the header, not in coded bits.
    """
    filler = filler_symbol(index_bits)
    for what, value in (("symbol", symbol), ("n_symbols", n_symbols), ("numel", numel)):
        if type(value) is not int or value < 0:
            raise InvalidArgument(f"{what} must be a non-negative int, got {value!r}")
    if n_symbols == 0:
        return slice(0, 0)
    if symbol > filler:
        raise CorruptStream(
            f"index symbol outside 0..{filler} for index_bits={index_bits}: got {symbol}"
        )
    if symbol == filler:
        raise _trailing_filler()
    step = symbol + 1
    if step * n_symbols > numel:
        raise _out_of_range(step * n_symbols - 1, numel)
    return slice(symbol, step * n_symbols, step)


def _trailing_filler() -> CorruptStream:
    return CorruptStream("index stream ends with a FILLER; its last symbol must place a weight")


def _out_of_range(position: int, numel: int) -> CorruptStream:
    return CorruptStream(
        f"index stream reaches flat position {position}; the tensor has {numel} elements"
    )
