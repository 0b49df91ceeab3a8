"""The compressed model file: Huffman-coded sparse quantized layers plus raw typed tensors.

``encode_model`` writes the format specified in docs/FORMAT.md (version 3; 1 and 2 on request),
choosing per layer, by exact file bytes, the relative-index width (when asked to) and whether to
store removed units; ``decode_model`` reads versions 1 to 3 back to a state_dict bitwise equal to
the encoder's input, and ``read_info`` reports sizes without decoding. Decoding treats the input
as untrusted: every length is checked against the file, and the decoded size against a caller's
limit, before use.
"""

from __future__ import annotations

import json
import math
import re
import struct
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np
import torch
from bitarray import bitarray, frozenbitarray

from deepcompression.format.huffman import (
    MAX_SYMBOL_BITS,
    CorruptStream,
    FormatError,
    HuffmanStream,
    InvalidArgument,
    InvalidCode,
    decode_symbols,
    decode_table,
    encode_symbols,
    encode_table,
    validate_code,
    zero_bit_symbol,
)
from deepcompression.format.sparse_index import (
    constant_positions,
    decode_positions,
    encode_positions,
    filler_symbol,
)

__all__ = [
    "MAGIC",
    "FORMAT_VERSION",
    "SUPPORTED_VERSIONS",
    "FLAG_HEADER_ZLIB",
    "PREAMBLE_SIZE",
    "MAX_HEADER_BYTES",
    "MAX_NDIM",
    "MAX_TOTAL_NUMEL",
    "MAX_JSON_DEPTH",
    "MAX_JSON_INT",
    "AUTO_INDEX_BITS",
    "DEFAULT_MAX_DECODED_BYTES",
    "RAW_DTYPES",
    "KIND_RAW",
    "KIND_HUFFMAN",
    "FormatError",
    "BadMagic",
    "UnsupportedVersion",
    "TruncatedFile",
    "HeaderTooLarge",
    "MalformedHeader",
    "ChecksumMismatch",
    "InvalidOffset",
    "InvalidValue",
    "DecodedTooLarge",
    "InvalidCode",
    "CorruptStream",
    "InvalidArgument",
    "QuantizedTensor",
    "LayerInfo",
    "FileInfo",
    "DecodedModel",
    "encode_model",
    "decode_model",
    "read_info",
]

MAGIC = b"\x89DCZ\r\n\x1a\n"
FORMAT_VERSION = 3
"""The version ``encode_model`` writes by default."""
SUPPORTED_VERSIONS = (1, 2, 3)
UNITS_VERSION = 3
"""The first version whose Huffman tensors may declare removed units."""
AUTO_INDEX_BITS = tuple(range(1, MAX_SYMBOL_BITS + 1))
"""Widths the writer tries for a layer whose ``index_bits`` is None (auto)."""
FLAG_HEADER_ZLIB = 0x0001
_PREAMBLE = struct.Struct("<8sHHIIII")
PREAMBLE_SIZE = _PREAMBLE.size
MAX_HEADER_BYTES = 16 * 1024 * 1024
"""Cap on both the stored and the decompressed header length."""
MAX_NDIM = 16
MAX_TOTAL_NUMEL = 1 << 28
"""Cap on every dimension, and on the summed element count of all tensors in one file."""
MAX_JSON_DEPTH = 64
"""Most arrays/objects open at once in the header JSON (the top-level object is depth 1)."""
MAX_JSON_INT = (1 << 53) - 1
"""Largest magnitude of a header integer literal (every such integer is exact in a double)."""
DEFAULT_MAX_DECODED_BYTES = 10**9
"""Default cap on the bytes ``decode_model`` allocates for decoded tensors: 1 GB holds VGG-16's
138M float32 parameters but refuses a file at the format's cap (2**28 float32 = 1 GiB)."""
KIND_RAW = "raw"
KIND_HUFFMAN = "huffman"
_FLOAT_BYTES = 4
_RAW_DTYPES: dict[str, tuple[torch.dtype, int]] = {
    "float32": (torch.float32, 4),
    "float16": (torch.float16, 2),
    "bfloat16": (torch.bfloat16, 2),
    "float64": (torch.float64, 8),
    "int8": (torch.int8, 1),
    "int16": (torch.int16, 2),
    "int32": (torch.int32, 4),
    "int64": (torch.int64, 8),
    "uint8": (torch.uint8, 1),
    "bool": (torch.bool, 1),
}
RAW_DTYPES = tuple(_RAW_DTYPES)
"""Names of the dtypes a version-2 raw tensor may have (the header's ``dtype`` values)."""
_DTYPE_NAMES = {dtype: name for name, (dtype, _) in _RAW_DTYPES.items()}
_BIT_VIEWS: dict[int, tuple[torch.dtype, str]] = {
    1: (torch.uint8, "<u1"),
    2: (torch.int16, "<i2"),
    4: (torch.int32, "<i4"),
    8: (torch.int64, "<i8"),
}
"""Integer dtype of each item size, used to move raw tensors' bits without reinterpretation."""
_T = TypeVar("_T")


class BadMagic(FormatError):
    """The data does not start with the compressed-model magic bytes."""


class UnsupportedVersion(FormatError):
    """The file uses a format version or flag this reader does not implement."""


class TruncatedFile(FormatError):
    """The file ends before a section it declares."""


class HeaderTooLarge(FormatError):
    """A declared header length exceeds MAX_HEADER_BYTES."""


class MalformedHeader(FormatError):
    """The header is not valid JSON or does not follow the schema."""


class ChecksumMismatch(FormatError):
    """A CRC32 stored in the preamble does not match the bytes it covers."""


class InvalidOffset(FormatError):
    """A section offset or length does not tile the payload as required."""


class InvalidValue(FormatError):
    """A raw tensor holds bytes its dtype does not allow (a bool byte other than 0 or 1)."""


class DecodedTooLarge(FormatError):
    """The tensors a file declares exceed the caller's ``max_decoded_bytes`` limit."""

    def __init__(self, message: str, decoded_bytes: int = 0, limit: int = 0) -> None:
        super().__init__(message)
        self.decoded_bytes = decoded_bytes
        self.limit = limit


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

    @property
    def units(self) -> tuple[int, int] | None:
        """(kept rows, kept columns) if the tensor declares removed units (version 3), else None."""
        if self.kept_rows is None or self.kept_cols is None:
            return None
        return self.kept_rows, self.kept_cols

    @property
    def decoded_bytes(self) -> int:
        """Bytes of the decoded tensor (numel times the item size of ``dtype``)."""
        return self.numel * _RAW_DTYPES[self.dtype][1]

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

    @property
    def dense_bytes(self) -> int:
        """Bytes of all stored tensors as dense float32 (the uncompressed baseline)."""
        return _FLOAT_BYTES * sum(layer.numel for layer in self.layers)

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


@dataclass(frozen=True)
class _Span:
    offset: int
    length: int

    def to_json(self) -> list[int]:
        return [self.offset, self.length]


@dataclass(frozen=True)
class _StreamRecord:
    table: _Span
    stream: _Span
    bits: int
    symbols: int


@dataclass(frozen=True)
class _RawRecord:
    name: str
    shape: tuple[int, ...]
    numel: int
    data: _Span
    dtype: str

    @property
    def decoded_bytes(self) -> int:
        return self.numel * _RAW_DTYPES[self.dtype][1]

    def spans(self) -> list[tuple[str, _Span]]:
        return [("data", self.data)]

    def info(self) -> LayerInfo:
        return LayerInfo(
            name=self.name,
            kind=KIND_RAW,
            shape=self.shape,
            numel=self.numel,
            nnz=self.numel,
            weight_bits=8 * _RAW_DTYPES[self.dtype][1],
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
        )


@dataclass(frozen=True)
class _UnitsRecord:
    rows: _Span
    cols: _Span
    kept_rows: int
    kept_cols: int


@dataclass(frozen=True)
class _HuffmanRecord:
    name: str
    shape: tuple[int, ...]
    numel: int
    nnz: int
    weight_bits: int
    index_bits: int
    codebook: _Span
    index: _StreamRecord
    weight: _StreamRecord
    units: _UnitsRecord | None = None

    @property
    def decoded_bytes(self) -> int:
        return self.numel * _FLOAT_BYTES

    @property
    def stored_numel(self) -> int:
        """Elements the index stream runs over: the compacted sub-tensor's if units are removed."""
        return _stored_numel(self.shape, self.units)

    def spans(self) -> list[tuple[str, _Span]]:
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
            codebook_size=self.codebook.length // _FLOAT_BYTES,
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
            kept_rows=None if self.units is None else self.units.kept_rows,
            kept_cols=None if self.units is None else self.units.kept_cols,
        )


_Record = _RawRecord | _HuffmanRecord


def _stored_numel(shape: tuple[int, ...], units: _UnitsRecord | None) -> int:
    """numel, or kept rows x kept columns x the remaining dimensions when units are removed."""
    if units is None:
        return math.prod(shape)
    return units.kept_rows * units.kept_cols * math.prod(shape[2:])


@dataclass(frozen=True)
class _ParsedFile:
    version: int
    flags: int
    header_bytes: int
    header_json_bytes: int
    payload: memoryview
    arch: dict
    provenance: dict
    records: list[_Record]


class _PayloadWriter:
    """Appends sections back to back and hands out their (offset, length) spans."""

    def __init__(self) -> None:
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, data: bytes) -> list[int]:
        span = _Span(self._size, len(data))
        self._parts.append(data)
        self._size += len(data)
        return span.to_json()

    def getvalue(self) -> bytes:
        return b"".join(self._parts)


_SPAN_KEYS = ("data", "codebook")
_NESTED_SPANS = (("units", ("rows", "cols")), ("index", ("table", "stream")),
                 ("weight", ("table", "stream")))  # fmt: skip


@dataclass(frozen=True)
class _Encoded:
    """One tensor's header record (spans from its own first section) and its sections' bytes."""

    record: dict
    sections: bytes

    @property
    def index_bits(self) -> int:
        return self.record.get("index_bits", 0)

    @property
    def has_units(self) -> bool:
        return "units" in self.record

    def placed(self, offset: int) -> dict:
        """The record with every span moved to start at payload ``offset``."""
        record = dict(self.record)
        for key in _SPAN_KEYS:
            if key in record:
                record[key] = [record[key][0] + offset, record[key][1]]
        for key, parts in _NESTED_SPANS:
            if key in record:
                inner = dict(record[key])
                for part in parts:
                    inner[part] = [inner[part][0] + offset, inner[part][1]]
                record[key] = inner
        return record


def _placed_records(encoded: Sequence[_Encoded]) -> list[dict]:
    """Header records of tensors written back to back in this order."""
    records, offset = [], 0
    for item in encoded:
        records.append(item.placed(offset))
        offset += len(item.sections)
    return records


def encode_model(
    quantized: Sequence[QuantizedTensor],
    raw: Mapping[str, torch.Tensor],
    arch: dict,
    provenance: dict,
    *,
    compress_header: bool = True,
    format_version: int = FORMAT_VERSION,
) -> bytes:
    """Serialize quantized layers (then raw tensors) into one compressed-model file.

    Raw tensors are stored bit for bit in their own dtype (one of ``RAW_DTYPES``): to store a
    float16 bias, pass ``bias.half()``. ``arch`` is ``{"name": registry name, "kwargs": {...}}``
    (both keys optional). Deterministic: equal inputs give equal bytes. ``compress_header``
    zlib-compresses the JSON header when that makes it smaller; ``format_version=1`` writes the
    old format (float32 raw tensors only). From version 3 a layer whose mask leaves whole rows
    or columns empty stores them as removed units when that makes the file smaller; a layer with
    ``index_bits=None`` gets the width with the smallest file (``_choose_layers`` says how).
    Raises InvalidArgument for inconsistent inputs.
    """
    _check_inputs(quantized, raw, arch, provenance, format_version)
    _dump_json({"arch": arch, "provenance": provenance, "tensors": []})
    options = [_quantized_options(q, format_version) for q in quantized]
    raws = [_encode_raw(name, t, format_version) for name, t in raw.items()]

    def file_bytes(layers: Sequence[_Encoded]) -> int:
        stored = _stored_header(_fast_json(arch, provenance, [*layers, *raws]), compress_header)
        return PREAMBLE_SIZE + len(stored[0]) + sum(len(e.sections) for e in (*layers, *raws))

    chosen = _choose_layers(options, file_bytes)
    encoded = [*chosen, *raws]
    header_json = _dump_json(
        {"arch": arch, "provenance": provenance, "tensors": _placed_records(encoded)}
    )
    if len(header_json) > MAX_HEADER_BYTES:
        raise InvalidArgument(
            f"header is {len(header_json)} bytes, over the {MAX_HEADER_BYTES}-byte cap; "
            "shrink arch/provenance"
        )
    stored, flags = _stored_header(header_json, compress_header)
    payload = b"".join(e.sections for e in encoded)
    preamble = _PREAMBLE.pack(
        MAGIC,
        format_version,
        flags,
        len(stored),
        len(header_json),
        zlib.crc32(stored),
        zlib.crc32(payload),
    )
    return preamble + stored + payload


def _stored_header(header_json: bytes, compress: bool) -> tuple[bytes, int]:
    """The header as stored and its flags: zlib level 9 when asked for and shorter."""
    if compress:
        packed = zlib.compress(header_json, 9)
        if len(packed) < len(header_json):
            return packed, FLAG_HEADER_ZLIB
    return header_json, 0


def _fast_json(arch: dict, provenance: dict, encoded: Sequence[_Encoded]) -> bytes:
    """The header JSON the writer would write, without re-validating it (size evaluation only)."""
    header = {"arch": arch, "provenance": provenance, "tensors": _placed_records(encoded)}
    return json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                      allow_nan=False).encode("ascii")  # fmt: skip


def _choose_layers(
    options: Sequence[Sequence[_Encoded]], file_bytes: Callable[[Sequence[_Encoded]], int]
) -> list[_Encoded]:
    """One encoding per layer (its index width and units form), the file as small as found.

    Starts: every single width for all layers (each without removed units) and each layer's
    fewest payload bytes; from each single-width start, units are toggled per layer while that
    shrinks the file; from the smallest of these, any change of one layer that shrinks the file
    is kept until none does. So the result is never larger than the file with removed units
    nowhere (the version-2 layout), nor than any single width for every layer.
    """
    if all(len(layer) == 1 for layer in options):
        return [layer[0] for layer in options]
    widths = sorted({e.index_bits for layer in options for e in layer})
    starts = [[_pick(layer, width) for layer in options] for width in widths]
    cheapest = [
        min(_pick_all(layer), key=lambda e: (len(e.sections), e.index_bits)) for layer in options
    ]
    candidates = [_descend(start, options, file_bytes, same_width=True) for start in starts]
    best = min([*candidates, cheapest], key=file_bytes)
    return _descend(best, options, file_bytes, same_width=False)


def _pick_all(layer: Sequence[_Encoded]) -> list[_Encoded]:
    """A layer's encodings without removed units."""
    return [e for e in layer if not e.has_units]


def _pick(layer: Sequence[_Encoded], width: int) -> _Encoded:
    """The layer's encoding at ``width`` without removed units (its only width if it is fixed)."""
    plain = _pick_all(layer)
    return next((e for e in plain if e.index_bits == width), plain[0])


def _descend(
    choice: list[_Encoded],
    options: Sequence[Sequence[_Encoded]],
    file_bytes: Callable[[Sequence[_Encoded]], int],
    *,
    same_width: bool,
) -> list[_Encoded]:
    """Keep any one-layer change that makes the file smaller until none does (deterministic)."""
    best = file_bytes(choice)
    improved = True
    while improved:
        improved = False
        for i, layer in enumerate(options):
            for candidate in layer:
                current = choice[i]
                if candidate is current or (
                    same_width and candidate.index_bits != current.index_bits
                ):
                    continue
                trial = [*choice[:i], candidate, *choice[i + 1 :]]
                size = file_bytes(trial)
                if size < best:
                    choice, best, improved = trial, size, True
    return choice


def decode_model(
    data: bytes, *, max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES
) -> DecodedModel:
    """Decode a compressed-model file to CPU tensors; raises a FormatError if invalid.

    Refuses (DecodedTooLarge) a file whose tensors would take more than ``max_decoded_bytes``
    bytes, judged from the header before any tensor is allocated; None means no limit beyond
    the format's own (2**28 elements).
    """
    limit = _check_limit(max_decoded_bytes)
    parsed = _parse_file(data)
    _check_decoded_size(parsed.records, limit)
    state_dict: dict[str, torch.Tensor] = {}
    for record in parsed.records:
        try:
            if isinstance(record, _RawRecord):
                state_dict[record.name] = _decode_raw(record, parsed.payload)
            else:
                state_dict[record.name] = _decode_huffman(record, parsed.payload)
        except FormatError as err:
            raise type(err)(f"tensor {_quoted(record.name)}: {err}") from err
    layers = [record.info() for record in parsed.records]
    return DecodedModel(parsed.arch, parsed.provenance, state_dict, layers)


def read_info(data: bytes) -> FileInfo:
    """Validate framing, header and checksums and report per-tensor sizes without decoding."""
    parsed = _parse_file(data)
    return FileInfo(
        version=parsed.version,
        header_compressed=bool(parsed.flags & FLAG_HEADER_ZLIB),
        file_bytes=PREAMBLE_SIZE + parsed.header_bytes + len(parsed.payload),
        preamble_bytes=PREAMBLE_SIZE,
        header_bytes=parsed.header_bytes,
        header_json_bytes=parsed.header_json_bytes,
        payload_bytes=len(parsed.payload),
        arch=parsed.arch,
        provenance=parsed.provenance,
        layers=tuple(record.info() for record in parsed.records),
    )


def _check_limit(max_decoded_bytes: int | None) -> int | None:
    """The caller's decoded-size limit, validated (a caller bug raises InvalidArgument)."""
    if max_decoded_bytes is None:
        return None
    if type(max_decoded_bytes) is not int or max_decoded_bytes < 0:
        raise InvalidArgument(
            f"max_decoded_bytes must be a non-negative int or None, got {max_decoded_bytes!r}"
        )
    return max_decoded_bytes


def _check_decoded_size(records: list[_Record], limit: int | None) -> None:
    """Raise DecodedTooLarge if the declared tensors need more than ``limit`` bytes."""
    total = sum(record.decoded_bytes for record in records)
    if limit is not None and total > limit:
        raise DecodedTooLarge(
            f"file decodes to {total} bytes of tensors, over the max_decoded_bytes limit of "
            f"{limit} bytes; if you trust the file, pass a larger max_decoded_bytes",
            total,
            limit,
        )


def _check_inputs(
    quantized: Sequence[QuantizedTensor],
    raw: Mapping[str, torch.Tensor],
    arch: dict,
    provenance: dict,
    version: int,
) -> None:
    """Raise InvalidArgument unless the encoder's inputs make a file the reader accepts."""
    if version not in SUPPORTED_VERSIONS:
        raise InvalidArgument(f"format_version must be one of {SUPPORTED_VERSIONS}")
    _check_names(quantized, raw)
    _check_metadata(arch, provenance, version)
    for q in quantized:
        _check_quantized(q)
    for name, tensor in raw.items():
        _check_raw(name, tensor, version)
    total = sum(math.prod(q.shape) for q in quantized) + sum(t.numel() for t in raw.values())
    if total > MAX_TOTAL_NUMEL:
        raise InvalidArgument(
            f"model has {total} elements; one file holds at most {MAX_TOTAL_NUMEL}"
        )


def _check_names(quantized: Sequence[QuantizedTensor], raw: Mapping[str, torch.Tensor]) -> None:
    """Tensor names must be non-empty strings, each given once."""
    seen: set[str] = set()
    for name in [q.name for q in quantized] + list(raw):
        if not isinstance(name, str) or not name:
            raise InvalidArgument(f"tensor names must be non-empty strings, got {name!r}")
        if name in seen:
            raise InvalidArgument(
                f"tensor name {name!r} is given more than once (quantized and raw names must be "
                "unique); pass each parameter exactly once"
            )
        seen.add(name)


def _check_metadata(arch: dict, provenance: dict, version: int) -> None:
    """``arch`` and ``provenance`` must be dicts; version 2 types arch's name and kwargs."""
    for what, value in (("arch", arch), ("provenance", provenance)):
        if not isinstance(value, dict):
            raise InvalidArgument(f"{what} must be a JSON-able dict, got {type(value).__name__}")
    if version >= 2 and (problem := _arch_problem(arch)):
        raise InvalidArgument(problem)


def _arch_problem(arch: dict) -> str | None:
    """Why a version-2 ``arch`` is invalid, or None: name must be a str, kwargs a dict."""
    if "name" in arch and not isinstance(arch["name"], str):
        return f"arch 'name' must be a string, got {type(arch['name']).__name__}"
    if "kwargs" in arch and not isinstance(arch["kwargs"], dict):
        return f"arch 'kwargs' must be an object/dict, got {type(arch['kwargs']).__name__}"
    return None


def _check_bits(value: object, what: str, name: str) -> int:
    """A bit width in 1..16."""
    if type(value) is not int or not 1 <= value <= MAX_SYMBOL_BITS:
        raise InvalidArgument(
            f"layer {name!r}: {what} must be an int in 1..{MAX_SYMBOL_BITS}, got {value!r}"
        )
    return value


def _check_shape(shape: tuple[int, ...], where: str) -> None:
    """At most MAX_NDIM dimensions, each at most MAX_TOTAL_NUMEL (the reader's limits)."""
    if len(shape) > MAX_NDIM:
        raise InvalidArgument(f"{where}: at most {MAX_NDIM} dimensions are supported")
    if any(dim > MAX_TOTAL_NUMEL for dim in shape):
        raise InvalidArgument(
            f"{where}: shape {list(shape)} has a dimension over {MAX_TOTAL_NUMEL}"
        )


def _check_quantized(q: QuantizedTensor) -> None:
    """A quantized layer's mask, labels, centroids and bit widths fit the format."""
    name = q.name
    weight_bits = _check_bits(q.weight_bits, "weight_bits", name)
    if q.index_bits is not None:
        _check_bits(q.index_bits, "index_bits", name)
    if not isinstance(q.mask, torch.Tensor) or q.mask.dtype != torch.bool:
        raise InvalidArgument(f"layer {name!r}: mask must be a torch.bool tensor")
    _check_shape(q.shape, f"layer {name!r}")
    labels = q.labels
    if (
        not isinstance(labels, torch.Tensor)
        or labels.dtype.is_floating_point
        or labels.dtype.is_complex
        or labels.dtype == torch.bool
    ):
        raise InvalidArgument(f"layer {name!r}: labels must be an integer torch tensor")
    if tuple(labels.shape) != q.shape:
        raise InvalidArgument(
            f"layer {name!r}: labels shape {tuple(labels.shape)} != mask shape {q.shape}"
        )
    if not isinstance(q.centroids, torch.Tensor) or q.centroids.dtype != torch.float32:
        raise InvalidArgument(f"layer {name!r}: centroids must be a float32 tensor (use .float())")
    if q.centroids.dim() != 1:
        raise InvalidArgument(f"layer {name!r}: centroids must be 1-D, got {q.centroids.dim()}-D")
    if q.centroids.numel() > 1 << weight_bits:
        raise InvalidArgument(
            f"layer {name!r}: {q.centroids.numel()} centroids do not fit weight_bits="
            f"{weight_bits} (at most {1 << weight_bits}); raise weight_bits or use fewer clusters"
        )


def _check_raw(name: str, tensor: torch.Tensor, version: int) -> None:
    """A raw tensor is dense, of a supported dtype (float32 in version 1), within the limits."""
    if version == 1 and (not isinstance(tensor, torch.Tensor) or tensor.dtype != torch.float32):
        raise InvalidArgument(
            f"raw tensor {name!r} must be a float32 torch tensor in format version 1 "
            "(convert with .float())"
        )
    if not isinstance(tensor, torch.Tensor) or tensor.dtype not in _DTYPE_NAMES:
        got = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise InvalidArgument(
            f"raw tensor {name!r} has dtype {got}; supported: {', '.join(RAW_DTYPES)} "
            "(convert with .to(dtype))"
        )
    if tensor.layout != torch.strided:
        raise InvalidArgument(f"raw tensor {name!r} must be dense (strided), not {tensor.layout}")
    _check_shape(tuple(tensor.shape), f"raw tensor {name!r}")


def _quantized_options(q: QuantizedTensor, version: int) -> list[_Encoded]:
    """Every encoding the writer may choose for a layer: each candidate width, with and
    (version 3, when some row or column holds no surviving weight) without removed units."""
    name = q.name
    k = q.centroids.numel()
    mask = q.mask.detach().cpu().numpy()
    flat = mask.reshape(-1)
    labels = q.labels.detach().cpu().reshape(-1).numpy()[flat].astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        bad = int(np.flatnonzero((labels < 0) | (labels >= k))[0])
        raise InvalidArgument(
            f"layer {name!r}: label {int(labels[bad])} at surviving position "
            f"{int(np.flatnonzero(flat)[bad])} is outside the codebook range [0, {k})"
        )
    weight = encode_symbols(labels)
    common = _LayerCommon(
        name=name,
        shape=q.shape,
        weight_bits=q.weight_bits,
        codebook=_tensor_bytes(q.centroids),
        weight=weight,
        weight_table=encode_table(weight.count, weight.symbols, q.weight_bits),
    )
    widths = AUTO_INDEX_BITS if q.index_bits is None else (q.index_bits,)
    forms: list[tuple[np.ndarray, np.ndarray] | None] = [None]
    if version >= UNITS_VERSION and (units := _removable_units(mask)) is not None:
        forms.append(units)
    return [_encode_layer(common, mask, width, form) for form in forms for width in widths]


def _removable_units(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(kept rows, kept columns) of a mask of 2+ dims whose some row (dimension 0) or column
    (dimension 1) holds no surviving weight; None when there is none to remove."""
    if mask.ndim < 2:
        return None
    rows = mask.reshape(mask.shape[0], -1).any(axis=1)
    cols = np.moveaxis(mask, 1, 0).reshape(mask.shape[1], -1).any(axis=1)
    if rows.all() and cols.all():
        return None
    return rows, cols


@dataclass(frozen=True)
class _LayerCommon:
    """What every encoding of one layer shares: its codebook and weight stream."""

    name: str
    shape: tuple[int, ...]
    weight_bits: int
    codebook: bytes
    weight: HuffmanStream
    weight_table: bytes


def _encode_layer(
    layer: _LayerCommon,
    mask: np.ndarray,
    index_bits: int,
    units: tuple[np.ndarray, np.ndarray] | None,
) -> _Encoded:
    """A layer's sections and record at one index width, with or without removed units."""
    writer = _PayloadWriter()
    record: dict = {
        "kind": KIND_HUFFMAN,
        "name": layer.name,
        "shape": list(layer.shape),
        "nnz": layer.weight.n_symbols,
        "weight_bits": layer.weight_bits,
        "index_bits": index_bits,
        "codebook": writer.add(layer.codebook),
    }
    stored = mask.reshape(-1)
    if units is not None:
        rows, cols = units
        record["units"] = {
            "rows": writer.add(np.packbits(rows, bitorder="big").tobytes()),
            "cols": writer.add(np.packbits(cols, bitorder="big").tobytes()),
            "kept_rows": int(rows.sum()),
            "kept_cols": int(cols.sum()),
        }
        stored = mask[np.ix_(rows, cols)].reshape(-1)
    index = encode_symbols(encode_positions(stored, index_bits))
    index_table = writer.add(encode_table(index.count, index.symbols, index_bits))
    weight_table = writer.add(layer.weight_table)
    index_stream = writer.add(index.stream_bytes())
    weight_stream = writer.add(layer.weight.stream_bytes())
    record["index"] = _stream_json(index, index_table, index_stream)
    record["weight"] = _stream_json(layer.weight, weight_table, weight_stream)
    return _Encoded(record, writer.getvalue())


def _stream_json(stream: HuffmanStream, table: list[int], data: list[int]) -> dict:
    """The header's description of one coded stream."""
    return {"table": table, "stream": data, "bits": stream.n_bits, "symbols": stream.n_symbols}


def _encode_raw(name: str, tensor: torch.Tensor, version: int) -> _Encoded:
    """A raw tensor's items and header record (with dtype from version 2)."""
    record = {"kind": KIND_RAW, "name": name, "shape": list(tensor.shape)}
    if version >= 2:
        record["dtype"] = _DTYPE_NAMES[tensor.dtype]
    data = _tensor_bytes(tensor)
    record["data"] = [0, len(data)]
    return _Encoded(record, data)


def _tensor_bytes(tensor: torch.Tensor) -> bytes:
    """The tensor's items row-major, little-endian, bit for bit; bools as bytes 0/1."""
    flat = tensor.detach().cpu().contiguous().reshape(-1)
    if flat.dtype == torch.bool:
        flat = flat.view(torch.uint8) != 0  # a bool tensor's bytes may be other than 0/1
    int_dtype, code = _BIT_VIEWS[flat.element_size()]
    return flat.view(int_dtype).numpy().astype(code, copy=False).tobytes()


def _dump_json(obj: dict) -> bytes:
    """Deterministic ASCII JSON that the reader accepts, else InvalidArgument."""
    try:
        text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True,
                          allow_nan=False)  # fmt: skip
    except (TypeError, ValueError) as err:
        raise InvalidArgument(
            f"arch/provenance must be JSON-able dicts with str keys and finite numbers: {err}"
        ) from err
    except RecursionError as err:
        raise InvalidArgument("arch/provenance are nested too deeply") from err
    data = text.encode("ascii")
    try:
        _load_json(data)
    except MalformedHeader as err:
        raise InvalidArgument(f"arch/provenance break a header JSON rule: {err}") from err
    return data


def _parse_file(data: bytes) -> _ParsedFile:
    """Checks 1-11 of FORMAT.md's order: framing, header, layout and CRCs; decodes no tensor."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    view = memoryview(data).cast("B")
    if bytes(view[: len(MAGIC)]) != MAGIC[: len(view)]:
        raise BadMagic("data does not start with the compressed-model magic; not a .dcz file")
    if len(view) < PREAMBLE_SIZE:
        raise TruncatedFile(
            f"file has {len(view)} bytes, shorter than the {PREAMBLE_SIZE}-byte preamble"
        )
    _, version, flags, header_len, json_len, header_crc, payload_crc = _PREAMBLE.unpack_from(view)
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(
            f"format version {version} is not supported (this reader implements "
            f"{' and '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    if flags & ~FLAG_HEADER_ZLIB:
        unknown = flags & ~FLAG_HEADER_ZLIB
        raise UnsupportedVersion(f"unknown flag bits 0x{unknown:04x} for format version {version}")
    for what, size in (("stored", header_len), ("decompressed", json_len)):
        if size > MAX_HEADER_BYTES:
            raise HeaderTooLarge(f"{what} header length {size} exceeds the {MAX_HEADER_BYTES} cap")
    header_end = PREAMBLE_SIZE + header_len
    if header_end > len(view):
        raise TruncatedFile(f"header needs bytes up to {header_end}, file has {len(view)}")
    stored = view[PREAMBLE_SIZE:header_end]
    if zlib.crc32(stored) != header_crc:
        raise ChecksumMismatch("header CRC32 mismatch; the header bytes are corrupt")
    header = _load_json(_unpack_header(stored, flags, json_len))
    arch, provenance, records = _parse_header(header, version)
    payload = view[header_end:]
    _check_layout(records, len(payload))
    if zlib.crc32(payload) != payload_crc:
        raise ChecksumMismatch("payload CRC32 mismatch; the payload bytes are corrupt")
    return _ParsedFile(version, flags, header_len, json_len, payload, arch, provenance, records)


def _unpack_header(stored: memoryview, flags: int, json_len: int) -> bytes:
    """The header JSON bytes, inflated to exactly ``json_len`` bytes if compressed."""
    if not flags & FLAG_HEADER_ZLIB:
        if json_len != len(stored):
            raise MalformedHeader(
                f"uncompressed header: JSON length {json_len} != stored length {len(stored)}"
            )
        return bytes(stored)
    inflater = zlib.decompressobj()
    try:
        text = inflater.decompress(stored, json_len + 1)
    except zlib.error as err:
        raise MalformedHeader(f"header is not a valid zlib stream: {err}") from err
    if len(text) != json_len or not inflater.eof or inflater.unused_data:
        raise MalformedHeader(
            f"zlib header does not inflate to exactly the declared {json_len} bytes"
        )
    return text


def _load_json(text: bytes) -> object:
    """Parse header JSON strictly: UTF-8, depth and integer limits, no duplicate keys or NaN."""
    try:
        decoded = text.decode("utf-8")
    except UnicodeDecodeError as err:
        raise MalformedHeader(f"header is not valid UTF-8: {err}") from err
    depth = _json_depth(text)
    if depth > MAX_JSON_DEPTH:
        raise MalformedHeader(
            f"header JSON is nested too deeply ({depth} levels; at most {MAX_JSON_DEPTH})"
        )
    try:
        return json.loads(
            decoded,
            object_pairs_hook=_unique_keys,
            parse_constant=_reject_constant,
            parse_float=_finite_float,
            parse_int=_exact_int,
        )
    except MalformedHeader:
        raise
    except RecursionError as err:
        raise MalformedHeader("header JSON is nested too deeply") from err
    except ValueError as err:
        raise MalformedHeader(f"header is not valid JSON: {err}") from err


_ESCAPE = re.compile(rb"\\.", re.DOTALL)
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'[]{}"')))
_DEPTH_CHUNK = 1 << 20


def _json_depth(text: bytes) -> int:
    """Most arrays/objects open at once, brackets inside strings ignored (exact for valid JSON)."""
    marks = np.frombuffer(_ESCAPE.sub(b"", text).translate(None, _NOT_STRUCTURE), dtype=np.uint8)
    quotes = marks == ord('"')
    in_string = np.bitwise_xor.accumulate(quotes.astype(np.uint8)).astype(bool)
    brackets = marks[~quotes & ~in_string]
    depth = deepest = 0
    for start in range(0, brackets.size, _DEPTH_CHUNK):
        chunk = brackets[start : start + _DEPTH_CHUNK]
        opens = (chunk == ord("[")) | (chunk == ord("{"))
        running = depth + np.cumsum(np.where(opens, 1, -1), dtype=np.int64)
        deepest = max(deepest, int(running.max()))
        depth = int(running[-1])
    return deepest


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    """object_pairs_hook refusing duplicate keys."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise MalformedHeader("header JSON object has a duplicate key")
    return obj


def _reject_constant(token: str) -> float:
    """parse_constant refusing NaN and the infinities."""
    raise MalformedHeader(f"header JSON contains {token}, which is not valid JSON")


def _finite_float(token: str) -> float:
    """parse_float refusing numbers that round to an infinity."""
    value = float(token)
    if not math.isfinite(value):
        raise MalformedHeader(f"header JSON number {token[:40]} is out of float range")
    return value


def _exact_int(token: str) -> int:
    """An integer literal of magnitude at most MAX_JSON_INT (exact in a double)."""
    if len(token) > 17 or abs(value := int(token)) > MAX_JSON_INT:
        raise MalformedHeader(
            f"header JSON integer {token[:40]} is beyond +-(2**53 - 1), which a double cannot "
            "hold exactly"
        )
    return value


def _quoted(name: str) -> str:
    """repr() of a name for messages, cut to a readable length."""
    return repr(name) if len(name) <= 80 else f"{name[:60]!r}... ({len(name)} characters)"


_TOP_KEYS = frozenset({"arch", "provenance", "tensors"})
_RAW_KEYS = {
    1: frozenset({"kind", "name", "shape", "data"}),
    2: frozenset({"kind", "name", "shape", "dtype", "data"}),
    3: frozenset({"kind", "name", "shape", "dtype", "data"}),
}
_HUFFMAN_KEYS = frozenset(
    {"kind", "name", "shape", "nnz", "weight_bits", "index_bits", "codebook", "index", "weight"}
)
_STREAM_KEYS = frozenset({"table", "stream", "bits", "symbols"})
_UNITS_KEYS = frozenset({"rows", "cols", "kept_rows", "kept_cols"})


def _parse_header(header: object, version: int) -> tuple[dict, dict, list[_Record]]:
    """arch, provenance and the tensor records, every schema rule and limit checked."""
    top = _object(header, _TOP_KEYS, "header")
    arch, provenance, tensors = top["arch"], top["provenance"], top["tensors"]
    if not isinstance(arch, dict) or not isinstance(provenance, dict):
        raise MalformedHeader("header 'arch' and 'provenance' must be JSON objects")
    if version >= 2 and (problem := _arch_problem(arch)):
        raise MalformedHeader(f"header {problem}")
    if not isinstance(tensors, list):
        raise MalformedHeader("header 'tensors' must be a JSON array")
    records: list[_Record] = []
    names: set[str] = set()
    total = 0
    for position, entry in enumerate(tensors):
        record = _parse_tensor(entry, f"tensors[{position}]", version)
        if record.name in names:
            raise MalformedHeader(f"tensor name {_quoted(record.name)} appears twice in the header")
        names.add(record.name)
        total += record.numel
        if total > MAX_TOTAL_NUMEL:
            raise MalformedHeader(f"tensors hold more than {MAX_TOTAL_NUMEL} elements in total")
        records.append(record)
    return arch, provenance, records


def _parse_tensor(entry: object, where: str, version: int) -> _Record:
    """One tensor record: kind, keys, name and shape, then the kind's own fields."""
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if kind == KIND_RAW:
        obj = _object(entry, _RAW_KEYS[version], where)
    elif kind == KIND_HUFFMAN:
        with_units = version >= UNITS_VERSION and "units" in entry
        obj = _object(entry, _HUFFMAN_KEYS | {"units"} if with_units else _HUFFMAN_KEYS, where)
    else:
        raise MalformedHeader(f"{where}: 'kind' must be {KIND_RAW!r} or {KIND_HUFFMAN!r}")
    name = obj["name"]
    if not isinstance(name, str) or not name:
        raise MalformedHeader(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({_quoted(name)})"
    shape = _shape(obj["shape"], where)
    numel = math.prod(shape)
    if kind == KIND_RAW:
        return _parse_raw(obj, name, shape, numel, where)
    return _parse_huffman(obj, name, shape, where)


def _parse_raw(obj: dict, name: str, shape: tuple[int, ...], numel: int, where: str) -> _RawRecord:
    """A raw record: its dtype (float32 in version 1) and a data span of the matching length."""
    dtype = obj.get("dtype", "float32")  # version 1 has no dtype key: float32
    if type(dtype) is not str or dtype not in _RAW_DTYPES:
        raise MalformedHeader(f"{where}.dtype must be one of {list(RAW_DTYPES)}, got {dtype!r:.60}")
    data = _span(obj["data"], f"{where}.data")
    size = _RAW_DTYPES[dtype][1] * numel
    if data.length != size:
        raise MalformedHeader(
            f"{where}: raw data is {data.length} bytes but {dtype} shape {list(shape)} needs {size}"
        )
    return _RawRecord(name, shape, numel, data, dtype)


def _parse_huffman(obj: dict, name: str, shape: tuple[int, ...], where: str) -> _HuffmanRecord:
    """A Huffman record: units, nnz, bit widths, codebook size and both streams' declared counts.

    Counts are bounded by the stored (compacted, when units are removed) element count."""
    units = _units(obj["units"], shape, f"{where}.units") if "units" in obj else None
    numel = _stored_numel(shape, units)
    nnz = _int(obj["nnz"], f"{where}.nnz", 0, numel)
    weight_bits = _int(obj["weight_bits"], f"{where}.weight_bits", 1, MAX_SYMBOL_BITS)
    index_bits = _int(obj["index_bits"], f"{where}.index_bits", 1, MAX_SYMBOL_BITS)
    codebook = _span(obj["codebook"], f"{where}.codebook")
    if codebook.length % _FLOAT_BYTES or codebook.length // _FLOAT_BYTES > 1 << weight_bits:
        raise MalformedHeader(
            f"{where}: codebook of {codebook.length} bytes is not 4*k with k <= 2**{weight_bits}"
        )
    max_index = nnz + numel // filler_symbol(index_bits) if nnz else 0
    index = _stream(obj["index"], f"{where}.index", nnz, max_index)
    weight = _stream(obj["weight"], f"{where}.weight", nnz, nnz)
    return _HuffmanRecord(
        name, shape, math.prod(shape), nnz, weight_bits, index_bits, codebook, index, weight, units
    )


def _units(value: object, shape: tuple[int, ...], where: str) -> _UnitsRecord:
    """A units object: two bit-mask spans sized by dimensions 0 and 1, and their kept counts."""
    obj = _object(value, _UNITS_KEYS, where)
    if len(shape) < 2:
        raise MalformedHeader(f"{where}: removed units need a tensor of at least 2 dimensions")
    rows = _span(obj["rows"], f"{where}.rows")
    cols = _span(obj["cols"], f"{where}.cols")
    for what, span, dim in (("rows", rows, shape[0]), ("cols", cols, shape[1])):
        if span.length != (dim + 7) // 8:
            raise MalformedHeader(
                f"{where}.{what}: mask of {span.length} bytes, but {dim} units need "
                f"{(dim + 7) // 8}"
            )
    kept_rows = _int(obj["kept_rows"], f"{where}.kept_rows", 0, shape[0])
    kept_cols = _int(obj["kept_cols"], f"{where}.kept_cols", 0, shape[1])
    return _UnitsRecord(rows, cols, kept_rows, kept_cols)


def _stream(value: object, where: str, min_symbols: int, max_symbols: int) -> _StreamRecord:
    """A stream object: spans, bit count backed by the stream bytes, symbol count in range."""
    obj = _object(value, _STREAM_KEYS, where)
    table = _span(obj["table"], f"{where}.table")
    stream = _span(obj["stream"], f"{where}.stream")
    bits = _int(obj["bits"], f"{where}.bits", 0, 8 * stream.length)
    if stream.length != (bits + 7) // 8:
        raise MalformedHeader(
            f"{where}: stream of {stream.length} bytes does not hold exactly {bits} bits "
            "plus < 8 padding bits"
        )
    symbols = _int(obj["symbols"], f"{where}.symbols", min_symbols, max_symbols)
    return _StreamRecord(table, stream, bits, symbols)


def _object(value: object, keys: frozenset[str], where: str) -> dict:
    """A JSON object with exactly ``keys``."""
    if not isinstance(value, dict):
        raise MalformedHeader(f"{where} must be a JSON object")
    if value.keys() != keys:
        missing = sorted(keys - value.keys())
        extra = sorted(value.keys() - keys)
        raise MalformedHeader(f"{where}: missing fields {missing}, unknown fields {extra}")
    return value


def _int(value: object, where: str, low: int, high: int) -> int:
    """A JSON integer (not a bool or float) in [low, high]."""
    if type(value) is not int or not low <= value <= high:
        raise MalformedHeader(f"{where} must be an integer in [{low}, {high}], got {value!r:.60}")
    return value


def _span(value: object, where: str) -> _Span:
    """An [offset, length] pair of integers in [0, 2**53 - 1]."""
    if not isinstance(value, list) or len(value) != 2:
        raise MalformedHeader(f"{where} must be [offset, length]")
    offset = _int(value[0], f"{where}[0]", 0, MAX_JSON_INT)
    return _Span(offset, _int(value[1], f"{where}[1]", 0, MAX_JSON_INT))


def _shape(value: object, where: str) -> tuple[int, ...]:
    """Each dimension in [0, 2**28] and their product at most 2**28, whatever the order."""
    if not isinstance(value, list) or len(value) > MAX_NDIM:
        raise MalformedHeader(f"{where}.shape must be a list of at most {MAX_NDIM} integers")
    dims = tuple(_int(d, f"{where}.shape", 0, MAX_TOTAL_NUMEL) for d in value)
    if math.prod(dims) > MAX_TOTAL_NUMEL:
        raise MalformedHeader(f"{where}: shape {list(dims)} exceeds {MAX_TOTAL_NUMEL} elements")
    return dims


def _check_layout(records: list[_Record], payload_len: int) -> None:
    """Sections tile the payload exactly, in file order."""
    expected = 0
    for record in records:
        for part, span in record.spans():
            if span.offset != expected:
                raise InvalidOffset(
                    f"tensor {_quoted(record.name)} {part} starts at payload offset "
                    f"{span.offset}, expected {expected}: sections must be contiguous in file order"
                )
            expected += span.length
    if expected > payload_len:
        raise TruncatedFile(f"sections need {expected} payload bytes, file has {payload_len}")
    if expected < payload_len:
        raise InvalidOffset(f"{payload_len - expected} unexpected bytes after the last section")


def _decode_raw(record: _RawRecord, payload: memoryview) -> torch.Tensor:
    """The stored items bit for bit in the record's dtype; bool bytes must be 0 or 1."""
    torch_dtype, size = _RAW_DTYPES[record.dtype]
    int_dtype, code = _BIT_VIEWS[size]
    items = _items(payload, record.data.offset, record.numel, code)
    if torch_dtype == torch.bool and items.size and int(items.max()) > 1:
        bad = int(np.flatnonzero(items > 1)[0])
        raise InvalidValue(
            f"bool item {bad} is byte 0x{int(items[bad]):02x}; bool bytes must be 0x00 or 0x01"
        )
    tensor = torch.from_numpy(items).view(int_dtype).view(torch_dtype)
    return tensor.reshape(record.shape)


def _items(payload: memoryview, offset: int, count: int, code: str) -> np.ndarray:
    """``count`` little-endian items at ``offset``, copied into a native-order writable array."""
    native = np.dtype(code).newbyteorder("=")
    if count == 0:
        return np.zeros(0, dtype=native)
    return np.frombuffer(payload, dtype=code, count=count, offset=offset).astype(native)


def _decode_huffman(record: _HuffmanRecord, payload: memoryview) -> torch.Tensor:
    """Validate both code tables, then both paddings, place the weights, then allocate the tensor.

    Per-symbol memory is spent only on streams whose symbols each cost at least one coded bit;
    zero-bit streams become a slice and a scalar, so header counts alone allocate nothing.
    """
    kept = None if record.units is None else _kept_units(record.units, record.shape, payload)
    centroids = _floats(payload, record.codebook)
    bits = record.index_bits
    index_code = _labelled("index stream", _load_code, record.index, payload, bits, 1 << bits)
    weight_code = _labelled(
        "weights", _load_code, record.weight, payload, record.weight_bits, centroids.size
    )
    index = _labelled("index stream", _load_stream, record.index, payload, index_code)
    weight = _labelled("weights", _load_stream, record.weight, payload, weight_code)
    positions = _positions(index, record)
    values = _labelled("weights", _weight_values, weight, centroids)
    stored = np.zeros(record.stored_numel, dtype=np.float32)
    stored[positions] = values
    if kept is None:
        return torch.from_numpy(stored.reshape(record.shape))
    rows, cols = kept
    dense = np.zeros(record.shape, dtype=np.float32)
    dense[np.ix_(rows, cols)] = stored.reshape(rows.size, cols.size, *record.shape[2:])
    return torch.from_numpy(dense)


def _kept_units(
    units: _UnitsRecord, shape: tuple[int, ...], payload: memoryview
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the kept rows and columns; padding bits must be 0 and counts as declared."""
    kept = []
    for what, span, dim, count in (
        ("rows", units.rows, shape[0], units.kept_rows),
        ("cols", units.cols, shape[1], units.kept_cols),
    ):
        raw = np.frombuffer(payload, dtype=np.uint8, count=span.length, offset=span.offset)
        flags = np.unpackbits(raw, bitorder="big")
        if flags[dim:].any():
            raise CorruptStream(f"units {what} mask: padding bits after unit {dim} are not zero")
        indices = np.flatnonzero(flags[:dim])
        if indices.size != count:
            raise CorruptStream(
                f"units {what} mask keeps {indices.size} units but the header declares {count}"
            )
        kept.append(indices)
    return kept[0], kept[1]


def _positions(stream: HuffmanStream, record: _HuffmanRecord) -> slice | np.ndarray:
    """Flat positions of the ``nnz`` weights, checked against nnz and numel before allocating."""
    alphabet_size = 1 << record.index_bits
    repeated = _labelled("index stream", zero_bit_symbol, stream, alphabet_size)
    if repeated is not None:
        placed = constant_positions(
            repeated, stream.n_symbols, record.index_bits, record.stored_numel
        )
        count = stream.n_symbols
    else:
        if stream.n_symbols > record.stored_numel:
            raise CorruptStream(
                f"index stream declares {stream.n_symbols} symbols, but each advances at least one "
                f"position and the tensor stores only {record.stored_numel} elements"
            )
        symbols = _labelled("index stream", decode_symbols, stream, alphabet_size)
        placed = decode_positions(symbols, record.index_bits, record.stored_numel)
        count = placed.size
    if count != record.nnz:
        raise CorruptStream(
            f"index stream places {count} weights but the header declares nnz={record.nnz}"
        )
    return placed


def _weight_values(stream: HuffmanStream, centroids: np.ndarray) -> np.float32 | np.ndarray:
    """The centroid of each weight; one scalar for a zero-bit stream (its count equals nnz)."""
    repeated = zero_bit_symbol(stream, centroids.size)
    if repeated is not None:
        return centroids[repeated]
    return centroids[decode_symbols(stream, centroids.size)]


def _floats(payload: memoryview, span: _Span) -> np.ndarray:
    """The float32 items of ``span``, bit for bit."""
    return _items(payload, span.offset, span.length // _FLOAT_BYTES, "<i4").view(np.float32)


def _labelled(what: str, function: Callable[..., _T], *args: object) -> _T:
    """Call ``function``, prefixing the message of any FormatError it raises with ``what``."""
    try:
        return function(*args)
    except FormatError as err:
        raise type(err)(f"{what}: {err}") from err


def _load_code(
    record: _StreamRecord, payload: memoryview, symbol_bits: int, alphabet_size: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Parse and validate a stream's code table (InvalidCode); reads no stream bits."""
    table = payload[record.table.offset : record.table.offset + record.table.length]
    count, symbols = decode_table(bytes(table), symbol_bits)
    validate_code(count, symbols, alphabet_size)
    return count, symbols


def _load_stream(
    record: _StreamRecord, payload: memoryview, code: tuple[tuple[int, ...], tuple[int, ...]]
) -> HuffmanStream:
    """A validated code with its stream bits, whose padding must be zero; decodes no symbols."""
    bits = bitarray(endian="big")
    bits.frombytes(payload[record.stream.offset : record.stream.offset + record.stream.length])
    if bits[record.bits :].any():
        raise CorruptStream("stream padding bits after the last code are not zero")
    del bits[record.bits :]
    return HuffmanStream(code[0], code[1], frozenbitarray(bits), record.symbols)
