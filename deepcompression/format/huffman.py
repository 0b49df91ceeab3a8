"""Canonical Huffman coding of integer symbol streams (stage 3 of Deep Compression).

Code lengths come from ``bitarray.util.canonical_huffman``; a code is stored as (count per length,
symbols in canonical order), packed into bits with numpy and decoded with bitarray's C-backed
``canonical_decode``. Bits are MSB-first within each byte (bitarray "big" endianness).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from bitarray import bitarray, frozenbitarray
from bitarray.util import canonical_decode, canonical_huffman

from deepcompression.format.errors import CorruptStream, FormatError, InvalidArgument, InvalidCode

__all__ = [
    "MAX_CODE_LENGTH",
    "MAX_SYMBOL_BITS",
    "MAX_ALPHABET_SIZE",
    "FormatError",
    "InvalidCode",
    "CorruptStream",
    "InvalidArgument",
    "HuffmanStream",
    "encode_symbols",
    "decode_symbols",
    "zero_bit_symbol",
    "validate_code",
    "encode_table",
    "decode_table",
    "table_widths",
]

MAX_CODE_LENGTH = 31
"""Longest code length; ``canonical_decode`` accepts at most 32 entries in ``count``."""
MAX_SYMBOL_BITS = 16
MAX_ALPHABET_SIZE = 1 << MAX_SYMBOL_BITS


@dataclass(frozen=True)
class HuffmanStream:
    """One Huffman-coded stream: canonical code table, the coded bits and the symbol count.

    ``count[l]`` is the number of symbols whose code has length ``l``; ``count == (1,)`` is the
    zero-bit code of a stream with a single distinct symbol and ``count == ()`` an empty stream.
    """

    count: tuple[int, ...]
    symbols: tuple[int, ...]
    bits: frozenbitarray
    n_symbols: int

    @property
    def n_bits(self) -> int:
        """Number of coded bits (without byte padding)."""
        return len(self.bits)

    def stream_bytes(self) -> bytes:
        """The coded bits packed MSB-first into bytes, the last byte zero-padded."""
        return self.bits.tobytes()


_EMPTY_BITS = frozenbitarray(endian="big")


def encode_symbols(symbols: np.ndarray) -> HuffmanStream:
    """Huffman-code a 1-D array of integer symbols in ``[0, 2**16)`` with a canonical code."""
    arr = _as_symbol_array(symbols)
    if arr.size == 0:
        return HuffmanStream((), (), _EMPTY_BITS, 0)
    freq = np.bincount(arr)
    present = np.flatnonzero(freq)
    if present.size == 1:
        return HuffmanStream((1,), (int(present[0]),), _EMPTY_BITS, int(arr.size))
    lengths = _limited_code_lengths(freq, present)
    count, ordered = _canonical_table(present, lengths)
    code_values, code_lengths = _canonical_codes(count, ordered, freq.size)
    bits = _pack_codes(arr, code_values, code_lengths)
    return HuffmanStream(count, ordered, bits, int(arr.size))


def decode_symbols(stream: HuffmanStream, alphabet_size: int) -> np.ndarray:
    """Decode exactly ``stream.n_symbols`` int64 symbols, validating the code and bit length.

    A zero-bit code yields ``n_symbols`` copies from an empty stream, so callers with an untrusted
    count check ``zero_bit_symbol`` first; other codes allocate only once ``n_symbols <= n_bits``.
    """
    validate_code(stream.count, stream.symbols, alphabet_size)
    n = _non_negative(stream.n_symbols, "n_symbols")
    n_bits = len(stream.bits)
    if not stream.count:
        if n or n_bits:
            raise CorruptStream(
                f"stream declares {n} symbols in {n_bits} bits but has no code table; "
                "a stream without a table must be empty"
            )
        return np.empty(0, dtype=np.int64)
    repeated = zero_bit_symbol(stream, alphabet_size)
    if repeated is not None:
        return np.full(n, repeated, dtype=np.int64)
    lengths = [length for length, c in enumerate(stream.count) if c]
    if not lengths[0] * n <= n_bits <= lengths[-1] * n:
        raise CorruptStream(
            f"{n} symbols with code lengths {lengths[0]}..{lengths[-1]} cannot take {n_bits} bits"
        )
    decoder = canonical_decode(stream.bits, list(stream.count), list(stream.symbols))
    try:
        out = np.fromiter(decoder, dtype=np.int64, count=n)
        leftover = next(decoder, None)
    except ValueError as err:
        raise CorruptStream(f"stream ends inside a code word after fewer than {n} symbols") from err
    if leftover is not None:
        raise CorruptStream(f"stream holds more than the declared {n} symbols")
    return out


def zero_bit_symbol(stream: HuffmanStream, alphabet_size: int) -> int | None:
    """The one symbol of a single-symbol (zero-bit) stream, or None if the code is any other.

    Lets a decoder of untrusted data treat ``n_symbols`` copies without materialising them.
    Validates the zero-bit code and raises CorruptStream if the stream carries any bits.
    """
    if tuple(stream.count) != (1,):
        return None
    validate_code(stream.count, stream.symbols, alphabet_size)
    if stream.n_bits:
        raise CorruptStream(
            f"single-symbol (zero-bit) code but the stream has {stream.n_bits} bits; expected 0"
        )
    return stream.symbols[0]


def validate_code(count: Sequence[int], symbols: Sequence[int], alphabet_size: int) -> None:
    """Check that (count, symbols) is a complete prefix code over ``range(alphabet_size)``.

    Raises InvalidCode; run before handing untrusted tables to bitarray.
    """
    size = _non_negative(alphabet_size, "alphabet_size")
    if size > MAX_ALPHABET_SIZE:
        raise InvalidArgument(f"alphabet_size {size} exceeds the maximum {MAX_ALPHABET_SIZE}")
    counts = _int_tuple(count, "count")
    syms = _int_tuple(symbols, "symbols")
    if not counts:
        if syms:
            raise InvalidCode(f"empty count table but {len(syms)} symbols")
        return
    max_len = len(counts) - 1
    if max_len > MAX_CODE_LENGTH:
        raise InvalidCode(f"code length {max_len} exceeds the maximum {MAX_CODE_LENGTH}")
    if any(c < 0 for c in counts):
        raise InvalidCode(f"negative entry in count table {list(counts)}")
    if counts[-1] == 0:
        raise InvalidCode("count table must end at the longest used code length (last entry is 0)")
    if counts[0] and counts != (1,):
        raise InvalidCode("zero-length codes are only allowed as the single-symbol code (1,)")
    if sum(counts) != len(syms):
        raise InvalidCode(f"count table lists {sum(counts)} codes but has {len(syms)} symbols")
    kraft = sum(c << (max_len - length) for length, c in enumerate(counts))
    if kraft != 1 << max_len:
        kind = "over-subscribed (not a prefix code)" if kraft > 1 << max_len else "incomplete"
        raise InvalidCode(f"code lengths are {kind}: Kraft sum {kraft}/{1 << max_len} != 1")
    bad = [s for s in syms if not 0 <= s < size]
    if bad:
        raise InvalidCode(f"symbol {bad[0]} outside the alphabet [0, {size})")
    if len(set(syms)) != len(syms):
        raise InvalidCode("a symbol appears more than once in the code table")


def table_widths(symbol_bits: int) -> tuple[int, int]:
    """Bytes per count entry and per symbol in a serialized table of ``symbol_bits``-bit symbols."""
    bits = _non_negative(symbol_bits, "symbol_bits")
    if not 1 <= bits <= MAX_SYMBOL_BITS:
        raise InvalidArgument(f"symbol_bits must be in 1..{MAX_SYMBOL_BITS}, got {bits}")
    count_width = 1 if bits <= 7 else 2 if bits <= 15 else 4
    symbol_width = 1 if bits <= 8 else 2
    return count_width, symbol_width


def encode_table(count: Sequence[int], symbols: Sequence[int], symbol_bits: int) -> bytes:
    """Serialize a code table: u8 max length L, L little-endian counts, then the symbols.

    An empty code is zero bytes; the single-symbol code ``(1,)`` is ``L = 0`` plus its symbol.
    """
    validate_code(count, symbols, 1 << symbol_bits)
    count_width, symbol_width = table_widths(symbol_bits)
    if not count:
        return b""
    max_len = len(count) - 1
    body = np.asarray(count[1:], dtype=f"<u{count_width}").tobytes()
    return bytes([max_len]) + body + np.asarray(symbols, dtype=f"<u{symbol_width}").tobytes()


def decode_table(data: bytes, symbol_bits: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Parse a serialized code table into (count, symbols); raises InvalidCode if malformed.

    Only the structure is checked here; call ``validate_code`` for the prefix-code property.
    """
    count_width, symbol_width = table_widths(symbol_bits)
    if not data:
        return (), ()
    max_len = data[0]
    if max_len > MAX_CODE_LENGTH:
        raise InvalidCode(f"table declares code length {max_len} > {MAX_CODE_LENGTH}")
    if max_len == 0:
        if len(data) != 1 + symbol_width:
            raise InvalidCode(
                f"single-symbol table must be {1 + symbol_width} bytes, got {len(data)}"
            )
        return (1,), (int.from_bytes(data[1:], "little"),)
    counts_end = 1 + count_width * max_len
    if len(data) < counts_end:
        raise InvalidCode(f"table of {len(data)} bytes is too short for {max_len} counts")
    counts = np.frombuffer(data, dtype=f"<u{count_width}", count=max_len, offset=1)
    n = int(counts.sum(dtype=np.int64))
    if len(data) != counts_end + symbol_width * n:
        raise InvalidCode(
            f"table length {len(data)} does not match {max_len} counts and {n} symbols "
            f"(expected {counts_end + symbol_width * n} bytes)"
        )
    syms = np.frombuffer(data, dtype=f"<u{symbol_width}", count=n, offset=counts_end)
    return (0, *counts.tolist()), tuple(syms.tolist())


def _as_symbol_array(symbols: np.ndarray) -> np.ndarray:
    arr = np.asarray(symbols)
    if arr.ndim != 1 or not (np.issubdtype(arr.dtype, np.integer) or arr.size == 0):
        raise InvalidArgument(
            f"symbols must be a 1-D integer array, got shape {arr.shape} dtype {arr.dtype}"
        )
    arr = arr.astype(np.int64, copy=False)
    if arr.size and (arr.min() < 0 or arr.max() >= MAX_ALPHABET_SIZE):
        raise InvalidArgument(
            f"symbols must lie in [0, {MAX_ALPHABET_SIZE}), got range [{arr.min()}, {arr.max()}]"
        )
    return arr


def _limited_code_lengths(freq: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Huffman code lengths for the present symbols, flattened until none exceeds the limit."""
    weights = freq[present]
    while True:
        _, count, ordered = canonical_huffman(
            dict(zip(present.tolist(), weights.tolist(), strict=True))
        )
        if len(count) - 1 <= MAX_CODE_LENGTH:
            break
        weights = np.maximum(weights >> 1, 1)
    by_symbol = dict(zip(ordered, np.repeat(np.arange(len(count)), count).tolist(), strict=True))
    return np.array([by_symbol[s] for s in present.tolist()], dtype=np.int64)


def _canonical_table(
    present: np.ndarray, lengths: np.ndarray
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Counts per length and symbols sorted by (length, symbol value)."""
    order = np.lexsort((present, lengths))
    count = np.bincount(lengths, minlength=int(lengths.max()) + 1)
    return tuple(count.tolist()), tuple(present[order].tolist())


def _canonical_codes(
    count: tuple[int, ...], ordered: tuple[int, ...], size: int
) -> tuple[np.ndarray, np.ndarray]:
    """Code value and length per symbol (indexed by symbol) for a canonical table."""
    values = np.zeros(size, dtype=np.uint64)
    lengths = np.zeros(size, dtype=np.uint64)
    code = 0
    index = 0
    for length in range(1, len(count)):
        n = count[length]
        block = np.asarray(ordered[index : index + n], dtype=np.int64)
        values[block] = code + np.arange(n, dtype=np.uint64)
        lengths[block] = length
        code = (code + n) << 1
        index += n
    return values, lengths


def _pack_codes(
    symbols: np.ndarray, code_values: np.ndarray, code_lengths: np.ndarray
) -> frozenbitarray:
    """Concatenate the codes of ``symbols`` MSB-first, vectorised via 32-bit word accumulation.

    Codes never overlap, so summing their shifted values per word equals OR-ing them; each word
    sum stays below 2**32 and is exact in float64, which lets ``np.bincount`` do the scatter.
    """
    lengths = code_lengths[symbols]
    values = code_values[symbols]
    ends = np.cumsum(lengths)
    total = int(ends[-1])
    starts = ends - lengths
    words = starts >> np.uint64(5)
    shifted = values << (np.uint64(64) - (starts & np.uint64(31)) - lengths)
    n_words = total // 32 + 2
    high = (shifted >> np.uint64(32)).astype(np.float64)
    low = (shifted & np.uint64(0xFFFFFFFF)).astype(np.float64)
    packed = np.bincount(words, weights=high, minlength=n_words)
    packed += np.bincount(words + np.uint64(1), weights=low, minlength=n_words)
    raw = packed.astype(np.uint32).astype(">u4").tobytes()[: (total + 7) // 8]
    bits = bitarray(endian="big")
    bits.frombytes(raw)
    del bits[total:]
    return frozenbitarray(bits)


def _int_tuple(values: Sequence[int], what: str) -> tuple[int, ...]:
    try:
        return tuple(operator.index(v) for v in values)
    except TypeError as err:
        raise InvalidCode(f"{what} must contain only integers") from err


def _non_negative(value: int, what: str) -> int:
    try:
        number = operator.index(value)
    except TypeError as err:
        raise InvalidArgument(f"{what} must be an integer, got {type(value).__name__}") from err
    if number < 0:
        raise InvalidArgument(f"{what} must be >= 0, got {number}")
    return number
