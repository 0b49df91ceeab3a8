"""Which coder each stream of a layer uses (version 4): Huffman, the paper's, or adaptive
arithmetic coding for small streams, chosen by the exact size of the whole file."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from bitarray import frozenbitarray

from deepcompression.format.arith import MAX_ARITH_ALPHABET, MAX_ARITH_SYMBOLS, arith_encode
from deepcompression.format.huffman import HuffmanStream, encode_table
from deepcompression.format.placed import Encoded
from deepcompression.format.spec import (
    CODEBOOK_FLOAT16,
    CODER_ARITH,
    FLOAT_BYTES,
    HALF_BYTES,
    MAX_FILE_ARITH_SYMBOLS,
)

__all__ = ["coded_stream", "choose_coders"]

_PAIRS = ((True, False), (False, True), (True, True))


def coded_stream(
    huffman: HuffmanStream, symbols: np.ndarray, alphabet: int, symbol_bits: int, *, arith: bool
) -> tuple[bytes, frozenbitarray, dict]:
    """(table bytes, coded bits, header fields) of one stream, Huffman- or arithmetic-coded."""
    fields: dict = {"symbols": huffman.n_symbols}
    if not arith:
        table = encode_table(huffman.count, huffman.symbols, symbol_bits)
        return table, huffman.bits, {"bits": huffman.n_bits, **fields}
    bits = arith_encode(symbols, alphabet)
    return b"", bits, {"bits": len(bits), **fields, "coder": CODER_ARITH}


def _eligible(record: dict) -> tuple[bool, bool]:
    """Which streams may be arithmetic-coded: small, small alphabet, not a zero-bit code."""
    half = record.get("codebook_dtype") == CODEBOOK_FLOAT16
    item = HALF_BYTES if half else FLOAT_BYTES
    alphabets = (1 << record["index_bits"], record["codebook"][1] // item)
    return tuple(
        record[key]["bits"] > 0
        and 0 < record[key]["symbols"] <= MAX_ARITH_SYMBOLS
        and 1 <= alphabet <= MAX_ARITH_ALPHABET
        for key, alphabet in zip(("index", "weight"), alphabets, strict=True)
    )  # type: ignore[return-value]


def arith_symbols(record: dict) -> int:
    """Symbols of a record's arithmetic-coded streams (the file's total is capped)."""
    return sum(
        record[key]["symbols"]
        for key in ("index", "weight")
        if key in record and record[key].get("coder") == CODER_ARITH
    )


def choose_coders(
    layers: Sequence[Encoded], file_bytes: Callable[[Sequence[Encoded]], int]
) -> list[Encoded]:
    """Per layer in file order, the coders (Huffman or arithmetic, per stream) that make the
    whole file smallest, within MAX_FILE_ARITH_SYMBOLS arithmetic-coded symbols per file."""
    chosen = list(layers)
    best = file_bytes(chosen)
    used = 0
    for i, layer in enumerate(layers):
        if layer.remake is None:
            continue
        eligible = _eligible(layer.record)
        for pair in _PAIRS:
            if any(want and not ok for want, ok in zip(pair, eligible, strict=True)):
                continue
            candidate = layer.remake(pair)
            if used + arith_symbols(candidate.record) > MAX_FILE_ARITH_SYMBOLS:
                continue
            trial = [*chosen[:i], candidate, *chosen[i + 1 :]]
            size = file_bytes(trial)
            if size < best:
                chosen, best = trial, size
        used += arith_symbols(chosen[i].record)
    return chosen
