"""Writing the binary header (versions 4 to 8): varints, one string table and typed values.

``dump_header`` turns the header object (arch, provenance, the input spec, placed tensor records)
into the bytes ``binheader.load_header`` reads back; offsets are not stored (the sections tile
the payload), only each section's length.
"""

from __future__ import annotations

import math
from decimal import Decimal

from deepcompression.format.binheader import (
    _ARG_VARINT,
    _ARITH_BITS,
    _ARRAY,
    _CODED_ROWS_BIT,
    _COLS_OF_BIT,
    _DECIMAL,
    _DIGEST_TAG,
    _DOUBLE,
    _FALSE,
    _FLOAT,
    _HALF_BIT,
    _HEX,
    _HUFFMAN_TAG,
    _NAMES_DIGITS,
    _NAMES_LISTED,
    _NAMES_NONE,
    _NEGINT,
    _NULL,
    _OBJECT,
    _RAW_TAG,
    _ROWS_BIT,
    _SIMPLE,
    _STATIC,
    _STATIC_INDEX,
    _TABLE,
    _TRUE,
    _UINT,
    _UNITS_BIT,
    MAX_DECIMAL_EXPONENT,
    bias_name,
    digest_since,
)
from deepcompression.format.errors import InvalidArgument
from deepcompression.format.info import InputMeta
from deepcompression.format.spec import (
    BINARY_HEADER_VERSION,
    CODEBOOK_FLOAT16,
    FLOAT_BYTES,
    HALF_BYTES,
    KIND_HUFFMAN,
    KIND_RAW,
    LINKED_VERSION,
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    RAW_DTYPES,
    SHORT_VALUES_VERSION,
    STATIC_STRINGS,
)

__all__ = ["dump_header"]


def dump_header(
    arch: dict,
    provenance: dict,
    records: list[dict],
    spec: InputMeta | None = None,
    version: int = BINARY_HEADER_VERSION,
) -> bytes:
    """The binary header bytes (versions 4 to 8) of arch, provenance, the input spec if any (the
    preamble's FLAG_INPUT_SPEC says whether one is there) and placed tensor records. Version 5
    writes short digests, decimal numbers and digit class names where they apply; version 8
    4-byte digests and no name parts for a bias over its owner's kept rows."""
    table = _StringTable()
    body = bytearray()
    short = version >= SHORT_VALUES_VERSION
    _put_value(body, arch, table, 1, version)
    _put_value(body, provenance, table, 1, version)
    if spec is not None:
        _put_input(body, spec, table, short)
    _put_varint(body, len(records))
    derive = version >= LINKED_VERSION
    for record in records:
        owner = record.get("rows_of")
        derived = derive and owner is not None and record["name"] == bias_name(
            records[owner]["name"]
        )
        _put_record(body, record, table, derived)
    return table.encode() + bytes(body)


class _StringTable:
    """Strings of the header in first-use order, after the static ones."""

    def __init__(self) -> None:
        self._index: dict[str, int] = {}

    def ref(self, text: str) -> int:
        if text in _STATIC_INDEX:
            return _STATIC_INDEX[text]
        return self._index.setdefault(text, len(STATIC_STRINGS) + len(self._index))

    def encode(self) -> bytes:
        out = bytearray()
        _put_varint(out, len(self._index))
        for text in self._index:
            data = _utf8(text)
            _put_varint(out, len(data))
            out += data
        return bytes(out)


def _utf8(text: str) -> bytes:
    """Each code point as UTF-8, lone surrogates included (they are valid header strings)."""
    return text.encode("utf-8", "surrogatepass")


def _put_varint(out: bytearray, value: int) -> None:
    """Unsigned LEB128, at most 2**53 - 1."""
    if not 0 <= value <= MAX_JSON_INT:
        raise InvalidArgument(f"header integer {value} is outside [0, {MAX_JSON_INT}]")
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)


def _put_tag(out: bytearray, major: int, arg: int) -> None:
    if arg < _ARG_VARINT:
        out.append(major << 5 | arg)
    else:
        out.append(major << 5 | _ARG_VARINT)
        _put_varint(out, arg)


def _put_value(out: bytearray, value: object, table: _StringTable, depth: int, version: int
               ) -> None:  # fmt: skip
    """One arch/provenance value: typed tag, then its content in the forms ``version`` has."""
    if isinstance(value, list | tuple | dict) and depth > MAX_JSON_DEPTH:
        raise InvalidArgument(f"arch/provenance nest more than {MAX_JSON_DEPTH} arrays/objects")
    if value is None or isinstance(value, bool):
        _put_tag(out, _SIMPLE, {None: _NULL, False: _FALSE, True: _TRUE}[value])
    elif isinstance(value, int):
        if abs(value) > MAX_JSON_INT:
            raise InvalidArgument(f"arch/provenance integer {value} exceeds 2**53 - 1")
        _put_tag(out, _UINT, value) if value >= 0 else _put_tag(out, _NEGINT, -1 - value)
    elif isinstance(value, float):
        _put_float(out, value, version >= SHORT_VALUES_VERSION)
    elif isinstance(value, str):
        digest = _DIGEST_TAG.get(len(value)) if set(value) <= _HEX else None
        if digest is not None and version >= digest_since(digest):
            _put_tag(out, _SIMPLE, digest)
            out += bytes.fromhex(value)
        else:
            ref = table.ref(value)
            static = ref < len(STATIC_STRINGS)
            _put_tag(
                out, _STATIC if static else _TABLE, ref - (0 if static else len(STATIC_STRINGS))
            )
    elif isinstance(value, list | tuple):
        _put_tag(out, _ARRAY, len(value))
        for item in value:
            _put_value(out, item, table, depth + 1, version)
    elif isinstance(value, dict):
        if not all(isinstance(key, str) for key in value):
            raise InvalidArgument("arch/provenance objects must have str keys")
        _put_tag(out, _OBJECT, len(value))
        for key in sorted(value):
            _put_varint(out, table.ref(key))
            _put_value(out, value[key], table, depth + 1, version)
    else:
        raise InvalidArgument(
            f"arch/provenance values must be JSON-like (None, bool, int, float, str, list, "
            f"dict), got {type(value).__name__}"
        )


def _put_float(out: bytearray, value: float, short: bool) -> None:
    """A finite float: as a decimal (version 5) when its shortest round-trip digits take fewer
    bytes than the 8 of a binary64, else as the binary64."""
    if not math.isfinite(value):
        raise InvalidArgument(f"arch/provenance numbers must be finite, got {value}")
    decimal = _decimal_bytes(value) if short else None
    if decimal is not None and len(decimal) < _DOUBLE.size:
        _put_tag(out, _SIMPLE, _DECIMAL)
        out += decimal
    else:
        _put_tag(out, _SIMPLE, _FLOAT)
        out += _DOUBLE.pack(value)


def _decimal_bytes(value: float) -> bytes | None:
    """Zigzag varints of m and e with m * 10**e == value in Python's shortest round-trip form
    (repr); None for -0.0 or a zigzag mantissa past 2**53 - 1."""
    if value == 0 and math.copysign(1.0, value) < 0:
        return None
    sign, digits, exponent = Decimal(repr(value)).as_tuple()
    mantissa = int("".join(map(str, digits)))
    while mantissa and mantissa % 10 == 0:
        mantissa, exponent = mantissa // 10, exponent + 1
    if mantissa == 0:
        exponent = 0
    if 2 * mantissa > MAX_JSON_INT or abs(exponent) > MAX_DECIMAL_EXPONENT:
        return None
    out = bytearray()
    _put_varint(out, _zigzag(-mantissa if sign else mantissa))
    _put_varint(out, _zigzag(int(exponent)))
    return bytes(out)


def _zigzag(value: int) -> int:
    """0, -1, 1, -2, ... as 0, 1, 2, 3, ..."""
    return 2 * value if value >= 0 else -2 * value - 1



def _put_input(out: bytearray, spec: InputMeta, table: _StringTable, short: bool) -> None:
    """channels, image size, mean and std (binary64 each; version 5: typed numbers), class
    count, names flag, names."""
    _put_varint(out, spec.channels)
    _put_varint(out, spec.image_size)
    for value in (*spec.mean, *spec.std):
        _put_float(out, value, True) if short else out.extend(_DOUBLE.pack(value))
    _put_varint(out, spec.num_classes)
    digits = tuple(map(str, range(spec.num_classes)))
    if short and spec.classes == digits:
        out.append(_NAMES_DIGITS)
        return
    out.append(_NAMES_NONE if spec.classes is None else _NAMES_LISTED)
    for name in spec.classes or ():
        _put_varint(out, table.ref(name))


def _put_record(out: bytearray, record: dict, table: _StringTable, derived: bool) -> None:
    """One tensor record: tag, name (no parts when ``derived``), shape, then the kind's counts
    (spans become lengths)."""
    rows = record.get("rows_of")
    if record["kind"] == KIND_RAW:
        out.append(
            RAW_DTYPES.index(record["dtype"]) << 4 | _RAW_TAG | (0 if rows is None else _ROWS_BIT)
        )
    else:
        arith = sum(bit for key, bit in _ARITH_BITS.items() if record[key].get("coder"))
        half = _HALF_BIT if record.get("codebook_dtype") == CODEBOOK_FLOAT16 else 0
        form = _UNITS_BIT if "units" in record else 0 if rows is None else _CODED_ROWS_BIT
        linked = _COLS_OF_BIT if "cols_of" in record.get("units", {}) else 0
        out.append(_HUFFMAN_TAG | form | arith | half | linked)
    parts = [] if derived else record["name"].split(".")
    _put_varint(out, len(parts))
    for part in parts:
        _put_varint(out, table.ref(part))
    if rows is not None:
        _put_varint(out, rows)
        if record["kind"] == KIND_HUFFMAN:
            _put_coded_rows(out, record, half)
        return
    _put_varint(out, len(record["shape"]))
    for dim in record["shape"]:
        _put_varint(out, dim)
    if record["kind"] == KIND_HUFFMAN:
        _put_varint(out, record["nnz"])
        out.append((record["weight_bits"] - 1) << 4 | (record["index_bits"] - 1))
        _put_varint(out, record["codebook"][1] // (HALF_BYTES if half else FLOAT_BYTES))
        if "units" in record:
            _put_varint(out, record["units"]["kept_rows"])
            _put_varint(out, record["units"]["kept_cols"])
            if "cols_of" in record["units"]:
                _put_varint(out, record["units"]["cols_of"])
        for key in ("index", "weight"):
            if not record[key].get("coder"):
                _put_varint(out, record[key]["table"][1])
            _put_varint(out, record[key]["bits"])
        _put_varint(out, record["index"]["symbols"])


def _put_coded_rows(out: bytearray, record: dict, half: int) -> None:
    """A Huffman record over kept rows (version 7): widths, k and the weight stream's counts."""
    out.append((record["weight_bits"] - 1) << 4)
    _put_varint(out, record["codebook"][1] // (HALF_BYTES if half else FLOAT_BYTES))
    if not record["weight"].get("coder"):
        _put_varint(out, record["weight"]["table"][1])
    _put_varint(out, record["weight"]["bits"])
