"""The header's tensor records as the reader parsed them: spans, streams, units, raw and Huffman.

A record holds only checked header values; ``spans`` lists its sections in file order and
``info`` turns it into the public ``LayerInfo``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from deepcompression.format.info import InputMeta, LayerInfo
from deepcompression.format.spec import DTYPES, FLOAT_BYTES, HALF_BYTES, KIND_HUFFMAN, KIND_RAW


@dataclass(frozen=True)
class Span:
    """An [offset, length] section of the payload."""

    offset: int
    length: int

    def to_json(self) -> list[int]:
        """The span as the header writes it."""
        return [self.offset, self.length]


@dataclass(frozen=True)
class StreamRecord:
    """A stream object: its code table and coded bits' spans, bit count and symbol count."""

    table: Span
    stream: Span
    bits: int
    symbols: int
    arith: bool = False
    """Version 4: adaptive arithmetic-coded (no table) instead of Huffman-coded."""


@dataclass(frozen=True)
class KeptRows:
    """A version-4 raw tensor stored over an earlier tensor's kept rows: that tensor's position,
    its rows mask and how many rows it keeps (the raw tensor stores one item per kept row)."""

    tensor: int
    mask: Span
    kept: int


@dataclass(frozen=True)
class RawRecord:
    """A raw tensor: shape, dtype and the span of its items (of its kept rows only when
    ``rows`` is set; the others decode to zero bytes)."""

    name: str
    shape: tuple[int, ...]
    numel: int
    data: Span
    dtype: str
    rows: KeptRows | None = None

    @property
    def decoded_bytes(self) -> int:
        return self.numel * DTYPES[self.dtype][1]

    def spans(self) -> list[tuple[str, Span]]:
        return [("data", self.data)]

    def info(self) -> LayerInfo:
        return LayerInfo(
            name=self.name,
            kind=KIND_RAW,
            shape=self.shape,
            numel=self.numel,
            nnz=self.numel,
            weight_bits=8 * DTYPES[self.dtype][1],
            index_bits=0,
            codebook_size=0,
            index_symbols=0,
            index_stream_bits=0,
            weight_stream_bits=0,
            codebook_bytes=0,
            index_table_bytes=0,
            weight_table_bytes=0,
            index_stream_bytes=0,
            weight_stream_bytes=0,
            raw_bytes=self.data.length,
            dtype=self.dtype,
            kept_rows=None if self.rows is None else self.rows.kept,
        )


@dataclass(frozen=True)
class ColumnsOf:
    """Version 8: an earlier tensor with removed units whose kept rows, each a block of
    ``block`` consecutive columns, are the candidate columns of a columns mask."""

    tensor: int
    mask: Span
    rows: int
    kept: int
    block: int

    @property
    def candidates(self) -> int:
        return self.kept * self.block


@dataclass(frozen=True)
class UnitsRecord:
    """The removed-units object: the two bit-mask spans and their kept counts (version 8: the
    columns mask over an earlier tensor's kept rows, ``columns``)."""

    rows: Span
    cols: Span
    kept_rows: int
    kept_cols: int
    columns: ColumnsOf | None = None


@dataclass(frozen=True)
class HuffmanRecord:
    """A Huffman-coded tensor: codebook, optional units, index and weight streams."""

    name: str
    shape: tuple[int, ...]
    numel: int
    nnz: int
    weight_bits: int
    index_bits: int
    codebook: Span
    index: StreamRecord
    weight: StreamRecord
    units: UnitsRecord | None = None
    half_codebook: bool = False
    """Version 6: the codebook's items are float16 (2 bytes each), else float32."""
    rows: KeptRows | None = None
    """Version 7: one weight per kept row of an earlier tensor (no index stream); the other
    rows decode to +0.0."""

    @property
    def decoded_bytes(self) -> int:
        return self.numel * FLOAT_BYTES

    @property
    def codebook_size(self) -> int:
        """k, the codebook's entries."""
        return self.codebook.length // (HALF_BYTES if self.half_codebook else FLOAT_BYTES)

    @property
    def arith_symbols(self) -> int:
        """Symbols of this tensor's arithmetic-coded streams."""
        return sum(s.symbols for s in (self.index, self.weight) if s.arith)

    @property
    def stored_numel(self) -> int:
        """Elements the index stream runs over: the compacted sub-tensor's if units are removed."""
        return stored_numel(self.shape, self.units)

    def spans(self) -> list[tuple[str, Span]]:
        units = [] if self.units is None else [
            ("units rows", self.units.rows), ("units cols", self.units.cols)
        ]  # fmt: skip
        return [
            ("codebook", self.codebook),
            *units,
            ("index table", self.index.table),
            ("weight table", self.weight.table),
            ("index stream", self.index.stream),
            ("weight stream", self.weight.stream),
        ]

    def info(self) -> LayerInfo:
        return LayerInfo(
            name=self.name,
            kind=KIND_HUFFMAN,
            shape=self.shape,
            numel=self.numel,
            nnz=self.nnz,
            weight_bits=self.weight_bits,
            index_bits=self.index_bits,
            codebook_size=self.codebook_size,
            index_symbols=self.index.symbols,
            index_stream_bits=self.index.bits,
            weight_stream_bits=self.weight.bits,
            codebook_bytes=self.codebook.length,
            index_table_bytes=self.index.table.length,
            weight_table_bytes=self.weight.table.length,
            index_stream_bytes=self.index.stream.length,
            weight_stream_bytes=self.weight.stream.length,
            raw_bytes=0,
            units_bytes=0
            if self.units is None
            else self.units.rows.length + self.units.cols.length,
            kept_rows=self.rows.kept if self.rows else None if self.units is None
            else self.units.kept_rows,
            kept_cols=None if self.units is None else self.units.kept_cols,
            index_coder="arith" if self.index.arith else "huffman",
            weight_coder="arith" if self.weight.arith else "huffman",
        )


Record = RawRecord | HuffmanRecord


def stored_numel(shape: tuple[int, ...], units: UnitsRecord | None) -> int:
    """numel, or kept rows x kept columns x the remaining dimensions when units are removed."""
    if units is None:
        return math.prod(shape)
    return units.kept_rows * units.kept_cols * math.prod(shape[2:])


@dataclass(frozen=True)
class ParsedFile:
    """A file that passed checks 1-11: preamble fields, the payload and the parsed header."""

    version: int
    flags: int
    header_bytes: int
    header_json_bytes: int
    payload: memoryview
    arch: dict
    provenance: dict
    records: list[Record]
    input: InputMeta | None = None
