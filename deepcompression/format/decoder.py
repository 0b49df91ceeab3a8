"""Decoding: ``decode_model`` turns a file into a state_dict, ``read_info`` reports its sizes.

Both run the framing checks first (``framing.parse_file``); ``decode_model`` then checks the
decoded size against the caller's limit and decodes each tensor completely, in file order, with
both code tables validated before either stream is read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from bitarray import bitarray, frozenbitarray

from deepcompression.format.arith import arith_decode
from deepcompression.format.errors import (
    CorruptStream,
    DecodedTooLarge,
    FormatError,
    InvalidArgument,
    InvalidValue,
)
from deepcompression.format.framing import parse_file
from deepcompression.format.header import quoted
from deepcompression.format.huffman import (
    HuffmanStream,
    decode_symbols,
    decode_table,
    validate_code,
    zero_bit_symbol,
)
from deepcompression.format.info import DecodedModel, FileInfo
from deepcompression.format.records import (
    HuffmanRecord,
    KeptRows,
    RawRecord,
    Record,
    Span,
    StreamRecord,
    UnitsRecord,
)
from deepcompression.format.sparse_index import constant_positions, decode_positions
from deepcompression.format.spec import (
    BIT_VIEWS,
    DEFAULT_MAX_DECODED_BYTES,
    DTYPES,
    FLAG_HEADER_ZLIB,
    FLOAT_BYTES,
    HALF_BYTES,
    PREAMBLE_SIZE,
)

__all__ = ["decode_model", "read_info"]

_T = TypeVar("_T")


def decode_model(
    data: bytes, *, max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES
) -> DecodedModel:
    """Decode a compressed-model file to CPU tensors; raises a FormatError if invalid.

    Refuses (DecodedTooLarge) a file whose tensors would take more than ``max_decoded_bytes``
    bytes, judged from the header before any tensor is allocated; None means no limit beyond
    the format's own (2**28 elements).
    """
    limit = _check_limit(max_decoded_bytes)
    parsed = parse_file(data)
    _check_decoded_size(parsed.records, limit)
    state_dict: dict[str, torch.Tensor] = {}
    for record in parsed.records:
        try:
            if isinstance(record, RawRecord):
                state_dict[record.name] = _decode_raw(record, parsed.payload)
            else:
                state_dict[record.name] = _decode_huffman(record, parsed.payload)
        except FormatError as err:
            raise type(err)(f"tensor {quoted(record.name)}: {err}") from err
    layers = [record.info() for record in parsed.records]
    return DecodedModel(parsed.arch, parsed.provenance, state_dict, layers, parsed.input)


def read_info(data: bytes) -> FileInfo:
    """Validate framing, header and checksums and report per-tensor sizes without decoding."""
    parsed = parse_file(data)
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
        input=parsed.input,
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


def _check_decoded_size(records: list[Record], limit: int | None) -> None:
    """Raise DecodedTooLarge if the declared tensors need more than ``limit`` bytes."""
    total = sum(record.decoded_bytes for record in records)
    if limit is not None and total > limit:
        raise DecodedTooLarge(
            f"file decodes to {total} bytes of tensors, over the max_decoded_bytes limit of "
            f"{limit} bytes; if you trust the file, pass a larger max_decoded_bytes",
            total,
            limit,
        )


def _decode_raw(record: RawRecord, payload: memoryview) -> torch.Tensor:
    """The stored items bit for bit in the record's dtype; bool bytes must be 0 or 1."""
    torch_dtype, size = DTYPES[record.dtype]
    int_dtype, code = BIT_VIEWS[size]
    count = record.numel if record.rows is None else record.rows.kept
    items = _items(payload, record.data.offset, count, code)
    if torch_dtype == torch.bool and items.size and int(items.max()) > 1:
        bad = int(np.flatnonzero(items > 1)[0])
        raise InvalidValue(
            f"bool item {bad} is byte 0x{int(items[bad]):02x}; bool bytes must be 0x00 or 0x01"
        )
    if record.rows is not None:
        items = _on_kept_rows(items, record.rows, record.numel, payload)
    tensor = torch.from_numpy(items).view(int_dtype).view(torch_dtype)
    return tensor.reshape(record.shape)


def _on_kept_rows(
    items: np.ndarray, rows: KeptRows, numel: int, payload: memoryview
) -> np.ndarray:
    """The kept rows' items in place, zero bytes elsewhere (the mask was checked with its
    tensor, decoded before this one)."""
    raw = np.frombuffer(payload, dtype=np.uint8, count=rows.mask.length, offset=rows.mask.offset)
    kept = np.flatnonzero(np.unpackbits(raw, bitorder="big")[:numel])
    out = np.zeros(numel, dtype=items.dtype)
    out[kept] = items
    return out


def _items(payload: memoryview, offset: int, count: int, code: str) -> np.ndarray:
    """``count`` little-endian items at ``offset``, copied into a native-order writable array."""
    native = np.dtype(code).newbyteorder("=")
    if count == 0:
        return np.zeros(0, dtype=native)
    return np.frombuffer(payload, dtype=code, count=count, offset=offset).astype(native)


def _decode_huffman(record: HuffmanRecord, payload: memoryview) -> torch.Tensor:
    """Validate both code tables, then both paddings, place the weights, then allocate the tensor.

    Per-symbol memory is spent only on streams whose symbols each cost at least one coded bit;
    zero-bit streams become a slice and a scalar, so header counts alone allocate nothing.
    """
    if record.rows is not None:
        return _decode_coded_rows(record, record.rows, payload)
    kept = None if record.units is None else _kept_units(record, record.units, payload)
    centroids = (_halves if record.half_codebook else _floats)(payload, record.codebook)
    bits = record.index_bits
    index_code = _labelled("index stream", _load_code, record.index, payload, bits, 1 << bits)
    weight_code = _labelled(
        "weights", _load_code, record.weight, payload, record.weight_bits, centroids.size
    )
    index = _labelled("index stream", _load_stream, record.index, payload, index_code)
    weight = _labelled("weights", _load_stream, record.weight, payload, weight_code)
    if record.index.arith:
        symbols = _labelled("index stream", arith_decode, index.bits, index.n_symbols, 1 << bits)
        positions = _labelled("index stream", _arith_positions, symbols, record)
    else:
        positions = _positions(index, record)
    if record.weight.arith:
        labels = _labelled("weights", arith_decode, weight.bits, weight.n_symbols, centroids.size)
        values = centroids[labels]
    else:
        values = _labelled("weights", _weight_values, weight, centroids)
    stored = np.zeros(record.stored_numel, dtype=np.float32)
    stored[positions] = values
    if kept is None:
        return torch.from_numpy(stored.reshape(record.shape))
    rows, cols = kept
    dense = np.zeros(record.shape, dtype=np.float32)
    dense[np.ix_(rows, cols)] = stored.reshape(rows.size, cols.size, *record.shape[2:])
    return torch.from_numpy(dense)


def _decode_coded_rows(record: HuffmanRecord, rows: KeptRows, payload: memoryview) -> torch.Tensor:
    """A tensor over an earlier tensor's kept rows (version 7): one weight symbol per kept row,
    in row order; the other rows are +0.0. No index stream."""
    centroids = (_halves if record.half_codebook else _floats)(payload, record.codebook)
    weight_code = _labelled(
        "weights", _load_code, record.weight, payload, record.weight_bits, centroids.size
    )
    weight = _labelled("weights", _load_stream, record.weight, payload, weight_code)
    if record.weight.arith:
        labels = _labelled("weights", arith_decode, weight.bits, weight.n_symbols, centroids.size)
        values = centroids[labels]
    else:
        values = _labelled("weights", _weight_values, weight, centroids)
    items = np.ascontiguousarray(np.broadcast_to(values, (record.nnz,)), dtype=np.float32)
    placed = _on_kept_rows(items.view(np.uint32), rows, record.numel, payload)
    return torch.from_numpy(placed.view(np.float32).reshape(record.shape))


def _kept_units(
    record: HuffmanRecord, units: UnitsRecord, payload: memoryview
) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the kept rows and columns; padding bits must be 0 and counts as declared."""
    rows = _mask_indices("rows", units.rows, record.shape[0], units.kept_rows, payload)
    columns = units.columns
    if columns is None:
        cols = _mask_indices("cols", units.cols, record.shape[1], units.kept_cols, payload)
        return rows, cols
    if units.cols.length:
        picked = _mask_indices("cols", units.cols, columns.candidates, units.kept_cols, payload)
    else:
        picked = np.arange(units.kept_cols) if record.numel else None
    if picked is None or not record.numel:  # nothing to place: no column indices are built
        return rows, np.broadcast_to(np.int64(0), (units.kept_cols,))
    owner = _mask_indices("owner rows", columns.mask, columns.rows, columns.kept, payload)
    return rows, owner[picked // columns.block] * columns.block + picked % columns.block


def _mask_indices(what: str, span: Span, dim: int, count: int, payload: memoryview) -> np.ndarray:
    """Indices of the 1 bits of a units mask of ``dim`` bits (zero padding, ``count`` ones)."""
    raw = np.frombuffer(payload, dtype=np.uint8, count=span.length, offset=span.offset)
    flags = np.unpackbits(raw, bitorder="big")
    if flags[dim:].any():
        raise CorruptStream(f"units {what} mask: padding bits after unit {dim} are not zero")
    indices = np.flatnonzero(flags[:dim])
    if indices.size != count:
        raise CorruptStream(
            f"units {what} mask keeps {indices.size} units but the header declares {count}"
        )
    return indices


def _positions(stream: HuffmanStream, record: HuffmanRecord) -> slice | np.ndarray:
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


def _arith_positions(symbols: np.ndarray, record: HuffmanRecord) -> np.ndarray:
    """Flat positions of an arithmetic-coded index stream's symbols; exactly nnz of them."""
    placed = decode_positions(symbols, record.index_bits, record.stored_numel)
    if placed.size != record.nnz:
        raise CorruptStream(
            f"index stream places {placed.size} weights but the header declares nnz={record.nnz}"
        )
    return placed


def _weight_values(stream: HuffmanStream, centroids: np.ndarray) -> np.float32 | np.ndarray:
    """The centroid of each weight; one scalar for a zero-bit stream (its count equals nnz)."""
    repeated = zero_bit_symbol(stream, centroids.size)
    if repeated is not None:
        return centroids[repeated]
    return centroids[decode_symbols(stream, centroids.size)]


def _floats(payload: memoryview, span: Span) -> np.ndarray:
    """The float32 items of ``span``, bit for bit."""
    return _items(payload, span.offset, span.length // FLOAT_BYTES, "<i4").view(np.float32)


def _halves(payload: memoryview, span: Span) -> np.ndarray:
    """The float16 items of ``span`` as the float32 of equal value, bit for bit (a NaN keeps its
    sign and its payload, shifted up 13 bits, whatever the CPU's conversion does with NaNs)."""
    half = _items(payload, span.offset, span.length // HALF_BYTES, "<u2")
    bits = half.view(np.float16).astype(np.float32).view(np.uint32)
    nan = (half & 0x7C00 == 0x7C00) & (half & 0x03FF != 0)
    wide = half.astype(np.uint32)
    bits[nan] = (wide[nan] & 0x8000) << 16 | 0x7F800000 | (wide[nan] & 0x03FF) << 13
    return bits.view(np.float32)


def _labelled(what: str, function: Callable[..., _T], *args: object) -> _T:
    """Call ``function``, prefixing the message of any FormatError it raises with ``what``."""
    try:
        return function(*args)
    except FormatError as err:
        raise type(err)(f"{what}: {err}") from err


def _load_code(
    record: StreamRecord, payload: memoryview, symbol_bits: int, alphabet_size: int
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """Parse and validate a stream's code table (InvalidCode); reads no stream bits. An
    arithmetic-coded stream has none (its empty code stands in)."""
    if record.arith:
        return (), ()
    table = payload[record.table.offset : record.table.offset + record.table.length]
    count, symbols = decode_table(bytes(table), symbol_bits)
    validate_code(count, symbols, alphabet_size)
    return count, symbols


def _load_stream(
    record: StreamRecord, payload: memoryview, code: tuple[tuple[int, ...], tuple[int, ...]]
) -> HuffmanStream:
    """A validated code with its stream bits, whose padding must be zero; decodes no symbols."""
    bits = bitarray(endian="big")
    bits.frombytes(payload[record.stream.offset : record.stream.offset + record.stream.length])
    if bits[record.bits :].any():
        raise CorruptStream("stream padding bits after the last code are not zero")
    del bits[record.bits :]
    return HuffmanStream(code[0], code[1], frozenbitarray(bits), record.symbols)
