"""A second decoder, written from docs/FORMAT.md alone, agrees with the reference on every file.

``spec_decode`` follows the document step by step with its own JSON parser, code-table parser
and bit-by-bit canonical decoder (no json, bitarray or container code). On the pinned files, the
base files of the corruption suite, thousands of their mutations and hand-built version-8 files,
both decoders must accept the same files, raise the same error class, and produce the same
tensors bit for bit.
"""

from __future__ import annotations

import collections
import dataclasses
import re
import struct
import tracemalloc
import zlib
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from spec_binary_header import binary_document
from test_container_v1 import TINY_V1_HEX, V1_FIXTURE_HEX

from benchmarks.mutation_bases import BASE_FILES, BINARY_FILES, build, dump, split
from benchmarks.mutations import MUTATORS, SEED
from deepcompression.format.container import FormatError, decode_model

MAGIC = b"\x89DCZ\r\n\x1a\n"
MIB = 1 << 20
CAP = 1 << 28
MAX_INT = (1 << 53) - 1
SIZES = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "int16": 2}
SIZES |= {"int32": 4, "int64": 8, "uint8": 1, "bool": 1}
CASES_PER_MUTATOR = 250


class Reject(Exception):
    """The file is invalid; ``kind`` is the error name FORMAT.md's order of checks gives."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.kind = kind


def fail(kind: str) -> None:
    raise Reject(kind)


# --- JSON (FORMAT.md "JSON rules") ----------------------------------------------------------

_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?", re.ASCII)
_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class JsonParser:
    def __init__(self, text: str) -> None:
        self.text, self.at, self.values = text, 0, 0

    def document(self) -> object:
        value = self.value(0)
        self.space()
        if self.at != len(self.text):
            fail("MalformedHeader")
        return value

    def space(self) -> None:
        while self.at < len(self.text) and self.text[self.at] in " \t\n\r":
            self.at += 1

    def value(self, depth: int) -> object:
        self.values += 1
        self.space()
        char = self.text[self.at : self.at + 1]
        if char in ("{", "["):
            if depth + 1 > 64:
                fail("MalformedHeader")
            return self.object(depth + 1) if char == "{" else self.array(depth + 1)
        if char == '"':
            return self.string()
        for word, result in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.at):
                self.at += len(word)
                return result
        return self.number()

    def object(self, depth: int) -> dict:
        self.at += 1
        out: dict = {}
        self.space()
        if self.text[self.at : self.at + 1] == "}":
            self.at += 1
            return out
        while True:
            self.space()
            if self.text[self.at : self.at + 1] != '"':
                fail("MalformedHeader")
            key = self.string()
            if key in out:
                fail("MalformedHeader")
            self.space()
            if self.text[self.at : self.at + 1] != ":":
                fail("MalformedHeader")
            self.at += 1
            out[key] = self.value(depth)
            if self.separator("}"):
                return out

    def array(self, depth: int) -> list:
        self.at += 1
        out: list = []
        self.space()
        if self.text[self.at : self.at + 1] == "]":
            self.at += 1
            return out
        while True:
            out.append(self.value(depth))
            if self.separator("]"):
                return out

    def separator(self, close: str) -> bool:
        self.space()
        char = self.text[self.at : self.at + 1]
        if char not in (",", close):
            fail("MalformedHeader")
        self.at += 1
        return char == close

    def number(self) -> int | float:
        match = _NUMBER.match(self.text, self.at)
        if not match:
            fail("MalformedHeader")
        token = match.group()
        self.at = match.end()
        if match.group(1) is None and match.group(2) is None:
            if len(token.lstrip("-")) > 16 or abs(int(token)) > MAX_INT:
                fail("MalformedHeader")
            return int(token)
        value = float(token)
        if value in (float("inf"), float("-inf")):
            fail("MalformedHeader")
        return value

    def string(self) -> str:
        self.at += 1
        out = []
        while True:
            if self.at >= len(self.text):
                fail("MalformedHeader")
            char = self.text[self.at]
            self.at += 1
            if char == '"':
                return "".join(out)
            if ord(char) < 0x20:
                fail("MalformedHeader")
            if char != "\\":
                out.append(char)
                continue
            code = self.text[self.at : self.at + 1]
            self.at += 1
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
            elif code == "u":
                out.append(chr(self.unicode_escape()))
            else:
                fail("MalformedHeader")

    def hex4(self) -> int:
        digits = self.text[self.at : self.at + 4]
        if len(digits) != 4 or any(d not in "0123456789abcdefABCDEF" for d in digits):
            fail("MalformedHeader")
        self.at += 4
        return int(digits, 16)

    def unicode_escape(self) -> int:
        first = self.hex4()
        if 0xD800 <= first <= 0xDBFF and self.text.startswith("\\u", self.at):
            saved = self.at
            self.at += 2
            second = self.hex4()
            if 0xDC00 <= second <= 0xDFFF:
                return 0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
            self.at = saved  # a lone high surrogate; the next escape stands alone
        return first


# --- header schema (FORMAT.md "Header") ---------------------------------------------------


def exact_keys(value: object, keys: set[str]) -> dict:
    if not isinstance(value, dict) or set(value) != keys:
        fail("MalformedHeader")
    return value  # type: ignore[return-value]


def integer(value: object, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        fail("MalformedHeader")
    return value  # type: ignore[return-value]


def span(value: object) -> tuple[int, int]:
    if not isinstance(value, list) or len(value) != 2:
        fail("MalformedHeader")
    return integer(value[0], 0, MAX_INT), integer(value[1], 0, MAX_INT)


@dataclass
class Stream:
    table: tuple[int, int]
    data: tuple[int, int]
    bits: int
    symbols: int
    arith: bool = False


def stream(value: object, low: int, high: int, version: int, alphabet: int) -> Stream:
    arith = version >= 4 and isinstance(value, dict) and "coder" in value
    obj = exact_keys(
        value, {"table", "stream", "bits", "symbols"} | ({"coder"} if arith else set())
    )
    table, data = span(obj["table"]), span(obj["stream"])
    bits = integer(obj["bits"], 0, 8 * data[1])
    if data[1] != (bits + 7) // 8:
        fail("MalformedHeader")
    symbols = integer(obj["symbols"], low, high)
    if arith and (
        obj["coder"] != "arith" or table[1] or symbols > 4096 or not 1 <= alphabet <= 256
    ):
        fail("MalformedHeader")
    return Stream(table, data, bits, symbols, arith)


def units_record(value: object, dims: list[int], version: int, earlier: list[dict]) -> dict:
    """FORMAT.md version 3: the removed-units object of a Huffman tensor; version 8: its columns
    may be the candidates over an earlier tensor's kept rows (``cols_of``)."""
    over = version >= 8 and isinstance(value, dict) and "cols_of" in value
    keys = {"rows", "cols", "kept_rows", "kept_cols"} | ({"cols_of"} if over else set())
    obj = exact_keys(value, keys)
    if len(dims) < 2:
        fail("MalformedHeader")
    rows, cols = span(obj["rows"]), span(obj["cols"])
    kept_rows = integer(obj["kept_rows"], 0, dims[0])
    owner, factor, candidates = None, 1, dims[1]
    if over:  # R = shape_t[0] >= 1, C = shape[1] a positive multiple of R, m = kept_rows_t * f
        owner = owner_of(obj["cols_of"], earlier)
        if not 1 <= owner["shape"][0] <= dims[1] or dims[1] % owner["shape"][0]:
            fail("MalformedHeader")
        factor = dims[1] // owner["shape"][0]
        candidates = owner["units"]["kept_rows"] * factor
    kept_cols = integer(obj["kept_cols"], 0, candidates)
    cols_length = 0 if over and kept_cols == candidates else (candidates + 7) // 8
    if rows[1] != (dims[0] + 7) // 8 or cols[1] != cols_length:
        fail("MalformedHeader")
    return {"rows": rows, "cols": cols, "kept_rows": kept_rows, "kept_cols": kept_cols,
            "cols_of": owner, "factor": factor, "candidates": candidates}  # fmt: skip


def tensor_record(entry: object, version: int, earlier: list[dict]) -> dict:
    if not isinstance(entry, dict) or entry.get("kind") not in ("raw", "huffman"):
        fail("MalformedHeader")
    raw_keys = {"kind", "name", "shape", "data"} | ({"dtype"} if version >= 2 else set())
    raw_keys |= {"rows_of"} if version >= 4 and "rows_of" in entry else set()
    huffman_keys = {"kind", "name", "shape", "nnz", "weight_bits", "index_bits", "codebook"}
    huffman_keys |= {"units"} if version >= 3 and "units" in entry else set()
    huffman_keys |= {"codebook_dtype"} if version >= 6 and "codebook_dtype" in entry else set()
    huffman_keys |= {"rows_of"} if version >= 7 and "rows_of" in entry else set()
    keys = raw_keys if entry["kind"] == "raw" else huffman_keys | {"index", "weight"}
    obj = exact_keys(entry, keys)
    if not isinstance(obj["name"], str) or not obj["name"]:
        fail("MalformedHeader")
    shape = obj["shape"]
    if not isinstance(shape, list) or len(shape) > 16:
        fail("MalformedHeader")
    dims = [integer(d, 0, CAP) for d in shape]
    numel = int(np.prod(dims, dtype=object)) if dims else 1
    if numel > CAP or int(np.prod([d for d in dims if d], dtype=object)) > 1 << 59:
        fail("MalformedHeader")
    record = {"name": obj["name"], "kind": obj["kind"], "shape": dims, "numel": numel}
    if obj["kind"] == "raw":
        dtype = obj.get("dtype", "float32") if version >= 2 else "float32"
        if not isinstance(dtype, str) or dtype not in SIZES:
            fail("MalformedHeader")
        rows = kept_rows_of(obj, dims, earlier) if "rows_of" in obj else None
        data = span(obj["data"])
        if data[1] != SIZES[dtype] * (numel if rows is None else rows["units"]["kept_rows"]):
            fail("MalformedHeader")
        return record | {"dtype": dtype, "sections": [data], "rows": rows}
    units = units_record(obj["units"], dims, version, earlier) if "units" in obj else None
    rows = kept_rows_of(obj, dims, earlier) if "rows_of" in obj else None  # version 7
    if rows is not None and units is not None:
        fail("MalformedHeader")
    stored = numel
    if units is not None:
        stored = units["kept_rows"] * units["kept_cols"] * int(np.prod(dims[2:], dtype=object))
    if rows is not None:
        stored = rows["units"]["kept_rows"]
    nnz = integer(obj["nnz"], stored if rows is not None else 0, stored)
    weight_bits = integer(obj["weight_bits"], 1, 16)
    index_bits = integer(obj["index_bits"], 1, 16)
    codebook = span(obj["codebook"])
    half = "codebook_dtype" in obj
    if half and obj["codebook_dtype"] != "float16":
        fail("MalformedHeader")
    item = 2 if half else 4
    if codebook[1] % item or codebook[1] // item > 1 << weight_bits:
        fail("MalformedHeader")
    filler = (1 << index_bits) - 1
    index_max = nnz + stored // filler if nnz else 0
    if rows is None:
        index = stream(obj["index"], nnz, index_max, version, 1 << index_bits)
    else:  # over kept rows: index_bits 1 and an empty Huffman index stream
        index = stream(obj["index"], 0, 0, version, 2)
        if index_bits != 1 or index.arith or index.table[1] or index.data[1] or index.bits:
            fail("MalformedHeader")
    weight = stream(obj["weight"], nnz, nnz, version, codebook[1] // item)
    masks = [] if units is None else [units["rows"], units["cols"]]
    return record | {
        "dtype": "float32",
        "units": units,
        "stored": stored,
        "nnz": nnz,
        "weight_bits": weight_bits,
        "index_bits": index_bits,
        "codebook": codebook,
        "half": half,
        "rows": rows,
        "index": index,
        "weight": weight,
        "sections": [codebook, *masks, index.table, weight.table, index.data, weight.data],
    }


def owner_of(value: object, earlier: list[dict]) -> dict:
    """The earlier tensor with removed units at position ``value``."""
    owner = integer(value, 0, len(earlier) - 1) if earlier else fail("MalformedHeader")
    if earlier[owner].get("units") is None:
        fail("MalformedHeader")
    return earlier[owner]


def kept_rows_of(obj: dict, dims: list[int], earlier: list[dict]) -> dict:
    """FORMAT.md version 4: the earlier tensor with units whose kept rows a raw tensor holds."""
    owner = owner_of(obj["rows_of"], earlier)
    if dims != owner["shape"][:1]:
        fail("MalformedHeader")
    return owner


def header_records(header: object, version: int) -> tuple[dict, dict, list[dict]]:
    top = exact_keys(header, {"arch", "provenance", "tensors"})
    arch, provenance, tensors = top["arch"], top["provenance"], top["tensors"]
    if not isinstance(arch, dict) or not isinstance(provenance, dict):
        fail("MalformedHeader")
    if version >= 2 and (
        ("name" in arch and not isinstance(arch["name"], str))
        or ("kwargs" in arch and not isinstance(arch["kwargs"], dict))
    ):
        fail("MalformedHeader")
    if not isinstance(tensors, list):
        fail("MalformedHeader")
    records, names, total, arith = [], set(), 0, 0
    for entry in tensors:
        record = tensor_record(entry, version, records)
        if record["name"] in names:
            fail("MalformedHeader")
        names.add(record["name"])
        total += record["numel"]
        if total > CAP:
            fail("MalformedHeader")
        if record["kind"] == "huffman":
            arith += sum(s.symbols for s in (record["index"], record["weight"]) if s.arith)
            if arith > 1 << 16:
                fail("MalformedHeader")
        records.append(record)
    return arch, provenance, records


# --- code tables and streams (FORMAT.md "Canonical Huffman code tables") --------------------


def code_table(raw: bytes, symbol_bits: int, alphabet: int) -> tuple | None:
    """None for "no code", ("single", s), or ("code", {(length, value): symbol}, lmin, lmax)."""
    if not raw:
        return None
    count_width = 1 if symbol_bits <= 7 else 2 if symbol_bits <= 15 else 4
    symbol_width = 1 if symbol_bits <= 8 else 2
    longest = raw[0]
    if longest > 31:
        fail("InvalidCode")
    if longest == 0:
        if len(raw) != 1 + symbol_width:
            fail("InvalidCode")
        symbol = int.from_bytes(raw[1:], "little")
        if symbol >= alphabet:
            fail("InvalidCode")
        return ("single", symbol)
    counts_end = 1 + longest * count_width
    if len(raw) < counts_end:
        fail("InvalidCode")
    counts = [0] + [
        int.from_bytes(raw[1 + i * count_width : 1 + (i + 1) * count_width], "little")
        for i in range(longest)
    ]
    total = sum(counts)
    if len(raw) != counts_end + total * symbol_width:
        fail("InvalidCode")
    if counts[longest] == 0:
        fail("InvalidCode")
    if sum(c << (longest - length) for length, c in enumerate(counts)) != 1 << longest:
        fail("InvalidCode")
    symbols = [
        int.from_bytes(
            raw[counts_end + i * symbol_width : counts_end + (i + 1) * symbol_width], "little"
        )
        for i in range(total)
    ]
    if any(s >= alphabet for s in symbols) or len(set(symbols)) != len(symbols):
        fail("InvalidCode")
    codes, code, at = {}, 0, 0
    for length in range(1, longest + 1):
        for _ in range(counts[length]):
            codes[(length, code)] = symbols[at]
            code, at = code + 1, at + 1
        code <<= 1
    used = [length for length in range(1, longest + 1) if counts[length]]
    return ("code", codes, used[0], used[-1])


def stream_bits(payload: bytes, record: Stream) -> list[int]:
    offset, length = record.data
    bits = [(byte >> (7 - k)) & 1 for byte in payload[offset : offset + length] for k in range(8)]
    if any(bits[record.bits :]):
        fail("CorruptStream")
    return bits[: record.bits]


def arith_coder(symbols: list[int], bits: list[int] | None, alphabet: int) -> list[int]:
    """FORMAT.md "Adaptive arithmetic coding": with ``bits`` None, encode ``symbols`` to bits;
    else decode ``len(symbols)`` symbols from ``bits`` (the list's values are ignored)."""
    half, quarter = 1 << 31, 1 << 30
    counts = [1] * alphabet
    low, high, pending, out = 0, (1 << 32) - 1, 0, []
    read = lambda i: bits[i] if bits is not None and i < len(bits) else 0  # noqa: E731
    value, at = sum(read(i) << (31 - i) for i in range(32)), 32
    decoded = []
    for symbol in symbols:
        r, total = high - low + 1, sum(counts)
        if bits is not None:
            t = ((value - low + 1) * total - 1) // r
            if not 0 <= t < total:
                fail("CorruptStream")
            symbol, cum = 0, counts[0]
            while cum <= t:
                symbol += 1
                cum += counts[symbol]
            decoded.append(symbol)
        below = sum(counts[:symbol])
        high = low + (r * (below + counts[symbol])) // total - 1
        low = low + (r * below) // total
        while True:
            if high < half:
                out += [0] + [1] * pending
                pending = 0
            elif low >= half:
                out += [1] + [0] * pending
                pending, low, high, value = 0, low - half, high - half, value - half
            elif low >= quarter and high < half + quarter:
                pending, low, high, value = (
                    pending + 1,
                    low - quarter,
                    high - quarter,
                    value - quarter,
                )
            else:
                break
            low, high, value, at = 2 * low, 2 * high + 1, 2 * value + read(at), at + 1
        counts[symbol] += 1
    pending += 1
    out += [0] + [1] * pending if low < quarter else [1] + [0] * pending
    if bits is None:
        return out
    if arith_coder(decoded, None, alphabet) != bits:
        fail("CorruptStream")
    return decoded


def decode_stream(code: tuple, bits: list[int], count: int) -> list[int]:
    """Exactly ``count`` symbols in exactly ``len(bits)`` bits, for a code that is not zero-bit."""
    if code is not None and code[0] == "arith":
        return arith_coder([0] * count, bits, code[1])
    if code is None:
        if count or bits:
            fail("CorruptStream")
        return []
    _, codes, shortest, longest = code
    if not shortest * count <= len(bits) <= longest * count:
        fail("CorruptStream")
    out, at = [], 0
    for _ in range(count):
        value = length = 0
        while (length, value) not in codes:
            if at >= len(bits):
                fail("CorruptStream")
            value, length, at = 2 * value + bits[at], length + 1, at + 1
        out.append(codes[(length, value)])
    if at != len(bits):
        fail("CorruptStream")
    return out


def positions(record: dict, code: tuple, bits: list[int]) -> np.ndarray:
    filler, numel = (1 << record["index_bits"]) - 1, record["stored"]
    count = record["index"].symbols
    if code is not None and code[0] == "single":
        if bits:
            fail("CorruptStream")
        if count == 0:
            placed = np.zeros(0, dtype=np.int64)
        else:
            step = code[1] + 1
            if code[1] == filler or step * count > numel:
                fail("CorruptStream")
            placed = np.arange(code[1], step * count, step)
    else:
        if count > numel:
            fail("CorruptStream")
        place, position = [], -1
        symbols = decode_stream(code, bits, count)
        for symbol in symbols:
            position += filler if symbol == filler else symbol + 1
            if symbol != filler:
                place.append(position)
        if symbols and (symbols[-1] == filler or position >= numel):
            fail("CorruptStream")
        placed = np.array(place, dtype=np.int64)
    if placed.size != record["nnz"]:
        fail("CorruptStream")
    return placed


def mask_ones(payload: bytes, where: tuple[int, int], size: int, ones: int) -> list[int]:
    """The 1 bits of a units mask of ``size`` bits: zero padding, ``ones`` of them."""
    offset, length = where
    bits = [(byte >> (7 - k)) & 1 for byte in payload[offset : offset + length] for k in range(8)]
    if any(bits[size:]) or sum(bits) != ones:
        fail("CorruptStream")
    return [i for i, bit in enumerate(bits) if bit]


def kept_units(record: dict, payload: bytes) -> tuple[list[int], list[int]] | None:
    """Indices of the kept rows and columns (the rows mask checked first), kept in the record
    for the tensors stored over them."""
    units = record["units"]
    if units is None:
        return None
    if "kept" not in record:
        rows = mask_ones(payload, units["rows"], record["shape"][0], units["kept_rows"])
        owner, factor = units["cols_of"], units["factor"]
        if owner is None:
            cols = mask_ones(payload, units["cols"], record["shape"][1], units["kept_cols"])
        else:  # version 8: bit j is candidate j, column r_(j div f) * f + j mod f
            size, ones = units["candidates"], units["kept_cols"]
            chosen = mask_ones(payload, units["cols"], size, ones) if units["cols"][1] else None
            blocks = kept_units(owner, payload)[0]  # type: ignore[index]
            if record["numel"] == 0:  # nothing is placed: no candidate is built
                cols = []
            elif chosen is None:  # an empty mask keeps every candidate
                cols = [row * factor + i for row in blocks for i in range(factor)]
            else:
                cols = [blocks[j // factor] * factor + j % factor for j in chosen]
        record["kept"] = (rows, cols)
    return record["kept"]


def half_to_single(h: int) -> int:
    """The binary32 bits of a binary16's value; a NaN keeps its sign and payload (shifted 13)."""
    sign, exponent, fraction = h >> 15, (h >> 10) & 31, h & 1023
    if exponent == 31:
        return sign << 31 | 0xFF << 23 | fraction << 13
    if exponent == 0 and fraction == 0:
        return sign << 31
    if exponent == 0:  # subnormal: fraction * 2^-24, normal in binary32
        shift = 11 - fraction.bit_length()
        return sign << 31 | (113 - shift) << 23 | ((fraction << shift) & 1023) << 13
    return sign << 31 | (exponent + 112) << 23 | fraction << 13


def huffman_tensor(record: dict, payload: bytes) -> bytes:
    kept = kept_units(record, payload)
    offset, length = record["codebook"]
    if record["half"]:  # binary16 -> binary32 bits, value for value (FORMAT.md "Version 6")
        halves = np.frombuffer(payload[offset : offset + length], "<u2")
        codebook = np.array([half_to_single(int(h)) for h in halves], dtype=np.uint32)
    else:
        codebook = np.frombuffer(payload[offset : offset + length], dtype="<u4")
    table = lambda s: payload[s.table[0] : s.table[0] + s.table[1]]  # noqa: E731
    bits, rows = record["index_bits"], record["rows"]
    index_code = None if rows else code_table(table(record["index"]), bits, 1 << bits)
    weight_code = code_table(table(record["weight"]), record["weight_bits"], codebook.size)
    if record["index"].arith:
        index_code = ("arith", 1 << bits)
    if record["weight"].arith:
        weight_code = ("arith", codebook.size)
    index_bits = stream_bits(payload, record["index"])
    weight_bits = stream_bits(payload, record["weight"])
    placed = np.arange(record["nnz"]) if rows else positions(record, index_code, index_bits)
    if weight_code is not None and weight_code[0] == "single":
        if weight_bits:
            fail("CorruptStream")
        values = codebook[[weight_code[1]] * placed.size]
    else:
        values = codebook[decode_stream(weight_code, weight_bits, record["weight"].symbols)]
    stored = np.zeros(record["stored"], dtype="<u4")
    stored[placed] = values
    if rows is not None:  # version 7: one weight per kept row of the owner, +0.0 elsewhere
        out = np.zeros(record["numel"], dtype="<u4")
        out[kept_units(rows, payload)[0]] = stored  # type: ignore[index]
        return out.tobytes()
    if kept is None:
        return stored.tobytes()
    dense = np.zeros(record["shape"], dtype="<u4")
    inner = int(np.prod(record["shape"][2:], dtype=object))
    at = 0
    for row in kept[0]:  # the compacted sub-tensor row-major: kept rows, kept columns, the rest
        for col in kept[1]:
            dense[row, col] = stored[at : at + inner].reshape(record["shape"][2:])
            at += inner
    return dense.tobytes()


# --- the file (FORMAT.md "Reader checks") -------------------------------------------------


def json_document(text: bytes, header_len: int) -> object:
    """The header object of a version 1-3 JSON header (FORMAT.md "JSON rules")."""
    try:
        decoded_text = text.decode("utf-8")
    except UnicodeDecodeError:
        fail("MalformedHeader")
    parser = JsonParser(decoded_text)
    document = parser.document()
    if parser.values > min(1 << 20, 8 * header_len):
        fail("MalformedHeader")
    return document


def spec_decode(
    data: bytes, limit: int | None = None
) -> tuple[dict, dict, list[tuple], tuple | None]:
    """(arch, provenance, [(name, dtype, shape, item bytes)], input spec), or Reject(kind)."""
    if data[: min(8, len(data))] != MAGIC[: min(8, len(data))]:
        fail("BadMagic")
    if len(data) < 28:
        fail("TruncatedFile")
    version, flags, header_len, json_len, header_crc, payload_crc = struct.unpack_from(
        "<HHIIII", data, 8
    )
    if version not in (1, 2, 3, 4, 5, 6, 7, 8) or flags & ~(3 if version >= 4 else 1):
        fail("UnsupportedVersion")
    if header_len > 16 * MIB or json_len > 16 * MIB:
        fail("HeaderTooLarge")
    if flags & 1 and json_len > 64 * header_len:
        fail("HeaderTooLarge")
    if 28 + header_len > len(data):
        fail("TruncatedFile")
    stored = data[28 : 28 + header_len]
    if zlib.crc32(stored) != header_crc:
        fail("ChecksumMismatch")
    if flags & 1:
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(stored, json_len + 1)
        except zlib.error:
            fail("MalformedHeader")
        if len(text) != json_len or not inflater.eof or inflater.unused_data:
            fail("MalformedHeader")
    else:
        if json_len != header_len:
            fail("MalformedHeader")
        text = stored
    if version < 4:
        document = json_document(text, header_len)
    else:
        document = binary_document(text, flags & 2, version)
    if document is None:
        fail("MalformedHeader")
    spec = document.pop("input", None)  # type: ignore[union-attr]
    arch, provenance, records = header_records(document, version)
    payload = data[28 + header_len :]
    expected = 0
    for record in records:
        for offset, length in record["sections"]:
            if offset != expected:
                fail("InvalidOffset")
            expected += length
    if expected > len(payload):
        fail("TruncatedFile")
    if expected < len(payload):
        fail("InvalidOffset")
    if zlib.crc32(payload) != payload_crc:
        fail("ChecksumMismatch")
    if limit is not None and sum(SIZES[r["dtype"]] * r["numel"] for r in records) > limit:
        fail("DecodedTooLarge")
    tensors = []
    for record in records:
        if record["kind"] == "raw":
            offset, length = record["sections"][0]
            items = payload[offset : offset + length]
            if record["dtype"] == "bool" and any(byte > 1 for byte in items):
                fail("InvalidValue")
            if record["rows"] is not None:  # kept rows' items in place, zero bytes elsewhere
                size = SIZES[record["dtype"]]
                rows = kept_units(record["rows"], payload)[0]  # type: ignore[index]
                out = bytearray(size * record["numel"])
                for k, row in enumerate(rows):
                    out[size * row : size * (row + 1)] = items[size * k : size * (k + 1)]
                items = bytes(out)
        else:
            items = huffman_tensor(record, payload)
        tensors.append((record["name"], record["dtype"], record["shape"], items))
    return arch, provenance, tensors, spec


# --- agreement ------------------------------------------------------------------------------

BITS_OF = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def reference_outcome(data: bytes, limit: int | None) -> object:
    try:
        decoded = decode_model(data, max_decoded_bytes=limit)
    except FormatError as err:
        return type(err).__name__
    tensors = [
        (
            name,
            str(tensor.dtype).removeprefix("torch."),
            list(tensor.shape),
            tensor.contiguous().view(BITS_OF[tensor.element_size()]).numpy().tobytes(),
        )
        for name, tensor in decoded.state_dict.items()
    ]
    spec = None if decoded.input is None else dataclasses.astuple(decoded.input)
    return decoded.arch, decoded.provenance, tensors, spec


def spec_outcome(data: bytes, limit: int | None) -> object:
    try:
        return spec_decode(data, limit)
    except Reject as reject:
        return reject.kind


def assert_agree(data: bytes, limit: int | None = None) -> str:
    expected, got = reference_outcome(data, limit), spec_outcome(data, limit)
    assert got == expected, (data[:120].hex(), expected if isinstance(expected, str) else "ok")
    return expected if isinstance(expected, str) else "decoded"


def test_pinned_and_base_files_agree() -> None:
    files = [bytes.fromhex(TINY_V1_HEX), bytes.fromhex(V1_FIXTURE_HEX), *BASE_FILES, *BINARY_FILES]
    for data in files:
        assert assert_agree(data) == "decoded"
        assert assert_agree(data, limit=0) == "DecodedTooLarge"


@pytest.mark.parametrize("mutator", sorted(MUTATORS))
def test_mutated_files_agree(mutator: str) -> None:
    rng = np.random.default_rng([SEED, 99, sorted(MUTATORS).index(mutator)])
    outcomes: collections.Counter[str] = collections.Counter()
    cases = CASES_PER_MUTATOR // 25 if mutator == "header_bomb" else CASES_PER_MUTATOR
    for case in range(cases):
        mutated = MUTATORS[mutator](BASE_FILES[case % len(BASE_FILES)], rng)
        outcomes[assert_agree(mutated)] += 1
    assert sum(outcomes.values()) == cases


COMPOSABLE = ["code_table", "stream", "payload_bits_with_crc", "header_int_nudge", "shape"]


def test_files_with_several_faults_agree() -> None:
    """Two or three CRC-repairing mutations at once: the order of checks decides the error."""
    rng = np.random.default_rng([SEED, 98])
    outcomes: collections.Counter[str] = collections.Counter()
    for case in range(4 * CASES_PER_MUTATOR):
        data = BASE_FILES[case % len(BASE_FILES)]
        for _ in range(int(rng.integers(2, 4))):
            data = MUTATORS[COMPOSABLE[rng.integers(len(COMPOSABLE))]](data, rng)
        outcomes[assert_agree(data)] += 1
    assert len(outcomes) >= 4, outcomes


@pytest.mark.parametrize(
    "text",
    [
        b'{"arch":{},"provenance":{"s":"\\ud800\\udc00\\udc00\\ud800x"},"tensors":[]}',
        b'{"arch":{},"provenance":{"a":1,"\\u0061":2},"tensors":[]}',
        b'{"arch":{},"provenance":{"n":-0,"f":1e-400,"g":-1.5E+3},"tensors":[]}',
        b'{"arch":{},"provenance":{"n":01},"tensors":[]}',
        b'{"arch":{},"provenance":{"n":1.},"tensors":[]}',
        b'{"arch":{},"provenance":{"s":"tab\there"},"tensors":[]}',
        b'{"arch":{},"provenance":{"s":"\\x"},"tensors":[]}',
        b'\xef\xbb\xbf{"arch":{},"provenance":{},"tensors":[]}',
        b' \t\r\n{"arch":{},"provenance":{},"tensors":[]} \n',
        b'{"arch":{},"provenance":{},"tensors":[]}\x0c',
        b'{"arch":{"name":"x","kwargs":{"n":9007199254740991}},"provenance":{},"tensors":[]}',
        b'{"arch":{},"provenance":{"n":9007199254740992},"tensors":[]}',
        b'{"arch":{},"provenance":{"s":"\xed\xa0\x80"},"tensors":[]}',
        b'{"arch":{},"provenance":{"s":"\xc0\xaf"},"tensors":[]}',
        b'{"arch":{},"provenance":{"t":tru},"tensors":[]}',
        b'{"arch":{},"provenance":{},"tensors":[],}',
    ],
)
def test_json_edge_cases_agree(text: bytes) -> None:
    for version in (1, 2, 3):
        fields = (MAGIC, version, 0, len(text), len(text), zlib.crc32(text), zlib.crc32(b""))
        assert_agree(struct.pack("<8sHHIIII", *fields) + text)


# --- version 8, built by hand from FORMAT.md "Version 8" -------------------------------------

FC1, FC2, WEIGHT, BIAS, CODE_SHA256 = 33, 34, 9, 10, 5  # static string references
CLUSTERS = struct.pack("<2f", -0.5, 0.25)
DIGEST = b"\x81" + bytes([CODE_SHA256, 0xA8]) + bytes.fromhex("0123abcd")
"""provenance {"code_sha256": "0123abcd"} with a 4-byte digest."""


def varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    return bytes(out) + bytes([value])


def parts(*refs: int) -> bytes:
    return varint(len(refs)) + b"".join(map(varint, refs))


def v8_file(
    records: list[tuple[bytes, bytes]],
    version: int = 8,
    provenance: bytes = b"\x80",
    table: tuple[bytes, ...] = (),
) -> bytes:
    """A file of binary header records (each with its payload sections), no compression."""
    strings = varint(len(table)) + b"".join(varint(len(text)) + text for text in table)
    header = strings + b"\x80" + provenance + varint(len(records))
    header += b"".join(record for record, _ in records)
    return build(header, b"".join(sections for _, sections in records), False, version)


def layer(
    name: bytes,
    shape: tuple[int, ...],
    kept: tuple[int, ...],
    masks: bytes,
    labels: list[int],
    tag: int = 0x05,
) -> tuple[bytes, bytes]:
    """A Huffman record with removed units whose kept block is dense (the single index symbol 0,
    zero bits) with one weight bit per label over [-0.5, 0.25]; ``kept`` is kept_rows, kept_cols
    and (tag bit 0x40) the owner ``t``; ``masks`` the two mask sections' bytes."""
    n = len(labels)
    record = bytes([tag]) + name + varint(len(shape)) + b"".join(map(varint, shape))
    record += varint(n) + b"\x00" + varint(2) + b"".join(map(varint, kept))
    record += varint(2) + varint(0) + varint(4) + varint(n) + varint(n)
    stream = np.packbits(np.array(labels, dtype=np.uint8)).tobytes()
    codebook = np.array([-0.5, 0.25], "<f2").tobytes() if tag & 0x20 else CLUSTERS
    return record, codebook + masks + b"\x00\x00" + b"\x01\x02\x00\x01" + stream


def raw_bias(name: bytes, owner: int, values: list[float]) -> tuple[bytes, bytes]:
    """A float32 raw record over the kept rows of tensor ``owner``."""
    return b"\x04" + name + varint(owner), struct.pack(f"<{len(values)}f", *values)


def coded_bias(name: bytes, owner: int) -> tuple[bytes, bytes]:
    """A Huffman record over the kept rows of tensor ``owner``: every row 0.75 (zero bits)."""
    record = b"\x03" + name + varint(owner) + b"\x00" + varint(1) + varint(2) + varint(0)
    return record, struct.pack("<f", 0.75) + b"\x00\x00"


FC1_LABELS = [1, 0, 1, 0, 0, 1, 1, 1, 0]
FC2_LABELS = [0, 1, 1, 0, 1, 1, 0, 0]


def fc1(name: bytes = parts(FC1, WEIGHT), shape: tuple[int, ...] = (4, 3)) -> tuple[bytes, bytes]:
    """Shape [4, 3], rows 0, 2 and 3 kept (mask B0), every column (E0)."""
    return layer(name, shape, (3, 3), b"\xb0\xe0", FC1_LABELS)


def fc2(
    cols: bytes = b"\xcc",
    kept_cols: int = 4,
    labels: list[int] = FC2_LABELS,
    shape: tuple[int, ...] = (2, 8),
    owner: int = 0,
    tag: int = 0x45,
    name: bytes = parts(FC2, WEIGHT),
) -> tuple[bytes, bytes]:
    """Shape [2, 8] with columns over fc1's kept rows: f = 2, candidates 0, 1, 4, 5, 6, 7."""
    return layer(name, shape, (2, kept_cols, owner), b"\xc0" + cols, labels, tag)


def v8_model(version: int = 8, **change: object) -> bytes:
    """fc1.weight; fc1.bias (raw) and fc2.bias (coded) with derived names; fc2.weight's columns
    over fc1's kept rows; a 4-byte digest in the provenance."""
    records = [fc1(), raw_bias(parts(), 0, [1.0, 2.0, 3.0]), fc2(**change), coded_bias(parts(), 2)]
    return v8_file(records, version, DIGEST)


def test_version_8_by_hand_decodes_as_the_document_says() -> None:
    _, provenance, tensors, _ = spec_decode(v8_model())
    assert provenance == {"code_sha256": "0123abcd"}
    assert [t[0] for t in tensors] == ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    values = {name: np.frombuffer(items, "<f4").reshape(shape) for name, _, shape, items in tensors}
    fc2_weight = np.zeros((2, 8), "<f4")
    fc2_weight[:, [0, 1, 6, 7]] = np.array([-0.5, 0.25], "<f4")[FC2_LABELS].reshape(2, 4)
    assert values["fc2.weight"].tobytes() == fc2_weight.tobytes()
    assert values["fc1.bias"].tolist() == [1.0, 0.0, 2.0, 3.0]
    assert values["fc2.bias"].tolist() == [0.75, 0.75]
    every = spec_decode(v8_model(cols=b"", kept_cols=6, labels=[1, 0] * 6))[2][2]
    assert np.frombuffer(every[3], "<f4").reshape(2, 8)[:, [2, 3]].tolist() == [[0, 0], [0, 0]]


def _v8_cases() -> dict[str, tuple[bytes, str]]:
    """Hand-built files and the outcome FORMAT.md gives them."""
    owner, bias = fc1(), raw_bias(parts(), 0, [1.0, 2.0, 3.0])
    columns = fc2()
    huge = layer(parts(FC2, WEIGHT), (0, 1 << 28), (0, 1 << 28, 0), b"", [], 0x45)
    return {
        "every feature": (v8_model(), "decoded"),
        "every candidate kept: empty cols mask": (
            v8_model(cols=b"", kept_cols=6, labels=[1, 0] * 6), "decoded"),
        "float16 codebook with columns (0x65)": (v8_model(tag=0x65), "decoded"),
        "derived names beside stored ones": (v8_file([owner, bias, columns]), "decoded"),
        "owner named w: bias": (v8_file([fc1(parts(46)), bias], table=(b"w",)), "decoded"),
        "owner named .weight: .bias": (v8_file([fc1(parts(46, WEIGHT)), bias], table=(b"",)),
                                       "decoded"),
        "3-D tensor over 2-D owner": (v8_file([owner, fc2(shape=(2, 8, 1))]), "decoded"),
        "no elements: 2^28 candidates never built": (
            v8_file([layer(parts(FC1), (1, 0), (1, 0), b"\x80", []), huge]), "decoded"),
        "4-byte digest alone": (v8_file([], provenance=DIGEST), "decoded"),
        "4-byte digest in version 7": (v8_file([], 7, DIGEST), "MalformedHeader"),
        "4-byte digest in version 5": (v8_file([], 5, DIGEST), "MalformedHeader"),
        "derived name in version 7": (v8_file([owner, bias], 7), "MalformedHeader"),
        "columns tag in version 7": (v8_file([owner, columns], 7), "MalformedHeader"),
        "every feature in version 7": (v8_model(7), "MalformedHeader"),
        "p = 0 on a plain raw record": (
            v8_file([(b"\x00" + parts() + b"\x01\x01", b"\x00" * 4)]), "MalformedHeader"),
        "p = 0 on a record with units": (v8_file([fc1(parts())]), "MalformedHeader"),
        "p = 0 on a columns record": (v8_file([owner, fc2(name=parts())]), "MalformedHeader"),
        "derived name twice": (v8_file([owner, bias, bias]), "MalformedHeader"),
        "derived name beside the same stored name": (
            v8_file([owner, bias, raw_bias(parts(FC1, BIAS), 0, [0.0] * 3)]), "MalformedHeader"),
        "derived name over a tensor without units": (
            v8_file([owner, bias, raw_bias(parts(), 1, [0.0] * 3)]), "MalformedHeader"),
        "0x40 without 0x04 (0x41)": (v8_file([owner, fc2(tag=0x41)]), "MalformedHeader"),
        "0x40 with 0x02 (0x43)": (v8_file([owner, fc2(tag=0x43)]), "MalformedHeader"),
        "0x40 with 0x02 and 0x04 (0x47)": (v8_file([owner, fc2(tag=0x47)]), "MalformedHeader"),
        "0x40 and 0x80 (0xC5)": (v8_file([owner, fc2(tag=0xC5)]), "MalformedHeader"),
        "C not a multiple of R": (v8_file([owner, fc2(shape=(2, 6))]), "MalformedHeader"),
        "C below R": (v8_file([owner, fc2(shape=(2, 2), cols=b"", kept_cols=0, labels=[])]),
                      "MalformedHeader"),
        "C = 0": (v8_file([owner, fc2(shape=(2, 0), cols=b"", kept_cols=0, labels=[])]),
                  "MalformedHeader"),
        "R = 0": (v8_file([layer(parts(FC1), (0, 3), (0, 3), b"\xe0", []),
                           fc2(cols=b"", kept_cols=0, labels=[])]), "MalformedHeader"),
        "columns over a tensor without units": (
            v8_file([owner, bias, fc2(owner=1)]), "MalformedHeader"),
        "columns over itself": (v8_file([owner, fc2(owner=1)]), "MalformedHeader"),
        "columns over a later tensor": (v8_file([owner, fc2(owner=5)]), "MalformedHeader"),
        "1-D tensor with columns": (v8_file([owner, fc2(shape=(8,), cols=b"")]),
                                    "MalformedHeader"),
        "kept_cols > m": (v8_file([owner, fc2(cols=b"\xfc", kept_cols=7, labels=[0] * 14)]),
                          "MalformedHeader"),
        "a mask where none belongs": (v8_file([owner, fc2(cols=b"\xfc", kept_cols=6,
                                                          labels=[0] * 12)]), "InvalidOffset"),
        "no mask where one belongs": (v8_file([owner, fc2(cols=b"")]), "TruncatedFile"),
        "a padding bit after m": (v8_file([owner, fc2(cols=b"\xcd")]), "CorruptStream"),
        "three 1 bits for kept_cols 4": (v8_file([owner, fc2(cols=b"\xc8")]), "CorruptStream"),
        "owner's rows mask with 2 bits for kept_rows 3": (
            v8_file([layer(parts(FC1, WEIGHT), (4, 3), (3, 3), b"\xa0\xe0", FC1_LABELS), bias]),
            "CorruptStream"),
        "one owner row: f = C": (v8_file([layer(parts(FC1), (1, 0), (1, 0), b"\x80", []),
                                          fc2(cols=b"", kept_cols=8, labels=[1] * 16)]),
                                 "decoded"),
    }  # fmt: skip


@pytest.mark.parametrize("case", sorted(_v8_cases()))
def test_version_8_features_and_faults_agree(case: str) -> None:
    data, outcome = _v8_cases()[case]
    assert assert_agree(data) == outcome


def test_no_candidate_is_built_for_a_tensor_without_elements() -> None:
    """FORMAT.md "Decoder memory": 2^28 candidate columns declared by a 100-byte file cost
    neither reader memory when the tensor has no elements."""
    data = _v8_cases()["no elements: 2^28 candidates never built"][0]
    assert len(data) < 128
    for read in (reference_outcome, spec_outcome):
        tracemalloc.start()
        try:
            assert not isinstance(read(data, None), str)
            assert tracemalloc.get_traced_memory()[1] < 16 * MIB
        finally:
            tracemalloc.stop()


def test_cols_of_is_an_unknown_key_before_version_8() -> None:
    header, payload = split(BASE_FILES[5])
    assert [t.get("units") is not None for t in header["tensors"][:2]] == [True, True]
    header["tensors"][1]["units"]["cols_of"] = 0
    assert assert_agree(build(dump(header), payload, False, 3)) == "MalformedHeader"
