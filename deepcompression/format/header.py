"""The header schema: the parsed JSON checked field by field, in document order, into records.

Every rule of FORMAT.md's "Header" section and its limits is checked here (MalformedHeader), in
the order the document lists them; nothing is read from the payload.
"""

from __future__ import annotations

import dataclasses
import math

from deepcompression.format.arith import MAX_ARITH_ALPHABET, MAX_ARITH_SYMBOLS
from deepcompression.format.errors import MalformedHeader
from deepcompression.format.huffman import MAX_SYMBOL_BITS
from deepcompression.format.records import (
    ColumnsOf,
    HuffmanRecord,
    KeptRows,
    RawRecord,
    Record,
    Span,
    StreamRecord,
    UnitsRecord,
    stored_numel,
)
from deepcompression.format.sparse_index import filler_symbol
from deepcompression.format.spec import (
    BINARY_HEADER_VERSION,
    CODEBOOK_FLOAT16,
    CODED_ROWS_VERSION,
    CODER_ARITH,
    DTYPES,
    FLOAT_BYTES,
    HALF_BYTES,
    HALF_CODEBOOK_VERSION,
    KIND_HUFFMAN,
    KIND_RAW,
    LINKED_VERSION,
    MAX_FILE_ARITH_SYMBOLS,
    MAX_JSON_INT,
    MAX_NDIM,
    MAX_NONZERO_PRODUCT,
    MAX_TOTAL_NUMEL,
    RAW_DTYPES,
    UNITS_VERSION,
)

__all__ = ["parse_header", "arch_problem", "quoted"]


def arch_problem(arch: dict) -> str | None:
    """Why a version-2 ``arch`` is invalid, or None: name must be a str, kwargs a dict."""
    if "name" in arch and not isinstance(arch["name"], str):
        return f"arch 'name' must be a string, got {type(arch['name']).__name__}"
    if "kwargs" in arch and not isinstance(arch["kwargs"], dict):
        return f"arch 'kwargs' must be an object/dict, got {type(arch['kwargs']).__name__}"
    return None


def quoted(name: str) -> str:
    """repr() of a name for messages, cut to a readable length."""
    return repr(name) if len(name) <= 80 else f"{name[:60]!r}... ({len(name)} characters)"


_TOP_KEYS = frozenset({"arch", "provenance", "tensors"})
_RAW_KEYS = {
    1: frozenset({"kind", "name", "shape", "data"}),
    2: frozenset({"kind", "name", "shape", "dtype", "data"}),
    3: frozenset({"kind", "name", "shape", "dtype", "data"}),
    4: frozenset({"kind", "name", "shape", "dtype", "data"}),
    5: frozenset({"kind", "name", "shape", "dtype", "data"}),
    6: frozenset({"kind", "name", "shape", "dtype", "data"}),
    7: frozenset({"kind", "name", "shape", "dtype", "data"}),
    8: frozenset({"kind", "name", "shape", "dtype", "data"}),
}
_ROWS_KEY = "rows_of"
"""Version 4: a 1-D raw tensor stored over the kept rows of an earlier tensor with units."""
_HUFFMAN_KEYS = frozenset(
    {"kind", "name", "shape", "nnz", "weight_bits", "index_bits", "codebook", "index", "weight"}
)
_HALF_KEY = "codebook_dtype"
"""Version 6: a Huffman tensor's codebook stored as float16 (the key's only value)."""
_STREAM_KEYS = frozenset({"table", "stream", "bits", "symbols"})
_UNITS_KEYS = frozenset({"rows", "cols", "kept_rows", "kept_cols"})
_COLS_KEY = "cols_of"
"""Version 8: the units' columns mask runs over the column blocks of an earlier tensor's kept
rows."""


def parse_header(header: object, version: int) -> tuple[dict, dict, list[Record]]:
    """arch, provenance and the tensor records, every schema rule and limit checked."""
    top = _object(header, _TOP_KEYS, "header")
    arch, provenance, tensors = top["arch"], top["provenance"], top["tensors"]
    if not isinstance(arch, dict) or not isinstance(provenance, dict):
        raise MalformedHeader("header 'arch' and 'provenance' must be JSON objects")
    if version >= 2 and (problem := arch_problem(arch)):
        raise MalformedHeader(f"header {problem}")
    if not isinstance(tensors, list):
        raise MalformedHeader("header 'tensors' must be a JSON array")
    records: list[Record] = []
    names: set[str] = set()
    total = arith = 0
    for position, entry in enumerate(tensors):
        record = _parse_tensor(entry, f"tensors[{position}]", version, records)
        if record.name in names:
            raise MalformedHeader(f"tensor name {quoted(record.name)} appears twice in the header")
        names.add(record.name)
        total += record.numel
        if total > MAX_TOTAL_NUMEL:
            raise MalformedHeader(f"tensors hold more than {MAX_TOTAL_NUMEL} elements in total")
        arith += record.arith_symbols if isinstance(record, HuffmanRecord) else 0
        if arith > MAX_FILE_ARITH_SYMBOLS:
            raise MalformedHeader(
                f"streams hold more than {MAX_FILE_ARITH_SYMBOLS} arithmetic-coded symbols"
            )
        records.append(record)
    return arch, provenance, records


def _parse_tensor(entry: object, where: str, version: int, earlier: list[Record]) -> Record:
    """One tensor record: kind, keys, name and shape, then the kind's own fields."""
    kind = entry.get("kind") if isinstance(entry, dict) else None
    if kind == KIND_RAW:
        with_rows = version >= BINARY_HEADER_VERSION and _ROWS_KEY in entry
        obj = _object(entry, _RAW_KEYS[version] | {_ROWS_KEY} if with_rows else _RAW_KEYS[version],
                      where)  # fmt: skip
    elif kind == KIND_HUFFMAN:
        keys = set(_HUFFMAN_KEYS)
        keys |= {"units"} if version >= UNITS_VERSION and "units" in entry else set()
        keys |= {_HALF_KEY} if version >= HALF_CODEBOOK_VERSION and _HALF_KEY in entry else set()
        keys |= {_ROWS_KEY} if version >= CODED_ROWS_VERSION and _ROWS_KEY in entry else set()
        obj = _object(entry, keys, where)
    else:
        raise MalformedHeader(f"{where}: 'kind' must be {KIND_RAW!r} or {KIND_HUFFMAN!r}")
    name = obj["name"]
    if not isinstance(name, str) or not name:
        raise MalformedHeader(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ({quoted(name)})"
    shape = _shape(obj["shape"], where)
    numel = math.prod(shape)
    if kind == KIND_RAW:
        rows = _kept_rows(obj[_ROWS_KEY], shape, earlier, where) if _ROWS_KEY in obj else None
        return _parse_raw(obj, name, shape, numel, where, rows)
    if _ROWS_KEY in obj:
        rows = _kept_rows(obj[_ROWS_KEY], shape, earlier, where)
        return _parse_coded_rows(obj, name, shape, where, version, rows)
    return _parse_huffman(obj, name, shape, where, version, earlier)


def _parse_raw(
    obj: dict,
    name: str,
    shape: tuple[int, ...],
    numel: int,
    where: str,
    rows: KeptRows | None,
) -> RawRecord:
    """A raw record: its dtype (float32 in version 1) and a data span of the matching length
    (one item per kept row when it is stored over another tensor's kept rows)."""
    dtype = obj.get("dtype", "float32")  # version 1 has no dtype key: float32
    if type(dtype) is not str or dtype not in DTYPES:
        raise MalformedHeader(f"{where}.dtype must be one of {list(RAW_DTYPES)}, got {dtype!r:.60}")
    data = _span(obj["data"], f"{where}.data")
    size = DTYPES[dtype][1] * (numel if rows is None else rows.kept)
    if data.length != size:
        raise MalformedHeader(
            f"{where}: raw data is {data.length} bytes but {dtype} shape {list(shape)} needs {size}"
        )
    return RawRecord(name, shape, numel, data, dtype, rows)


def _owner(value: object, earlier: list[Record], where: str) -> tuple[int, HuffmanRecord]:
    """The position ``value`` names (at ``where``) and its tensor: an earlier one with removed
    units, whose kept rows a later record is stored over or whose columns it runs over."""
    tensor = _int(value, where, 0, len(earlier) - 1) if earlier else None
    owner = None if tensor is None else earlier[tensor]
    if tensor is None or not isinstance(owner, HuffmanRecord) or owner.units is None:
        raise MalformedHeader(
            f"{where} must be the position of an earlier tensor with removed units"
        )
    return tensor, owner


def _kept_rows(
    value: object, shape: tuple[int, ...], earlier: list[Record], where: str
) -> KeptRows:
    """The earlier tensor with removed units whose kept rows a 1-D raw tensor is stored over."""
    tensor, owner = _owner(value, earlier, f"{where}.{_ROWS_KEY}")
    if shape != owner.shape[:1]:
        raise MalformedHeader(
            f"{where}: shape {list(shape)} must be [{owner.shape[0]}], the rows of tensor "
            f"{quoted(owner.name)}"
        )
    return KeptRows(tensor, owner.units.rows, owner.units.kept_rows)


def _parse_huffman(
    obj: dict,
    name: str,
    shape: tuple[int, ...],
    where: str,
    version: int,
    earlier: list[Record],
    nnz_range: tuple[int, int] | None = None,
) -> HuffmanRecord:
    """A Huffman record: units, nnz, bit widths, codebook size and both streams' declared counts.

    Counts are bounded by the stored (compacted, when units are removed) element count; with
    ``nnz_range`` (a tensor over kept rows) nnz is in it and the index stream holds no symbol."""
    units = None
    if "units" in obj:
        units = _units(obj["units"], shape, f"{where}.units", version, earlier)
    numel = stored_numel(shape, units)
    low, high = (0, numel) if nnz_range is None else nnz_range
    nnz = _int(obj["nnz"], f"{where}.nnz", low, high)
    weight_bits = _int(obj["weight_bits"], f"{where}.weight_bits", 1, MAX_SYMBOL_BITS)
    index_bits = _int(obj["index_bits"], f"{where}.index_bits", 1, MAX_SYMBOL_BITS)
    codebook = _span(obj["codebook"], f"{where}.codebook")
    half = _HALF_KEY in obj
    if half and obj[_HALF_KEY] != CODEBOOK_FLOAT16:
        raise MalformedHeader(f"{where}.{_HALF_KEY} must be {CODEBOOK_FLOAT16!r} when present")
    item = HALF_BYTES if half else FLOAT_BYTES
    if codebook.length % item or codebook.length // item > 1 << weight_bits:
        raise MalformedHeader(
            f"{where}: codebook of {codebook.length} bytes is not {item}*k with "
            f"k <= 2**{weight_bits}"
        )
    max_index = nnz + numel // filler_symbol(index_bits) if nnz else 0
    index_range = (nnz, max_index) if nnz_range is None else (0, 0)
    k = codebook.length // item
    index = _stream(obj["index"], f"{where}.index", *index_range, version, 1 << index_bits)
    weight = _stream(obj["weight"], f"{where}.weight", nnz, nnz, version, k)
    return HuffmanRecord(
        name, shape, math.prod(shape), nnz, weight_bits, index_bits, codebook, index, weight, units,
        half,
    )  # fmt: skip


def _parse_coded_rows(
    obj: dict, name: str, shape: tuple[int, ...], where: str, version: int, rows: KeptRows
) -> HuffmanRecord:
    """A Huffman tensor over an earlier tensor's kept rows (version 7): one weight symbol per
    kept row, no units and an empty index stream (index_bits 1, no table, no bits, no symbols)."""
    if "units" in obj:
        raise MalformedHeader(f"{where}: a tensor over kept rows has no units of its own")
    record = _parse_huffman(obj, name, shape, where, version, [], (rows.kept, rows.kept))
    index = record.index
    if (
        record.index_bits != 1
        or index.arith
        or (index.table.length, index.stream.length, index.bits, index.symbols) != (0, 0, 0, 0)
    ):
        raise MalformedHeader(
            f"{where}: a tensor over kept rows has index_bits 1 and an empty index stream "
            "(no table, no bits, no symbols)"
        )
    return dataclasses.replace(record, rows=rows)


def _units(
    value: object, shape: tuple[int, ...], where: str, version: int, earlier: list[Record]
) -> UnitsRecord:
    """A units object: two bit-mask spans sized by dimensions 0 and 1 (version 8, ``cols_of``:
    the columns mask over an earlier tensor's kept rows' column blocks), and their kept counts."""
    linked = version >= LINKED_VERSION and isinstance(value, dict) and _COLS_KEY in value
    obj = _object(value, _UNITS_KEYS | {_COLS_KEY} if linked else _UNITS_KEYS, where)
    if len(shape) < 2:
        raise MalformedHeader(f"{where}: removed units need a tensor of at least 2 dimensions")
    rows = _span(obj["rows"], f"{where}.rows")
    cols = _span(obj["cols"], f"{where}.cols")
    if rows.length != (shape[0] + 7) // 8:
        raise MalformedHeader(
            f"{where}.rows: mask of {rows.length} bytes, but {shape[0]} units need "
            f"{(shape[0] + 7) // 8}"
        )
    kept_rows = _int(obj["kept_rows"], f"{where}.kept_rows", 0, shape[0])
    columns = _columns_of(obj[_COLS_KEY], shape, earlier, where) if linked else None
    candidates = shape[1] if columns is None else columns.candidates
    kept_cols = _int(obj["kept_cols"], f"{where}.kept_cols", 0, candidates)
    need = 0 if columns is not None and kept_cols == candidates else (candidates + 7) // 8
    if cols.length != need:
        raise MalformedHeader(
            f"{where}.cols: mask of {cols.length} bytes, but {candidates} "
            f"{'candidate columns' if columns else 'units'} with {kept_cols} kept need {need}"
        )
    return UnitsRecord(rows, cols, kept_rows, kept_cols, columns)


def _columns_of(
    value: object, shape: tuple[int, ...], earlier: list[Record], where: str
) -> ColumnsOf:
    """Version 8: the earlier tensor with removed units whose kept rows' column blocks (shape[1]
    a positive multiple of its rows) are this tensor's candidate columns."""
    tensor, owner = _owner(value, earlier, f"{where}.{_COLS_KEY}")
    blocks = owner.shape[0]
    if blocks < 1 or shape[1] < blocks or shape[1] % blocks:
        raise MalformedHeader(
            f"{where}: {shape[1]} columns are not a positive multiple of the {blocks} rows of "
            f"tensor {quoted(owner.name)}"
        )
    return ColumnsOf(tensor, owner.units.rows, blocks, owner.units.kept_rows, shape[1] // blocks)


def _stream(
    value: object, where: str, min_symbols: int, max_symbols: int, version: int, alphabet: int
) -> StreamRecord:
    """A stream object: spans, bit count backed by the stream bytes, symbol count in range; an
    arithmetic-coded one (version 4) has no table, few symbols and a small alphabet."""
    arith = version >= BINARY_HEADER_VERSION and isinstance(value, dict) and "coder" in value
    obj = _object(value, _STREAM_KEYS | {"coder"} if arith else _STREAM_KEYS, where)
    table = _span(obj["table"], f"{where}.table")
    stream = _span(obj["stream"], f"{where}.stream")
    bits = _int(obj["bits"], f"{where}.bits", 0, 8 * stream.length)
    if stream.length != (bits + 7) // 8:
        raise MalformedHeader(
            f"{where}: stream of {stream.length} bytes does not hold exactly {bits} bits "
            "plus < 8 padding bits"
        )
    symbols = _int(obj["symbols"], f"{where}.symbols", min_symbols, max_symbols)
    if arith and (
        obj["coder"] != CODER_ARITH
        or table.length
        or symbols > MAX_ARITH_SYMBOLS
        or not 1 <= alphabet <= MAX_ARITH_ALPHABET
    ):
        raise MalformedHeader(
            f"{where}: an arithmetic-coded stream has no table, at most {MAX_ARITH_SYMBOLS} "
            f"symbols and an alphabet of 1 to {MAX_ARITH_ALPHABET} (got coder "
            f"{obj['coder']!r:.20}, table {table.length} B, {symbols} symbols, alphabet {alphabet})"
        )
    return StreamRecord(table, stream, bits, symbols, arith)


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


def _span(value: object, where: str) -> Span:
    """An [offset, length] pair of integers in [0, 2**53 - 1]."""
    if not isinstance(value, list) or len(value) != 2:
        raise MalformedHeader(f"{where} must be [offset, length]")
    offset = _int(value[0], f"{where}[0]", 0, MAX_JSON_INT)
    return Span(offset, _int(value[1], f"{where}[1]", 0, MAX_JSON_INT))


def _shape(value: object, where: str) -> tuple[int, ...]:
    """Each dimension in [0, 2**28], their product at most 2**28 and, when one is 0, the product
    of the others at most 2**59 (an empty tensor's sizes then fit 64-bit arithmetic)."""
    if not isinstance(value, list) or len(value) > MAX_NDIM:
        raise MalformedHeader(f"{where}.shape must be a list of at most {MAX_NDIM} integers")
    dims = tuple(_int(d, f"{where}.shape", 0, MAX_TOTAL_NUMEL) for d in value)
    if math.prod(dims) > MAX_TOTAL_NUMEL:
        raise MalformedHeader(f"{where}: shape {list(dims)} exceeds {MAX_TOTAL_NUMEL} elements")
    if math.prod(d for d in dims if d) > MAX_NONZERO_PRODUCT:
        raise MalformedHeader(
            f"{where}: shape {list(dims)} has a 0 but its other dimensions multiply to more than "
            f"{MAX_NONZERO_PRODUCT}, the cap for an empty tensor"
        )
    return dims
