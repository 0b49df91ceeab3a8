"""The version-4 to -8 binary headers read from docs/FORMAT.md ("Version 4: binary header",
"Version 5: shorter values", "Version 6: float16 codebooks", "Version 7: coded tensors over
kept rows", "Version 8: shorter names, digests and column masks") alone.

``binary_document`` turns the header bytes into the same object a version-3 JSON header holds
(spans laid out back to back), raising ``Reject("MalformedHeader")`` for any rule broken; the
spec-only decoder in ``test_container_spec.py`` then applies the common schema rules to it.
"""

from __future__ import annotations

import math
import struct
from fractions import Fraction

STATIC = """name kwargs model params params_sha256 code_sha256 git_revision lenet_300_100 lenet5
weight bias running_mean running_var num_batches_tracked num_classes in_channels image_size width
depth features classifier layer1 layer2 layer3 layer4 downsample conv1 conv2 conv3 bn1 bn2 bn3 fc
fc1 fc2 fc3 0 1 2 3 4 5 6 7 8 9""".split()  # noqa: SIM905
DTYPES = ["float32", "float16", "bfloat16", "float64", "int8", "int16", "int32", "int64"]
DTYPES += ["uint8", "bool"]
SIZE = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "int16": 2}
SIZE |= {"int32": 4, "int64": 8, "uint8": 1, "bool": 1}


class Malformed(Exception):
    """A rule of the binary header is broken."""


class _Cursor:
    def __init__(self, data: bytes, version: int) -> None:
        self.data, self.at, self.v5, self.v6 = data, 0, version >= 5, version >= 6
        self.v7, self.v8 = version >= 7, version >= 8
        self.table: list[str] = []
        self.referenced: set[int] = set()

    def bytes(self, n: int) -> bytes:
        if self.at + n > len(self.data):
            raise Malformed
        self.at += n
        return self.data[self.at - n : self.at]

    def varint(self) -> int:
        value = 0
        for i in range(8):
            byte = self.bytes(1)[0]
            value += (byte & 0x7F) << (7 * i)
            if byte < 0x80:
                if (i > 0 and byte == 0) or value > 2**53 - 1:
                    raise Malformed
                return value
        raise Malformed

    def string(self, ref: int) -> str:
        if ref < len(STATIC):
            return STATIC[ref]
        if ref - len(STATIC) >= len(self.table):
            raise Malformed
        self.referenced.add(ref - len(STATIC))
        return self.table[ref - len(STATIC)]

    def value(self, depth: int) -> object:
        tag = self.bytes(1)[0]
        if tag >> 5 in (3, 4) and depth > 64:
            raise Malformed
        major, arg = tag >> 5, tag & 31
        if arg == 31:
            arg = self.varint()
            if arg < 31:
                raise Malformed
        if depth == 1 and major != 4:
            raise Malformed
        if major == 0:
            if arg >= len(STATIC):
                raise Malformed
            return STATIC[arg]
        if major == 6:
            return self.string(len(STATIC) + arg)
        if major == 1:
            return arg
        if major == 2:
            if arg > 2**53 - 2:
                raise Malformed
            return -1 - arg
        if major == 3:
            return [self.value(depth + 1) for _ in range(arg)]
        if major == 4:
            obj: dict = {}
            for _ in range(arg):
                key = self.string(self.varint())
                if obj and key <= list(obj)[-1]:
                    raise Malformed
                obj[key] = self.value(depth + 1)
            return obj
        if major == 5 and arg <= 2:
            return [None, False, True][arg]
        if major == 5 and (arg == 3 or (arg == 7 and self.v5)):
            return self.number(arg)
        if major == 5 and arg == 4:
            return self.bytes(32).hex()
        if major == 5 and arg in (5, 6) and self.v5:
            return self.bytes(16 if arg == 5 else 8).hex()
        if major == 5 and arg == 8 and self.v8:  # v8: a 4-byte digest
            return self.bytes(4).hex()
        raise Malformed

    def number(self, arg: int) -> float:
        if arg == 3:
            number = struct.unpack("<d", self.bytes(8))[0]
        else:
            m, e = (unzigzag(self.varint()) for _ in range(2))
            if abs(e) > 400:
                raise Malformed
            number = float(Fraction(m) * Fraction(10) ** e)
        if math.isinf(number) or math.isnan(number):
            raise Malformed
        return number


def unzigzag(n: int) -> int:
    return -(n + 1) // 2 if n & 1 else n // 2


def _spec_number(cur: _Cursor) -> float:
    if not cur.v5:
        return struct.unpack("<d", cur.bytes(8))[0]
    tag = cur.bytes(1)[0]
    if tag not in (0xA3, 0xA7):
        raise Malformed
    return cur.number(tag & 31)


def _input_spec(cur: _Cursor) -> tuple:
    channels, side = cur.varint(), cur.varint()
    if not (1 <= channels <= 1 << 16 and 1 <= side <= 1 << 16):
        raise Malformed
    values = [_spec_number(cur) for _ in range(2 * channels)]
    if any(math.isinf(v) or math.isnan(v) for v in values) or min(values[channels:]) <= 0:
        raise Malformed
    classes, named = cur.varint(), cur.bytes(1)[0]
    if not 1 <= classes <= 1 << 20 or named > (2 if cur.v5 else 1):
        raise Malformed
    names = None
    if named == 2:
        names = tuple(str(i) for i in range(classes))
    elif named == 1:
        names = tuple(cur.string(cur.varint()) for _ in range(classes))
    return channels, side, tuple(values[:channels]), tuple(values[channels:]), classes, names


def _document(data: bytes, with_input: bool, version: int) -> dict:
    cur = _Cursor(data, version)
    for _ in range(cur.varint()):
        raw = cur.bytes(cur.varint())
        text = raw.decode("utf-8", "surrogatepass")
        if text in STATIC or text in cur.table:
            raise Malformed
        cur.table.append(text)
    arch, provenance = cur.value(1), cur.value(1)
    spec = _input_spec(cur) if with_input else None
    tensors, offset = [], 0
    for _ in range(cur.varint()):
        tag = cur.bytes(1)[0]
        raw_rows = tag & 15 == 4 and tag >> 4 < 10  # a raw tensor over an earlier one's kept rows
        coded_rows = cur.v7 and tag & 0xCF == 3  # v7: a Huffman one (+0x10, +0x20)
        parts = [cur.string(cur.varint()) for _ in range(cur.varint())]
        derived = cur.v8 and (raw_rows or coded_rows)  # v8: p = 0 names the owner's bias
        if any("." in part for part in parts) or not (parts or derived):
            raise Malformed
        name = ".".join(parts) if parts else None
        if raw_rows:
            tensors.append(_kept_rows(cur, name, DTYPES[tag >> 4], tensors, offset))
            offset += tensors[-1]["data"][1]
            continue
        if coded_rows:
            record, offset = _coded_rows(cur, name, tag, tensors, offset)
            tensors.append(record)
            continue
        ndim = cur.varint()
        if ndim > 16:
            raise Malformed
        shape = [cur.varint() for _ in range(ndim)]
        record: dict = {"name": ".".join(parts), "shape": shape}
        if tag & 15 == 0 and tag >> 4 < 10:
            dtype = DTYPES[tag >> 4]
            length = SIZE[dtype] * math.prod(shape)
            record |= {"kind": "raw", "dtype": dtype, "data": [offset, length]}
            offset += length
        elif tag & (0x83 if cur.v8 else 0xC3 if cur.v6 else 0xE3) == 1 and tag & 0x44 != 0x40:
            # Huffman: 0x01 plus units 0x04, arithmetic 0x08 / 0x10, float16 codebook 0x20 (v6),
            # columns over an earlier tensor's kept rows 0x40 (v8, only with 0x04)
            offset = _huffman(cur, record, tag, offset, tensors)
        else:
            raise Malformed
        tensors.append(record)
    if cur.at != len(data) or len(cur.referenced) != len(cur.table):
        raise Malformed
    return {"arch": arch, "provenance": provenance, "tensors": tensors, "input": spec}


def _owner(cur: _Cursor, tensors: list[dict]) -> int:
    """The varint ``t``: an earlier record with removed units."""
    owner = cur.varint()
    if owner >= len(tensors) or "units" not in tensors[owner]:
        raise Malformed
    return owner


def _derived(name: str | None, owner: dict) -> str:
    """The record's name, or (p = 0, version 8) the owner's with its last part set to "bias"."""
    return name if name is not None else ".".join([*owner["name"].split(".")[:-1], "bias"])


def _kept_rows(
    cur: _Cursor, name: str | None, dtype: str, tensors: list[dict], offset: int
) -> dict:
    owner = _owner(cur, tensors)
    name = _derived(name, tensors[owner])
    length = SIZE[dtype] * tensors[owner]["units"]["kept_rows"]
    shape = tensors[owner]["shape"][:1]
    return {"name": name, "shape": shape, "kind": "raw", "dtype": dtype, "rows_of": owner,
            "data": [offset, length]}  # fmt: skip


def _coded_rows(
    cur: _Cursor, name: str | None, tag: int, tensors: list[dict], offset: int
) -> tuple[dict, int]:
    owner = _owner(cur, tensors)
    name = _derived(name, tensors[owner])
    widths, k = cur.bytes(1)[0], cur.varint()
    if widths & 15:
        raise Malformed
    table = 0 if tag & 16 else cur.varint()
    bits = cur.varint()
    kept = tensors[owner]["units"]["kept_rows"]
    spans = []
    for length in ((2 if tag & 32 else 4) * k, 0, table, 0, -(-bits // 8)):
        spans.append([offset, length])
        offset += length
    record = {"name": name, "shape": tensors[owner]["shape"][:1], "kind": "huffman",
              "rows_of": owner, "nnz": kept, "weight_bits": (widths >> 4) + 1, "index_bits": 1,
              "codebook": spans[0],
              "index": {"table": spans[1], "stream": spans[3], "bits": 0, "symbols": 0},
              "weight": {"table": spans[2], "stream": spans[4], "bits": bits, "symbols": kept}}
    if tag & 32:
        record["codebook_dtype"] = "float16"
    if tag & 16:
        record["weight"]["coder"] = "arith"
    return record, offset


def _huffman(cur: _Cursor, record: dict, tag: int, offset: int, tensors: list[dict]) -> int:
    units = bool(tag & 4)
    nnz, widths, k = cur.varint(), cur.bytes(1)[0], cur.varint()
    kept = [cur.varint(), cur.varint()] if units else None
    cols_of = _owner(cur, tensors) if tag & 0x40 else None  # v8: columns over t's kept rows
    index_table = 0 if tag & 8 else cur.varint()
    index_bits = cur.varint()
    weight_table = 0 if tag & 16 else cur.varint()
    weight_bits = cur.varint()
    symbols = cur.varint()
    shape = record["shape"]
    if units and len(shape) < 2:
        raise Malformed
    lengths = [(2 if tag & 0x20 else 4) * k]
    if units:
        lengths += [-(-shape[0] // 8), -(-shape[1] // 8)]
    if kept is not None and cols_of is not None:  # the mask over the m candidate columns
        rows, columns = tensors[cols_of]["shape"][0], shape[1]
        if rows < 1 or columns < rows or columns % rows:
            raise Malformed
        m = tensors[cols_of]["units"]["kept_rows"] * (columns // rows)
        lengths[2] = 0 if kept[1] == m else -(-m // 8)
    lengths += [index_table, weight_table, -(-index_bits // 8), -(-weight_bits // 8)]
    spans = []
    for length in lengths:
        spans.append([offset, length])
        offset += length
    record |= {"kind": "huffman", "nnz": nnz, "weight_bits": (widths >> 4) + 1}
    record |= {"index_bits": (widths & 15) + 1, "codebook": spans[0]}
    if tag & 0x20:
        record["codebook_dtype"] = "float16"
    if kept is not None:
        record["units"] = {"rows": spans[1], "cols": spans[2], "kept_rows": kept[0]}
        record["units"]["kept_cols"] = kept[1]
        if cols_of is not None:
            record["units"]["cols_of"] = cols_of
    record["index"] = {"table": spans[-4], "stream": spans[-2], "bits": index_bits}
    record["index"]["symbols"] = symbols
    record["weight"] = {"table": spans[-3], "stream": spans[-1], "bits": weight_bits}
    record["weight"]["symbols"] = nnz
    for key, bit in (("index", 8), ("weight", 16)):
        if tag & bit:
            record[key]["coder"] = "arith"
    return offset


def binary_document(data: bytes, with_input: bool, version: int) -> dict | None:
    """The header object of version-4 to -8 header bytes (its input spec under "input" when the
    preamble's flag bit 1 says there is one), or None if the bytes break a rule."""
    try:
        return _document(data, with_input, version)
    except (Malformed, UnicodeDecodeError):
        return None
