"""Corruption suite (a sample): seeded mutations of real encoded files decode or raise FormatError.

The mutators live in ``benchmarks/mutations.py``, their base files in ``mutation_bases.py``; this
suite runs a few hundred of their files (every mutator, zero-dimension shapes and header bombs
included) in seconds, and
``benchmarks/bench_mutations.py`` runs 10,000 (BENCHMARKS.md records the result).
"""

from __future__ import annotations

import collections
import math
import time
import tracemalloc

import numpy as np
import pytest

from benchmarks.bench_mutations import main as bench_main
from benchmarks.mutation_bases import BASE_FILES, build, dump, split, version
from benchmarks.mutations import MUTATORS, SEED, UNITS, outcome, reported_bomb
from deepcompression.format.container import (
    CorruptStream,
    HeaderTooLarge,
    InvalidCode,
    InvalidValue,
    MalformedHeader,
    read_info,
)

CASES_PER_MUTATOR = 24


@pytest.mark.parametrize("mutator", sorted(MUTATORS))
def test_mutations_decode_or_raise_format_error(mutator: str) -> None:
    rng = np.random.default_rng([SEED, sorted(MUTATORS).index(mutator)])
    outcomes: collections.Counter[str] = collections.Counter()
    for case in range(CASES_PER_MUTATOR):
        base = BASE_FILES[case % len(BASE_FILES)]
        mutated = MUTATORS[mutator](base, rng)
        try:
            outcomes[outcome(mutated)] += 1
        except Exception as err:  # anything but FormatError (or a bad tensor) is a bug
            raise AssertionError(
                f"{mutator} case {case}: {type(err).__name__}: {err}; input {mutated[:80].hex()}"
            ) from err
    assert sum(outcomes.values()) == CASES_PER_MUTATOR
    if mutator == "code_table":
        assert outcomes[InvalidCode.__name__] > CASES_PER_MUTATOR // 4, outcomes
    if mutator in ("stream", "payload_bits_with_crc", "units_masks"):
        assert outcomes[CorruptStream.__name__] > 0, outcomes
    if mutator in ("raw_dtype", "bool_bytes"):
        assert outcomes["decoded"] > 0, outcomes
    if mutator == "bool_bytes":
        assert outcomes[InvalidValue.__name__] > 0, outcomes
    if mutator in ("raw_dtype", "shape"):
        assert outcomes[MalformedHeader.__name__] > 0, outcomes


def _declare_counts(data: bytes, rng: np.random.Generator) -> bytes:
    """Re-declare one Huffman tensor as up to 2**22 elements with large nnz / symbol counts.

    Counts stay within the header's bounds, so only the stream decoder stands between such a
    file and an allocation sized by the header.
    """
    header, payload = split(data)
    layers = [t for t in header["tensors"] if t["kind"] == "huffman"]
    layer = layers[rng.integers(len(layers))]
    numel = int(rng.choice([1 << 16, 1 << 20, 1 << 22]))
    rows, cols = layer["shape"][:2]
    layer["shape"] = [numel]
    if "units" in layer:  # keep the masks' dimensions; the index runs over the kept units only
        inner = max(1, numel // (rows * cols))
        layer["shape"] = [rows, cols, inner]
        numel = layer["units"]["kept_rows"] * layer["units"]["kept_cols"] * inner
    filler = (1 << layer["index_bits"]) - 1
    nnz = int(rng.choice([layer["nnz"], numel, numel // 2, numel // 3, rng.integers(numel + 1)]))
    layer["nnz"] = layer["weight"]["symbols"] = nnz
    most = nnz + numel // filler if nnz else 0
    choices = [nnz, most, layer["index"]["symbols"], numel]
    layer["index"]["symbols"] = int(np.clip(rng.choice(choices), nnz, most))
    return build(dump(header), payload, bool(rng.integers(2)), version(data))


def _compacted_bytes(data: bytes) -> int:
    """float32 bytes of the compacted sub-tensors, which the reader holds while it decodes."""
    layers = [layer for layer in read_info(data).layers if layer.units is not None]
    return sum(4 * math.prod(layer.units) * math.prod(layer.shape[2:]) for layer in layers)


def test_declared_counts_allocate_only_what_the_file_or_its_output_backs() -> None:
    rng = np.random.default_rng([SEED, len(MUTATORS)])
    outcomes: collections.Counter[str] = collections.Counter()
    tracemalloc.start()
    try:
        for case in range(300):
            mutated = _declare_counts(BASE_FILES[case % len(BASE_FILES)], rng)
            output = read_info(mutated).dense_bytes + _compacted_bytes(mutated)
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            outcomes[outcome(mutated)] += 1
            peak = tracemalloc.get_traced_memory()[1] - base
            assert peak <= output + 256 * len(mutated) + 2**20, (case, peak, output)
    finally:
        tracemalloc.stop()
    assert outcomes["decoded"] > 0 and outcomes[CorruptStream.__name__] > 100, outcomes


def test_zero_dimension_shapes_and_header_bombs_are_in_the_sample() -> None:
    rng = np.random.default_rng([SEED, 97])
    empty = collections.Counter(
        outcome(MUTATORS["zero_dims"](base, rng)) for base in BASE_FILES * 3
    )
    assert empty["decoded"] > 0 and empty[MalformedHeader.__name__] > 0, empty
    bombs = collections.Counter(
        outcome(MUTATORS["header_bomb"](base, rng)) for base in BASE_FILES * 3
    )
    assert bombs["decoded"] > 0 and bombs[MalformedHeader.__name__] > 0, bombs


def test_the_reported_header_bomb_is_refused_before_inflating() -> None:
    data = reported_bomb()
    assert len(data) < 30_000
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(HeaderTooLarge, match="more than 64 times"):
            read_info(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 0.5 and peak < 2**20


def test_the_benchmark_runs_every_mutator(capsys: pytest.CaptureFixture) -> None:
    assert bench_main(["--files", str(2 * len(MUTATORS)), "--check"]) == 0
    out = capsys.readouterr().out
    assert "uncaught errors and hangs: 0" in out and "zero_dims" in out and "header_bomb" in out
    for data in BASE_FILES:
        assert outcome(data) == "decoded"
    units = [layer.units for layer in read_info(BASE_FILES[UNITS]).layers]
    assert units[:3] == [(30, 30), (12, 50), (8, 8)], units
