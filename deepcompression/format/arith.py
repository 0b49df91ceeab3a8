"""Adaptive order-0 arithmetic coding of small symbol streams (format version 4).

The coder of Witten, Neal and Cleary (1987) on 32-bit integers, with a model that starts with
every symbol of the alphabet at count 1 and adds 1 to a symbol's count after coding it: no code
table, and within a few percent of the order-0 entropy on streams whose tables would dominate.
A stream is valid only if it is exactly the encoder's output for the symbols it decodes to, so
the decoder re-encodes and compares. Streams are small by rule (``MAX_ARITH_SYMBOLS``,
``MAX_ARITH_ALPHABET``), which bounds the pure-Python cost.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from bitarray import bitarray, frozenbitarray

from deepcompression.format.errors import CorruptStream

__all__ = ["MAX_ARITH_SYMBOLS", "MAX_ARITH_ALPHABET", "arith_encode", "arith_decode"]

MAX_ARITH_SYMBOLS = 4096
"""Most symbols an arithmetic-coded stream may hold."""
MAX_ARITH_ALPHABET = 256
"""Largest alphabet (2**index_bits, or the codebook size k) of an arithmetic-coded stream."""
_HALF = 1 << 31
_QUARTER = 1 << 30
_TOP = (1 << 32) - 1


class _Counts:
    """Symbol counts (all 1 at the start) with prefix sums in O(log n): a Fenwick tree."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.total = size
        self.tree = [0] * (size + 1)
        for i in range(1, size + 1):
            self.tree[i] += 1
            parent = i + (i & -i)
            if parent <= size:
                self.tree[parent] += self.tree[i]
        self.step = 1 << (size.bit_length() - 1)

    def below(self, symbol: int) -> int:
        """Sum of the counts of the symbols before ``symbol``."""
        total, i = 0, symbol
        while i:
            total += self.tree[i]
            i -= i & -i
        return total

    def add(self, symbol: int) -> None:
        i = symbol + 1
        while i <= self.size:
            self.tree[i] += 1
            i += i & -i
        self.total += 1

    def find(self, target: int) -> int:
        """The symbol whose count interval holds ``target`` (0 <= target < total)."""
        pos, step = 0, self.step
        while step:
            if pos + step <= self.size and self.tree[pos + step] <= target:
                pos += step
                target -= self.tree[pos]
            step >>= 1
        return pos


def arith_encode(symbols: Sequence[int] | np.ndarray, alphabet: int) -> frozenbitarray:
    """The coded bits of ``symbols`` (each < ``alphabet``), MSB-first."""
    counts = _Counts(alphabet)
    out = bitarray(endian="big")
    low, high, pending = 0, _TOP, 0
    for symbol in (int(s) for s in symbols):
        span = high - low + 1
        below = counts.below(symbol)
        high = low + span * counts.below(symbol + 1) // counts.total - 1
        low = low + span * below // counts.total
        while True:
            if high < _HALF:
                out.append(0)
                out.extend([1] * pending)
                pending = 0
            elif low >= _HALF:
                out.append(1)
                out.extend([0] * pending)
                pending = 0
                low -= _HALF
                high -= _HALF
            elif low >= _QUARTER and high < _HALF + _QUARTER:
                pending += 1
                low -= _QUARTER
                high -= _QUARTER
            else:
                break
            low, high = 2 * low, 2 * high + 1
        counts.add(symbol)
    pending += 1
    out.append(0 if low < _QUARTER else 1)
    out.extend([1 if low < _QUARTER else 0] * pending)
    return frozenbitarray(out)


def arith_decode(bits: frozenbitarray, count: int, alphabet: int) -> np.ndarray:
    """Decode ``count`` symbols; CorruptStream unless re-encoding them gives exactly ``bits``."""
    counts = _Counts(alphabet)
    value = _read(bits, 0, 32)
    position = 32
    low, high = 0, _TOP
    out = np.empty(count, dtype=np.int64)
    for k in range(count):
        span = high - low + 1
        target = ((value - low + 1) * counts.total - 1) // span
        if not 0 <= target < counts.total:
            raise CorruptStream("arithmetic-coded stream leaves the coder's interval")
        symbol = counts.find(target)
        below = counts.below(symbol)
        high = low + span * counts.below(symbol + 1) // counts.total - 1
        low = low + span * below // counts.total
        while True:
            if high < _HALF:
                pass
            elif low >= _HALF:
                low, high, value = low - _HALF, high - _HALF, value - _HALF
            elif low >= _QUARTER and high < _HALF + _QUARTER:
                low, high, value = low - _QUARTER, high - _QUARTER, value - _QUARTER
            else:
                break
            low, high = 2 * low, 2 * high + 1
            value = 2 * value + _read(bits, position, 1)
            position += 1
        counts.add(symbol)
        out[k] = symbol
    if arith_encode(out, alphabet) != bits:
        raise CorruptStream("arithmetic-coded stream is not the encoding of the symbols it holds")
    return out


def _read(bits: frozenbitarray, start: int, width: int) -> int:
    """``width`` bits from ``start`` as an integer, bits past the end read as 0."""
    value = 0
    for i in range(start, start + width):
        value = 2 * value + (bits[i] if i < len(bits) else 0)
    return value
