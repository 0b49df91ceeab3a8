"""Reading the binary header (versions 4 to 8): varints, one string table and typed values.

``binwriter.dump_header`` writes the header object (arch, provenance, tensor records with spans)
as bytes; ``load_header`` reads them back to the same object, spans rebuilt from the section
lengths (the sections tile the payload, so no offset is stored), for ``header.parse_header`` to
check. Every count is bounded by the bytes left before anything is built, so the parse costs
what the header's bytes pay for (MalformedHeader otherwise). The tag and constant tables here
are shared with the writer.
"""

from __future__ import annotations

import math
import struct

from deepcompression.format.errors import MalformedHeader
from deepcompression.format.info import InputMeta
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
    MAX_CLASSES,
    MAX_IMAGE_SIZE,
    MAX_INPUT_CHANNELS,
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    MAX_NDIM,
    RAW_DTYPES,
    SHORT_VALUES_VERSION,
    STATIC_STRINGS,
)

__all__ = ["load_header"]

_ARG_VARINT = 31
"""A tag's 5-bit argument of 31 means "a varint follows, holding the argument (>= 31)"."""
_STATIC, _UINT, _NEGINT, _ARRAY, _OBJECT, _SIMPLE, _TABLE = range(7)
_NULL, _FALSE, _TRUE, _FLOAT, _DIGEST, _DIGEST16, _DIGEST8, _DECIMAL, _DIGEST4 = range(9)
_DIGESTS = {_DIGEST: 32, _DIGEST16: 16, _DIGEST8: 8, _DIGEST4: 4}
"""Digest tags and their byte counts: the 8- and 16-byte ones from version 5, the 4-byte one
from version 8."""
_DIGEST_TAG = {2 * size: arg for arg, size in _DIGESTS.items()}


_DIGEST_SINCE = {_DIGEST: BINARY_HEADER_VERSION, _DIGEST4: LINKED_VERSION}
"""The first version of each digest tag not defined since version 5 (the 8- and 16-byte ones)."""


def digest_since(arg: int) -> int:
    """The first version in which the digest tag argument ``arg`` is defined."""
    return _DIGEST_SINCE.get(arg, SHORT_VALUES_VERSION)


MAX_DECIMAL_EXPONENT = 400
"""Largest magnitude of a decimal number's exponent (version 5): past +-400 no finite, non-zero
binary64 has a shorter decimal form than its 8 bytes."""
_NAMES_NONE, _NAMES_LISTED, _NAMES_DIGITS = range(3)
"""Input spec class-name flags; digits (version 5): class i is named str(i)."""
_HEX = frozenset("0123456789abcdef")
_DOUBLE = struct.Struct("<d")
_RAW_TAG, _HUFFMAN_TAG, _UNITS_BIT, _ROWS_BIT = 0, 1, 0x04, 0x04
_ARITH_BITS = {"index": 0x08, "weight": 0x10}
"""Huffman-record tag bits: that stream is arithmetic-coded (no table)."""
_HUFFMAN_TAGS = frozenset(_HUFFMAN_TAG | units | i | w for units in (0, 4) for i in (0, 8)
                          for w in (0, 16))  # fmt: skip
_HALF_BIT = 0x20
"""Huffman-record tag bit (version 6): the codebook's items are float16."""
_CODED_ROWS_BIT = 0x02
"""Huffman-record tag bit (version 7): one weight per kept row of an earlier tensor."""
_COLS_OF_BIT = 0x40
"""Huffman-record tag bit (version 8, with removed units): the columns mask runs over the
columns of an earlier tensor's kept rows."""
_MAX_VARINT_BYTES = 8
_STATIC_INDEX = {text: i for i, text in enumerate(STATIC_STRINGS)}


# Reading


def _unzigzag(value: int) -> int:
    return value // 2 if value % 2 == 0 else -(value + 1) // 2


def load_header(
    data: bytes, with_input: bool = False, version: int = BINARY_HEADER_VERSION
) -> tuple[dict, InputMeta | None]:
    """The header object (arch, provenance, tensors with spans) of binary header bytes of
    ``version`` (4, 5 or 6), and the input spec they hold when ``with_input`` (the preamble's
    FLAG_INPUT_SPEC)."""
    reader = _Reader(data, version)
    strings = reader.string_table()
    arch = reader.value(strings, 1)
    provenance = reader.value(strings, 1)
    spec = reader.input_spec(strings) if with_input else None
    tensors = []
    offset = 0
    for _ in reader.counted(reader.varint("tensor count"), 3, "tensors"):
        record, offset = reader.record(strings, offset, tensors)
        tensors.append(record)
    if reader.pos != len(data):
        raise MalformedHeader(f"{len(data) - reader.pos} bytes follow the last tensor record")
    if unused := [s for s, used in zip(strings.table, strings.used, strict=True) if not used]:
        raise MalformedHeader(f"string table entry {unused[0][:60]!r} is never referenced")
    return {"arch": arch, "provenance": provenance, "tensors": tensors}, spec


class _Strings:
    """The static strings, the file's string table, and which table entries were referenced."""

    def __init__(self, table: list[str]) -> None:
        self.table = table
        self.used = [False] * len(table)

    def get(self, index: int, what: str) -> str:
        if index < len(STATIC_STRINGS):
            return STATIC_STRINGS[index]
        index -= len(STATIC_STRINGS)
        if index >= len(self.table):
            raise MalformedHeader(
                f"{what}: string reference {index + len(STATIC_STRINGS)} is past the "
                f"{len(STATIC_STRINGS)} static and {len(self.table)} table strings"
            )
        self.used[index] = True
        return self.table[index]


class _Reader:
    """A cursor over the header bytes; every read is checked against the bytes left."""

    def __init__(self, data: bytes, version: int) -> None:
        self.data = data
        self.pos = 0
        self.short = version >= SHORT_VALUES_VERSION
        """Version 5: short digests, decimal numbers and digit class names are defined."""
        self.half = version >= HALF_CODEBOOK_VERSION
        """Version 6: a Huffman record's tag may say its codebook is float16."""
        self.coded_rows = version >= CODED_ROWS_VERSION
        """Version 7: a Huffman record may be stored over an earlier tensor's kept rows."""
        self.linked = version >= LINKED_VERSION
        """Version 8: 4-byte digests, derived names and columns over an earlier tensor's rows."""
        self.digests = frozenset(arg for arg in _DIGESTS if version >= digest_since(arg))
        """The digest tag arguments this version defines."""

    def take(self, size: int, what: str) -> bytes:
        if size > len(self.data) - self.pos:
            raise MalformedHeader(f"header ends inside {what} (needs {size} more bytes)")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def byte(self, what: str) -> int:
        return self.take(1, what)[0]

    def varint(self, what: str) -> int:
        """Unsigned LEB128 in its shortest form, at most 8 bytes and 2**53 - 1."""
        value = 0
        for shift in range(0, 7 * _MAX_VARINT_BYTES, 7):
            byte = self.byte(what)
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                if byte == 0 and shift:
                    raise MalformedHeader(f"{what}: varint is not in its shortest form")
                if value > MAX_JSON_INT:
                    raise MalformedHeader(f"{what}: varint {value} exceeds 2**53 - 1")
                return value
        raise MalformedHeader(f"{what}: varint longer than {_MAX_VARINT_BYTES} bytes")

    def counted(self, count: int, min_bytes: int, what: str) -> range:
        """range(count), refused when ``count`` items of ``min_bytes`` each cannot fit."""
        if count * min_bytes > len(self.data) - self.pos:
            raise MalformedHeader(
                f"{what}: {count} items cannot fit in the {len(self.data) - self.pos} bytes left"
            )
        return range(count)

    def string_table(self) -> _Strings:
        """Distinct UTF-8 strings (surrogates allowed), none of them a static string."""
        table: list[str] = []
        seen: set[str] = set()
        for i in self.counted(self.varint("string count"), 1, "string table"):
            raw = self.take(self.varint(f"string {i} length"), f"string {i}")
            try:
                text = raw.decode("utf-8", "surrogatepass")
            except UnicodeDecodeError as err:
                raise MalformedHeader(f"string {i} is not UTF-8: {err}") from err
            if text in seen or text in _STATIC_INDEX:
                raise MalformedHeader(f"string {i} {text[:60]!r} is already a header string")
            seen.add(text)
            table.append(text)
        return _Strings(table)

    def tag(self, what: str) -> tuple[int, int]:
        byte = self.byte(what)
        major, arg = byte >> 5, byte & 0x1F
        if arg == _ARG_VARINT:
            arg = self.varint(what)
            if arg < _ARG_VARINT:
                raise MalformedHeader(f"{what}: tag argument {arg} must be inline (below 31)")
        return major, arg

    def value(self, strings: _Strings, depth: int) -> object:
        """One typed value at ``depth`` (arrays and objects at most 64 deep); arch and
        provenance (depth 1) must be objects."""
        major, arg = self.tag("value tag")
        if major in (_ARRAY, _OBJECT) and depth > MAX_JSON_DEPTH:
            raise MalformedHeader(f"arrays/objects nest deeper than {MAX_JSON_DEPTH} levels")
        if depth == 1 and major != _OBJECT:
            raise MalformedHeader("header 'arch' and 'provenance' must be objects")
        if major == _STATIC and arg < len(STATIC_STRINGS):
            return STATIC_STRINGS[arg]
        if major == _TABLE:
            return strings.get(len(STATIC_STRINGS) + arg, "string value")
        if major in (_UINT, _NEGINT):
            if arg > MAX_JSON_INT or (major == _NEGINT and arg >= MAX_JSON_INT):
                raise MalformedHeader("integer value exceeds 2**53 - 1 in magnitude")
            return arg if major == _UINT else -1 - arg
        if major == _ARRAY:
            return [self.value(strings, depth + 1) for _ in self.counted(arg, 1, "array")]
        if major == _OBJECT:
            return self.members(arg, strings, depth)
        if major == _SIMPLE and arg in (_NULL, _FALSE, _TRUE):
            return (None, False, True)[arg]
        if major == _SIMPLE and arg in (_FLOAT, _DECIMAL):
            return self.number(arg)
        if major == _SIMPLE and arg in self.digests:
            return self.take(_DIGESTS[arg], "digest value").hex()
        raise MalformedHeader(f"value tag 0x{major << 5 | min(arg, 31):02x} is not defined")

    def number(self, arg: int) -> float:
        """A float value's content: a finite binary64, or (version 5) a decimal m * 10**e
        rounded to the nearest binary64."""
        if arg == _FLOAT:
            number = _DOUBLE.unpack(self.take(_DOUBLE.size, "float value"))[0]
        elif self.short:
            mantissa = _unzigzag(self.varint("decimal mantissa"))
            exponent = _unzigzag(self.varint("decimal exponent"))
            if abs(exponent) > MAX_DECIMAL_EXPONENT:
                raise MalformedHeader(
                    f"decimal exponent {exponent} is outside [-{MAX_DECIMAL_EXPONENT}, "
                    f"{MAX_DECIMAL_EXPONENT}]"
                )
            number = float(f"{mantissa}e{exponent}")
        else:
            raise MalformedHeader(f"value tag 0x{_SIMPLE << 5 | arg:02x} is not defined")
        if not math.isfinite(number):
            raise MalformedHeader("float value is not finite (NaN and infinities are invalid)")
        return number

    def spec_number(self) -> float:
        """One input mean/std: a binary64 (version 4), or a float or decimal value (version 5)."""
        if not self.short:
            return _DOUBLE.unpack(self.take(_DOUBLE.size, "input mean/std"))[0]
        major, arg = self.tag("input mean/std")
        if major != _SIMPLE or arg not in (_FLOAT, _DECIMAL):
            raise MalformedHeader("input spec: a mean or std is not a float or decimal value")
        return self.number(arg)

    def members(self, count: int, strings: _Strings, depth: int) -> dict:
        """An object's members: keys strictly increasing by code point, so none repeats."""
        obj: dict = {}
        previous = None
        for _ in self.counted(count, 2, "object"):
            key = strings.get(self.varint("object key"), "object key")
            if previous is not None and key <= previous:
                raise MalformedHeader(
                    f"object key {key[:60]!r} is not after {previous[:60]!r} (keys are sorted "
                    "by code point, each once)"
                )
            obj[key] = self.value(strings, depth + 1)
            previous = key
        return obj

    def input_spec(self, strings: _Strings) -> InputMeta:
        """The input spec: sizes in range, finite means, positive finite stds, class names."""
        channels = self.varint("input channels")
        image_size = self.varint("input image size")
        if not 1 <= channels <= MAX_INPUT_CHANNELS or not 1 <= image_size <= MAX_IMAGE_SIZE:
            raise MalformedHeader(
                f"input spec: channels {channels} and image size {image_size} must be in "
                f"[1, {MAX_INPUT_CHANNELS}] and [1, {MAX_IMAGE_SIZE}]"
            )
        self.counted(2 * channels, 3 if self.short else _DOUBLE.size, "input mean and std")
        values = [self.spec_number() for _ in range(2 * channels)]
        mean, std = tuple(values[:channels]), tuple(values[channels:])
        if not all(map(math.isfinite, values)) or min(std) <= 0:
            raise MalformedHeader("input spec: mean and std must be finite and std > 0")
        num_classes = self.varint("input classes")
        named = self.byte("input class names flag")
        top = _NAMES_DIGITS if self.short else _NAMES_LISTED
        if not 1 <= num_classes <= MAX_CLASSES or named > top:
            raise MalformedHeader(
                f"input spec: {num_classes} classes must be in [1, {MAX_CLASSES}] and the names "
                f"flag 0 or 1{' or 2' if self.short else ''}, got {named}"
            )
        classes = None
        if named == _NAMES_DIGITS:
            classes = tuple(map(str, range(num_classes)))
        elif named:
            classes = tuple(
                strings.get(self.varint("class name"), "class name")
                for _ in self.counted(num_classes, 1, "class names")
            )
        return InputMeta(channels, image_size, mean, std, num_classes, classes)

    def record(self, strings: _Strings, offset: int, earlier: list[dict]) -> tuple[dict, int]:
        """One tensor record as the header object holds it, and the payload offset after it."""
        tag = self.byte("tensor tag")
        raw_rows = tag & 0x0F == _RAW_TAG | _ROWS_BIT and tag >> 4 < len(RAW_DTYPES)
        coded_rows = bool(tag & _CODED_ROWS_BIT) and self.coded_rows
        coded_rows = coded_rows and tag & ~(_HALF_BIT | 0x10) == 0x03
        derived = (raw_rows or coded_rows) and self.linked
        name = self.name(strings, derived=derived)
        if raw_rows:
            return self.kept_rows(name, RAW_DTYPES[tag >> 4], earlier, offset)
        if coded_rows:
            return self.coded_rows_record(name, tag, earlier, offset)
        assert name is not None  # only a record over kept rows derives its name
        ndim = self.varint("ndim")
        if ndim > MAX_NDIM:
            raise MalformedHeader(f"tensor {name[:60]!r}: {ndim} dimensions, at most {MAX_NDIM}")
        shape = [self.varint("dimension") for _ in self.counted(ndim, 1, "shape")]
        if tag & 0x0F == _RAW_TAG and tag >> 4 < len(RAW_DTYPES):
            dtype = RAW_DTYPES[tag >> 4]
            length = DTYPES[dtype][1] * math.prod(shape)
            record = {"kind": KIND_RAW, "name": name, "shape": shape, "dtype": dtype,
                      "data": [offset, length]}  # fmt: skip
            return record, offset + length
        linked = tag & _COLS_OF_BIT and tag & _UNITS_BIT and self.linked
        base = tag & ~(_HALF_BIT | (_COLS_OF_BIT if linked else 0))
        if base not in _HUFFMAN_TAGS or (tag & _HALF_BIT and not self.half):
            raise MalformedHeader(f"tensor {name[:60]!r}: tag 0x{tag:02x} is not defined")
        return self.huffman(name, shape, tag, offset, earlier)

    def owner(self, name: str | None, earlier: list[dict], over: str = "rows") -> tuple[int, dict]:
        """The earlier tensor with removed units whose kept rows a record is stored over (or, with
        ``over`` 'columns', whose rows' column blocks its columns mask runs over)."""
        tensor = self.varint(f"{over} tensor")
        owner = earlier[tensor] if tensor < len(earlier) else {}
        if "units" not in owner:
            raise MalformedHeader(
                f"tensor {(name or 'with a derived name')[:60]!r}: {over} of tensor {tensor}, "
                "which is not an earlier tensor with removed units"
            )
        return tensor, owner

    def coded_rows_record(
        self, name: str | None, tag: int, earlier: list[dict], offset: int
    ) -> tuple[dict, int]:
        """A Huffman record over an earlier tensor's kept rows (version 7): no index stream."""
        tensor, owner = self.owner(name, earlier)
        name = name or bias_name(owner["name"])
        widths = self.byte("bit widths")
        if widths & 0x0F:
            raise MalformedHeader(f"tensor {name[:60]!r}: over kept rows, the index width is 0")
        k = self.varint("codebook size")
        arith = bool(tag & _ARITH_BITS["weight"])
        table = 0 if arith else self.varint("table length")
        bits = self.varint("stream bits")
        nnz = owner["units"]["kept_rows"]
        item = HALF_BYTES if tag & _HALF_BIT else FLOAT_BYTES
        lengths = (item * k, 0, table, 0, (bits + 7) // 8)
        spans = []
        for length in lengths:
            spans.append([offset, length])
            offset += length
        record: dict = {"kind": KIND_HUFFMAN, "name": name, "shape": owner["shape"][:1],
                        "rows_of": tensor, "nnz": nnz, "weight_bits": (widths >> 4) + 1,
                        "index_bits": 1, "codebook": spans[0],
                        "index": {"table": spans[1], "stream": spans[3], "bits": 0, "symbols": 0},
                        "weight": {"table": spans[2], "stream": spans[4], "bits": bits,
                                   "symbols": nnz}}  # fmt: skip
        if tag & _HALF_BIT:
            record["codebook_dtype"] = CODEBOOK_FLOAT16
        if arith:
            record["weight"]["coder"] = CODER_ARITH
        return record, offset

    def kept_rows(
        self, name: str | None, dtype: str, earlier: list[dict], offset: int
    ) -> tuple[dict, int]:
        """A raw record stored over the kept rows of earlier tensor ``t`` (which has units)."""
        tensor, owner = self.owner(name, earlier)
        name = name or bias_name(owner["name"])
        length = DTYPES[dtype][1] * owner["units"]["kept_rows"]
        record = {"kind": KIND_RAW, "name": name, "shape": owner["shape"][:1], "dtype": dtype,
                  "rows_of": tensor, "data": [offset, length]}  # fmt: skip
        return record, offset + length

    def name(self, strings: _Strings, derived: bool = False) -> str | None:
        """Name parts joined by '.'; a part holds no '.' (each name has one encoding). No part
        (``derived``, version 8: a record over kept rows) gives None: the owner's bias name."""
        parts = [
            strings.get(self.varint("name part"), "name part")
            for _ in self.counted(self.varint("name parts"), 1, "name")
        ]
        if (not parts and not derived) or any("." in part for part in parts):
            raise MalformedHeader("a tensor name is one or more parts, none containing '.'")
        return ".".join(parts) if parts else None

    def huffman(
        self, name: str, shape: list[int], tag: int, offset: int, earlier: list[dict]
    ) -> tuple[dict, int]:
        """A Huffman record's counts, its spans laid out from ``offset`` in section order (an
        arithmetic-coded stream has no table: length 0, not stored)."""
        nnz = self.varint("nnz")
        widths = self.byte("bit widths")
        k = self.varint("codebook size")
        kept = (self.varint("kept rows"), self.varint("kept cols")) if tag & _UNITS_BIT else None
        if kept is not None and len(shape) < 2:
            raise MalformedHeader(f"tensor {name[:60]!r}: removed units need 2+ dimensions")
        cols_of = self.cols_of(name, shape, kept[1], earlier) if tag & _COLS_OF_BIT else None
        arith = [bool(tag & _ARITH_BITS[key]) for key in ("index", "weight")]
        counts = [
            (0 if coded else self.varint("table length"), self.varint("stream bits"))
            for coded in arith
        ]
        index_symbols = self.varint("index symbols")
        record: dict = {
            "kind": KIND_HUFFMAN,
            "name": name,
            "shape": shape,
            "nnz": nnz,
            "weight_bits": (widths >> 4) + 1,
            "index_bits": (widths & 0x0F) + 1,
        }
        lengths = [(HALF_BYTES if tag & _HALF_BIT else FLOAT_BYTES) * k]
        if kept is not None:
            cols = (shape[1] + 7) // 8 if cols_of is None else cols_of[1]
            lengths += [(shape[0] + 7) // 8, cols]
        lengths += [counts[0][0], counts[1][0], (counts[0][1] + 7) // 8, (counts[1][1] + 7) // 8]
        spans = []
        for length in lengths:
            spans.append([offset, length])
            offset += length
        record["codebook"] = spans[0]
        if tag & _HALF_BIT:
            record["codebook_dtype"] = CODEBOOK_FLOAT16
        if kept is not None:
            record["units"] = {"rows": spans[1], "cols": spans[2], "kept_rows": kept[0],
                               "kept_cols": kept[1]}  # fmt: skip
            if cols_of is not None:
                record["units"]["cols_of"] = cols_of[0]
        for key, table, stream, (_, bits), symbols, coded in (
            ("index", spans[-4], spans[-2], counts[0], index_symbols, arith[0]),
            ("weight", spans[-3], spans[-1], counts[1], nnz, arith[1]),
        ):
            record[key] = {"table": table, "stream": stream, "bits": bits, "symbols": symbols}
            if coded:
                record[key]["coder"] = CODER_ARITH
        return record, offset

    def cols_of(self, name: str, shape: list[int], kept_cols: int, earlier: list[dict]
                ) -> tuple[int, int]:  # fmt: skip
        """Version 8: the earlier tensor with removed units whose kept rows' column blocks this
        record's columns mask runs over, and the mask's length (0 when every candidate is kept)."""
        tensor, owner = self.owner(name, earlier, over="columns")
        blocks, cols = owner["shape"][0], shape[1]
        if blocks < 1 or cols < blocks or cols % blocks:
            raise MalformedHeader(
                f"tensor {name[:60]!r}: its {cols} columns are not a positive multiple of the "
                f"{blocks} rows of tensor {tensor}"
            )
        candidates = owner["units"]["kept_rows"] * (cols // blocks)
        if kept_cols > candidates:
            raise MalformedHeader(
                f"tensor {name[:60]!r}: keeps {kept_cols} columns of {candidates} candidates"
            )
        return tensor, 0 if kept_cols == candidates else (candidates + 7) // 8


def bias_name(owner: str) -> str:
    """Version 8: the name a record over ``owner``'s kept rows has when it stores no name parts:
    the owner's with its last part replaced by ``bias``."""
    head, dot, _ = owner.rpartition(".")
    return f"{head}{dot}bias"
