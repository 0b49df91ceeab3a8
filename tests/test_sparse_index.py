"""Relative indexing with FILLER symbols: reference encoder, round trips and corruption checks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcompression.format.huffman import CorruptStream, InvalidArgument
from deepcompression.format.sparse_index import decode_positions, encode_positions, filler_symbol


def reference_encode(mask: np.ndarray, index_bits: int) -> list[int]:
    """Symbol-by-symbol transcription of the format's rule, as a slow oracle."""
    filler = (1 << index_bits) - 1
    out: list[int] = []
    previous = -1
    for position in range(mask.size):
        if not mask[position]:
            continue
        gap = position - previous
        while gap > filler:
            out.append(filler)
            gap -= filler
        out.append(gap - 1)
        previous = position
    return out


masks = st.tuples(
    st.integers(0, 400), st.floats(0.0, 1.0), st.integers(0, 2**32 - 1), st.integers(1, 9)
).map(lambda t: (np.random.default_rng(t[2]).random(t[0]) < t[1] ** 3, t[3]))


@settings(max_examples=200, deadline=None)
@given(case=masks)
def test_matches_reference_and_round_trips(case: tuple[np.ndarray, int]) -> None:
    mask, index_bits = case
    symbols = encode_positions(mask, index_bits)
    assert symbols.dtype == np.int64
    assert symbols.tolist() == reference_encode(mask, index_bits)
    decoded = decode_positions(symbols, index_bits, mask.size)
    np.testing.assert_array_equal(decoded, np.flatnonzero(mask))


def test_gap_needing_several_fillers() -> None:
    mask = np.zeros(30, dtype=bool)
    mask[[0, 20]] = True
    # gap 20 with M = 3: six fillers advance 18, then symbol 1 advances 2 more.
    assert encode_positions(mask, 2).tolist() == [0, 3, 3, 3, 3, 3, 3, 1]


def test_leading_gap_uses_fillers_from_minus_one() -> None:
    mask = np.zeros(12, dtype=bool)
    mask[10] = True
    assert encode_positions(mask, 2).tolist() == [3, 3, 3, 1]


@pytest.mark.parametrize(("gap", "expected"), [(3, [2]), (4, [3, 0]), (6, [3, 2]), (7, [3, 3, 0])])
def test_gap_boundaries_around_the_filler(gap: int, expected: list[int]) -> None:
    mask = np.zeros(gap, dtype=bool)
    mask[gap - 1] = True
    assert encode_positions(mask, 2).tolist() == expected


def test_empty_and_dense_masks() -> None:
    assert encode_positions(np.zeros(50, dtype=bool), 5).size == 0
    assert decode_positions(np.array([], dtype=np.int64), 5, 50).size == 0
    assert encode_positions(np.ones(50, dtype=bool), 5).tolist() == [0] * 50


def test_one_bit_index_alternates_fillers() -> None:
    mask = np.array([False, False, True, False, True])
    symbols = encode_positions(mask, 1)
    assert symbols.tolist() == [1, 1, 0, 1, 0]
    np.testing.assert_array_equal(decode_positions(symbols, 1, 5), [2, 4])


def test_entry_count_formula() -> None:
    rng = np.random.default_rng(7)
    mask = rng.random(5000) < 0.01
    gaps = np.diff(np.flatnonzero(mask), prepend=-1)
    for index_bits in (2, 3, 5, 8):
        filler = filler_symbol(index_bits)
        expected = gaps.size + int(((gaps - 1) // filler).sum())
        assert encode_positions(mask, index_bits).size == expected


@pytest.mark.parametrize(
    ("symbols", "numel", "message"),
    [
        ([0, 4], 10, "outside 0..3"),
        ([-1], 10, "outside 0..3"),
        ([0, 3], 10, "ends with a FILLER"),
        ([3, 3, 3, 1], 10, "position 10"),
        ([0], 0, "position 0"),
    ],
)
def test_decode_rejects_corrupt_symbols(symbols: list[int], numel: int, message: str) -> None:
    with pytest.raises(CorruptStream, match=message):
        decode_positions(np.array(symbols), 2, numel)


@pytest.mark.parametrize("index_bits", [0, 17, True, 2.0])
def test_invalid_index_bits(index_bits: object) -> None:
    with pytest.raises(InvalidArgument):
        encode_positions(np.ones(3, dtype=bool), index_bits)  # type: ignore[arg-type]


def test_invalid_mask_arguments() -> None:
    with pytest.raises(InvalidArgument):
        encode_positions(np.ones(3, dtype=np.int64), 4)
    with pytest.raises(InvalidArgument):
        encode_positions(np.ones((2, 2), dtype=bool), 4)
    with pytest.raises(InvalidArgument):
        decode_positions(np.zeros((2, 2), dtype=np.int64), 4, 10)
    with pytest.raises(InvalidArgument):
        decode_positions(np.zeros(2, dtype=np.int64), 4, -1)
