"""Canonical Huffman coding: round trips, optimality, canonical form and validation of tables."""

from __future__ import annotations

import heapq

import numpy as np
import pytest
from bitarray import bitarray, frozenbitarray
from bitarray.util import canonical_huffman
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcompression.format.huffman import (
    MAX_CODE_LENGTH,
    CorruptStream,
    HuffmanStream,
    InvalidArgument,
    InvalidCode,
    _limited_code_lengths,
    decode_symbols,
    decode_table,
    encode_symbols,
    encode_table,
    table_widths,
    validate_code,
    zero_bit_symbol,
)


def optimal_huffman_bits(counts: np.ndarray) -> int:
    """Total coded length of an optimal prefix code: the sum of all merged weights (heapq)."""
    heap = [int(c) for c in counts if c > 0]
    heapq.heapify(heap)
    total = 0
    while len(heap) > 1:
        merged = heapq.heappop(heap) + heapq.heappop(heap)
        total += merged
        heapq.heappush(heap, merged)
    return total


def reference_codes(count: tuple[int, ...], symbols: tuple[int, ...]) -> dict[int, bitarray]:
    """Canonical codes assigned one by one, as textbook pseudo-code does."""
    codes: dict[int, bitarray] = {}
    code, position = 0, 0
    for length in range(1, len(count)):
        for _ in range(count[length]):
            codes[symbols[position]] = bitarray(format(code, f"0{length}b"), endian="big")
            code += 1
            position += 1
        code <<= 1
    return codes


symbol_arrays = st.lists(st.integers(0, 40), min_size=0, max_size=300).map(
    lambda xs: np.array(xs, dtype=np.int64)
)


@settings(max_examples=150, deadline=None)
@given(symbols=symbol_arrays)
def test_round_trip_and_optimal_length(symbols: np.ndarray) -> None:
    stream = encode_symbols(symbols)
    validate_code(stream.count, stream.symbols, 41)
    assert stream.n_symbols == symbols.size
    assert stream.n_bits == optimal_huffman_bits(np.bincount(symbols, minlength=1))
    np.testing.assert_array_equal(decode_symbols(stream, 41), symbols)


@settings(max_examples=60, deadline=None)
@given(symbols=symbol_arrays.filter(lambda a: np.unique(a).size >= 2))
def test_bits_equal_bitarray_encoding_with_reference_canonical_codes(symbols: np.ndarray) -> None:
    stream = encode_symbols(symbols)
    expected = bitarray(endian="big")
    expected.encode(reference_codes(stream.count, stream.symbols), symbols.tolist())
    assert stream.bits == expected


def test_canonical_order_is_by_length_then_symbol() -> None:
    rng = np.random.default_rng(3)
    stream = encode_symbols(np.minimum(rng.geometric(0.25, 5000) - 1, 30))
    lengths = np.repeat(np.arange(len(stream.count)), stream.count)
    keys = list(zip(lengths.tolist(), stream.symbols, strict=True))
    assert keys == sorted(keys)


def test_known_small_code() -> None:
    stream = encode_symbols(np.array([0, 3, 1, 0]))
    assert stream.count == (0, 1, 2)
    assert stream.symbols == (0, 1, 3)
    assert stream.bits == bitarray("011100")
    assert stream.stream_bytes() == b"\x70"


def test_empty_stream() -> None:
    stream = encode_symbols(np.array([], dtype=np.int64))
    assert (stream.count, stream.symbols, stream.n_bits, stream.n_symbols) == ((), (), 0, 0)
    assert decode_symbols(stream, 4).size == 0


def test_single_distinct_symbol_costs_zero_bits() -> None:
    stream = encode_symbols(np.full(1000, 7))
    assert stream.count == (1,)
    assert stream.symbols == (7,)
    assert stream.n_bits == 0
    np.testing.assert_array_equal(decode_symbols(stream, 8), np.full(1000, 7))


def test_large_alphabet_round_trip() -> None:
    rng = np.random.default_rng(0)
    symbols = rng.integers(0, 1 << 16, 20_000)
    stream = encode_symbols(symbols)
    np.testing.assert_array_equal(decode_symbols(stream, 1 << 16), symbols)


def test_length_limit_on_fibonacci_frequencies() -> None:
    fib = [1, 1]
    while len(fib) < 45:
        fib.append(fib[-1] + fib[-2])
    freq = np.array(fib, dtype=np.int64)
    _, unlimited, _ = canonical_huffman(dict(enumerate(fib)))
    assert len(unlimited) - 1 > MAX_CODE_LENGTH
    lengths = _limited_code_lengths(freq, np.arange(freq.size))
    assert lengths.max() <= MAX_CODE_LENGTH
    assert sum(2.0 ** -int(length) for length in lengths) == 1.0


@pytest.mark.parametrize(
    ("count", "symbols", "message"),
    [
        ((0, 3), (0, 1, 2), "over-subscribed"),
        ((0, 1, 1, 1), (0, 1, 2), "Kraft"),
        ((0, 1, 1), (0, 1), "incomplete"),
        ((0, 2), (1, 1), "more than once"),
        ((0, 2), (0, 9), "outside the alphabet"),
        ((0, 2, 0), (0, 1), "last entry is 0"),
        ((0,), (), "last entry is 0"),
        ((2,), (0, 1), "zero-length"),
        ((1, 1), (0, 1), "zero-length"),
        ((0, 2), (0,), "has 1 symbols"),
        ((), (3,), "empty count table"),
        ((0, -1, 4), (0, 1, 2), "negative"),
        ((0,) * 32 + (1,), (0,), "exceeds the maximum"),
    ],
)
def test_validate_code_rejects(count: tuple, symbols: tuple, message: str) -> None:
    with pytest.raises(InvalidCode, match=message):
        validate_code(count, symbols, 4)


def test_validate_code_accepts_complete_codes() -> None:
    validate_code((), (), 4)
    validate_code((1,), (3,), 4)
    validate_code((0, 2), (1, 0), 2)
    validate_code((0, 1, 1, 2), (2, 0, 1, 3), 4)


def _stream(count: tuple, symbols: tuple, bits: str, n: int) -> HuffmanStream:
    return HuffmanStream(count, symbols, frozenbitarray(bits, endian="big"), n)


@pytest.mark.parametrize(
    ("bits", "n"),
    [
        ("0111", 3),  # ends inside the code word "1?"
        ("011100", 3),  # one symbol more than declared
        ("011100", 5),  # fewer symbols than declared
        ("0", 0),  # bits but no symbols
        ("01110", 40),  # more symbols than bits could hold
    ],
)
def test_decode_rejects_inconsistent_streams(bits: str, n: int) -> None:
    with pytest.raises(CorruptStream):
        decode_symbols(_stream((0, 1, 2), (0, 1, 3), bits, n), 4)


def test_decode_rejects_bits_for_zero_bit_and_empty_codes() -> None:
    with pytest.raises(CorruptStream, match="zero-bit"):
        decode_symbols(_stream((1,), (2,), "0", 1), 4)
    with pytest.raises(CorruptStream, match="no code table"):
        decode_symbols(_stream((), (), "", 3), 4)


def test_zero_bit_symbol_reads_a_declared_count_without_decoding_it() -> None:
    huge = _stream((1,), (5,), "", 1 << 40)  # decode_symbols would need 8 TiB for this count
    assert zero_bit_symbol(huge, 6) == 5
    assert zero_bit_symbol(encode_symbols(np.full(9, 3)), 4) == 3
    assert zero_bit_symbol(encode_symbols(np.array([0, 1, 1])), 2) is None
    assert zero_bit_symbol(encode_symbols(np.array([], dtype=np.int64)), 2) is None
    with pytest.raises(CorruptStream, match="zero-bit"):
        zero_bit_symbol(_stream((1,), (2,), "0", 1 << 40), 4)
    with pytest.raises(InvalidCode, match="outside the alphabet"):
        zero_bit_symbol(_stream((1,), (5,), "", 1 << 40), 5)


def test_decode_validates_the_table_first() -> None:
    with pytest.raises(InvalidCode):
        decode_symbols(_stream((0, 3), (0, 1, 2), "0101", 4), 4)
    with pytest.raises(InvalidCode, match="outside"):
        decode_symbols(_stream((0, 2), (0, 5), "01", 2), 4)


@pytest.mark.parametrize("symbol_bits", [1, 5, 7, 8, 9, 15, 16])
def test_table_round_trip_and_size(symbol_bits: int) -> None:
    rng = np.random.default_rng(symbol_bits)
    symbols = rng.integers(0, 1 << symbol_bits, 3000)
    stream = encode_symbols(symbols)
    table = encode_table(stream.count, stream.symbols, symbol_bits)
    count_width, symbol_width = table_widths(symbol_bits)
    max_len = len(stream.count) - 1
    assert len(table) == 1 + count_width * max_len + symbol_width * len(stream.symbols)
    assert table[0] == max_len
    assert decode_table(table, symbol_bits) == (stream.count, stream.symbols)


def test_table_encoding_of_special_codes() -> None:
    assert encode_table((), (), 4) == b""
    assert decode_table(b"", 4) == ((), ())
    assert encode_table((1,), (9,), 4) == b"\x00\x09"
    assert encode_table((1,), (300,), 9) == b"\x00\x2c\x01"
    assert decode_table(b"\x00\x2c\x01", 9) == ((1,), (300,))
    assert encode_table((0, 1, 2), (0, 1, 3), 2) == bytes([2, 1, 2, 0, 1, 3])


def test_table_widths_cover_the_largest_count() -> None:
    for bits in range(1, 17):
        count_width, symbol_width = table_widths(bits)
        assert 1 << bits < 1 << (8 * count_width)
        assert (1 << bits) - 1 < 1 << (8 * symbol_width)


@pytest.mark.parametrize(
    "data",
    [b"\x20", b"\x02\x01", b"\x02\x01\x02\x00\x01", b"\x02\x01\x02\x00\x01\x03\x04", b"\x00"],
)
def test_decode_table_rejects_malformed_bytes(data: bytes) -> None:
    with pytest.raises(InvalidCode):
        decode_table(data, 2)


@pytest.mark.parametrize(
    "bad", [np.array([-1, 2]), np.array([1 << 16]), np.array([0.5, 1.0]), np.zeros((2, 2), int)]
)
def test_encode_rejects_invalid_symbols(bad: np.ndarray) -> None:
    with pytest.raises(InvalidArgument):
        encode_symbols(bad)


def test_table_widths_reject_bad_bits() -> None:
    for bits in (0, 17):
        with pytest.raises(InvalidArgument):
            table_widths(bits)
