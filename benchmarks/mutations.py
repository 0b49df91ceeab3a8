"""Hostile .dcz files: seeded mutations of real encoded files, most with repaired CRCs.

Mutations with repaired CRCs (edited header fields, replaced code tables and streams, raw dtypes,
bool bytes, shapes, empty shapes with huge dimensions, header bombs) get past the checksums so
that the schema, limits, layout, code-table, stream and value checks are exercised, not just
CRC32. Base files are of format versions 1, 2 and 3 (one with removed units); the ``v4_``
mutators edit binary-header files (versions 4 and 5) byte by byte. Used by
``tests/test_container_fuzz.py`` (a sample) and ``benchmarks/bench_mutations.py`` (the full run).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import numpy as np
import torch

from benchmarks.mutation_bases import (
    BASE_FILES,
    BINARY_FILES,
    PREAMBLE,
    build,
    dump,
    split,
    split_v4,
    version,
)
from deepcompression.format.container import (
    MAX_TOTAL_NUMEL,
    RAW_DTYPES,
    FormatError,
    decode_model,
    read_info,
)

SEED = 20160201


def sections(header: dict) -> list[tuple[dict | list, object]]:
    """(container, key) of every [offset, length] span, in file order."""
    spans: list[tuple[dict | list, object]] = []
    for tensor in header["tensors"]:
        if tensor["kind"] == "raw":
            spans.append((tensor, "data"))
        else:
            spans.append((tensor, "codebook"))
            if "units" in tensor:
                spans += [(tensor["units"], "rows"), (tensor["units"], "cols")]
            spans += [(tensor["index"], "table"), (tensor["weight"], "table")]
            spans += [(tensor["index"], "stream"), (tensor["weight"], "stream")]
    return spans


def _replace_section(data: bytes, rng: np.random.Generator, kind: str, new: Callable) -> bytes:
    """Swap one table/stream section for ``new(old_bytes, rng)``, re-tiling later offsets."""
    header, payload = split(data)
    candidates = [
        (i, holder, key)
        for i, (holder, key) in enumerate(sections(header))
        if key == kind and isinstance(holder, dict)
    ]
    index, holder, key = candidates[rng.integers(len(candidates))]
    chunks = []
    for i, (h, k) in enumerate(sections(header)):
        offset, length = h[k]
        chunk = payload[offset : offset + length]
        if i == index:
            chunk = new(chunk, rng, holder)
        chunks.append(chunk)
    position = 0
    for (h, k), chunk in zip(sections(header), chunks, strict=True):
        h[k] = [position, len(chunk)]
        position += len(chunk)
    return build(dump(header), b"".join(chunks), bool(rng.integers(2)), version(data))


def _random_table(old: bytes, rng: np.random.Generator, holder: dict) -> bytes:
    """A plausible-looking but mostly invalid code table (non-prefix, incomplete, duplicates)."""
    max_len = int(rng.choice([0, 1, 2, 3, 5, 8, 31, 32, 40, 255]))
    counts = rng.integers(0, 5, max_len) if max_len < 64 else np.zeros(0, dtype=np.int64)
    if max_len and rng.random() < 0.5 and counts.size:
        counts[-1] = max(1, counts[-1])
    n = int(counts.sum()) if max_len else 1
    symbols = rng.integers(0, 12, n)
    body = bytes([max_len]) + counts.astype("<u1").tobytes() + symbols.astype("<u1").tobytes()
    if rng.random() < 0.2:
        body = body[: rng.integers(len(body) + 1)] + rng.bytes(rng.integers(3))
    return body


def _random_stream(old: bytes, rng: np.random.Generator, holder: dict) -> bytes:
    length = int(rng.integers(0, 2 * len(old) + 3))
    holder["bits"] = max(0, 8 * length - int(rng.integers(0, 8))) if length else 0
    if rng.random() < 0.3:
        holder["symbols"] = int(rng.integers(0, 3 * holder["symbols"] + 2))
    return rng.bytes(length)


PALETTE: list[object] = [
    0, 1, -1, 2, 3, 7, 8, 255, 256, 65535, 2**31, 2**32 + 5, 2**62, 2**63, 2**64, 10**30, -(2**63),
    1.5, -0.0, 1e308, "x", "", "huffman", "raw", None, True, False, [], {}, [0], [0, 0], [0, 2**62],
    [2**62, 2**62], [-1, 4], [[[[]]]], list(range(40)), {"a": 1}, "é" * 5,
]  # fmt: skip


def _leaves(node: object, path: tuple = ()) -> list[tuple]:
    out = [path]
    if isinstance(node, dict):
        for key, value in node.items():
            out += _leaves(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _leaves(value, (*path, i))
    return out


def _edit_header(data: bytes, rng: np.random.Generator, nudge: bool) -> bytes:
    header, payload = split(data)
    paths = [p for p in _leaves(header) if p]
    if nudge:
        ints = [p for p in paths if type(_get(header, p)) is int]
        path = ints[rng.integers(len(ints))]
        delta = int(rng.choice([-8, -2, -1, 1, 2, 8, 4096]))
        value: object = _get(header, path) + delta if rng.random() < 0.8 else -_get(header, path)
    else:
        path = paths[rng.integers(len(paths))]
        value = PALETTE[rng.integers(len(PALETTE))]
    parent = _get(header, path[:-1])
    action = rng.random()
    if action < 0.1 and isinstance(parent, dict):
        del parent[path[-1]]
    elif action < 0.15 and isinstance(parent, dict):
        parent["extra"] = value
    else:
        parent[path[-1]] = value
    text = dump(header)
    if not nudge and rng.random() < 0.1:
        text = text[: rng.integers(len(text) + 1)]
    return build(text, payload, bool(rng.integers(2)), version(data))


def _get(node: object, path: tuple) -> object:
    for key in path:
        node = node[key]  # type: ignore[index]
    return node


def _flip_bits(data: bytes, rng: np.random.Generator, start: int = 0) -> bytearray:
    out = bytearray(data)
    for _ in range(rng.integers(1, 5)):
        out[rng.integers(start, len(out))] ^= 1 << int(rng.integers(8))
    return out


def _payload_mutation(data: bytes, rng: np.random.Generator) -> bytes:
    header, payload = split(data)
    body = bytearray(payload)
    choice = rng.random()
    if choice < 0.5 and body:
        body = _flip_bits(bytes(body), rng)
    elif choice < 0.8 and body:
        body[rng.integers(len(body))] = int(rng.integers(256))
    elif choice < 0.9:
        at = int(rng.integers(len(body) + 1))
        body[at:at] = rng.bytes(int(rng.integers(1, 4)))
    elif body:
        at = int(rng.integers(len(body)))
        del body[at : at + int(rng.integers(1, 4))]
    return build(dump(header), bytes(body), bool(rng.integers(2)), version(data))


def _preamble_mutation(data: bytes, rng: np.random.Generator) -> bytes:
    fields = list(PREAMBLE.unpack_from(data))
    index = int(rng.integers(1, 7))
    limit = 0xFFFF if index <= 2 else 0xFFFFFFFF
    fields[index] = int(rng.choice([0, 1, 2, limit, rng.integers(0, limit + 1), fields[index] + 1]))
    fields[index] = min(max(fields[index], 0), limit)
    return PREAMBLE.pack(*fields) + data[PREAMBLE.size :]


DTYPE_PALETTE: list[object] = [
    *RAW_DTYPES, "float8", "Float32", "float32 ", "uint16", "complex64", "int4", "", "bool\x00",
    None, 4, ["float32"], {"name": "float32"},
]  # fmt: skip
SHAPE_PALETTE: list[object] = [
    [], [0], [1], [MAX_TOTAL_NUMEL], [MAX_TOTAL_NUMEL + 1], [0, MAX_TOTAL_NUMEL],
    [0, MAX_TOTAL_NUMEL + 1], [2**20, 2**20, 0], [0, 2**20, 2**20], [2**14, 2**14, 2],
    [2**53 - 1], [2**53], [-1], [1] * 16, [1] * 17, [1.0], [True], "4", None,
]  # fmt: skip


def _raw_layers(header: dict) -> list[dict]:
    return [t for t in header["tensors"] if t["kind"] == "raw"]


WIDTHS = {"float32": 4, "float16": 2, "bfloat16": 2, "float64": 8, "int8": 1, "int16": 2}
WIDTHS |= {"int32": 4, "int64": 8, "uint8": 1, "bool": 1}


def _retype(data: bytes, rng: np.random.Generator) -> bytes:
    """Give one raw tensor another (valid or invalid) dtype; often resize its data to match."""
    header, payload = split(data)
    layers = _raw_layers(header)
    layer = layers[rng.integers(len(layers))]
    dtype = DTYPE_PALETTE[rng.integers(len(DTYPE_PALETTE))]
    layer["dtype"] = dtype
    if rng.random() < 0.1:
        del layer["dtype"]
    if rng.random() < 0.7:
        width = WIDTHS.get(dtype, 4) if isinstance(dtype, str) else 4
        return resize(header, payload, layer, width * math.prod(layer["shape"]), rng)
    return build(dump(header), payload, bool(rng.integers(2)), version(data))


def resize(
    header: dict, payload: bytes, layer: dict, length: int, rng: np.random.Generator
) -> bytes:
    """Give ``layer`` ``length`` random data bytes (mostly 0/1), re-tiling the later sections."""
    chunks = []
    for holder, key in sections(header):
        offset, old = holder[key]
        chunk = payload[offset : offset + old]
        if holder is layer:
            chunk = rng.integers(0, 2 if rng.random() < 0.8 else 256, length).astype(np.uint8)
            chunk = chunk.tobytes()
        chunks.append(chunk)
    position = 0
    for (holder, key), chunk in zip(sections(header), chunks, strict=True):
        holder[key] = [position, len(chunk)]
        position += len(chunk)
    return build(dump(header), b"".join(chunks), bool(rng.integers(2)), 2)


def _bool_bytes(data: bytes, rng: np.random.Generator) -> bytes:
    """Set one byte of a bool tensor to a random value (0 and 1 decode, others must not)."""
    header, payload = split(data)
    flags = [t for t in _raw_layers(header) if t.get("dtype") == "bool" and t["data"][1]]
    layer = flags[rng.integers(len(flags))]
    body = bytearray(payload)
    body[layer["data"][0] + int(rng.integers(layer["data"][1]))] = int(rng.integers(256))
    return build(dump(header), bytes(body), bool(rng.integers(2)), version(data))


def _reshape(data: bytes, rng: np.random.Generator) -> bytes:
    """Give one tensor a hostile shape: huge, zero-sized with huge dimensions, malformed."""
    header, payload = split(data)
    tensor = header["tensors"][rng.integers(len(header["tensors"]))]
    tensor["shape"] = SHAPE_PALETTE[rng.integers(len(SHAPE_PALETTE))]
    return build(dump(header), payload, bool(rng.integers(2)), version(data))


TYPED = 3
"""Index in BASE_FILES of the file holding a raw tensor of every dtype."""
UNITS = 5
"""Index in BASE_FILES of the version-3 file with removed units."""


def _units_masks(data: bytes, rng: np.random.Generator) -> bytes:
    """Flip bits of one removed-units mask (padding bits included), CRCs repaired."""
    header, payload = split(data)
    spans = [t["units"][k] for t in header["tensors"] if "units" in t for k in ("rows", "cols")]
    offset, length = spans[rng.integers(len(spans))]
    body = bytearray(payload)
    body[offset : offset + length] = _flip_bits(bytes(body[offset : offset + length]), rng)
    return build(dump(header), bytes(body), bool(rng.integers(2)), version(data))


ZERO_SHAPES: list[list[int]] = [
    [2**28, 2**28, 256, 0], [2**28, 2**28, 8, 0], [2**28, 2**28, 16, 0], [2**28, 2**28, 0],
    [0, 2**28, 2**28], [0] + [16] * 14,
    [0] + [16] * 15, [2**28, 0, 2**28, 2**28], [1, 0] * 8, [2**28, 2**27, 2, 0], [0],
]  # fmt: skip
"""Empty shapes at and beyond the 2**59 cap on the product of the non-zero dimensions."""


def retile(header: dict, payload: bytes, replace: dict[tuple[int, object], bytes]) -> bytes:
    """The payload with the sections keyed (id(holder), key) replaced, every span re-tiled."""
    chunks = []
    for holder, key in sections(header):
        offset, length = holder[key]
        chunks.append(replace.get((id(holder), key), payload[offset : offset + length]))
    position = 0
    for (holder, key), chunk in zip(sections(header), chunks, strict=True):
        holder[key] = [position, len(chunk)]
        position += len(chunk)
    return b"".join(chunks)


def _zero_dims(data: bytes, rng: np.random.Generator) -> bytes:
    """Give one tensor an empty shape with huge other dimensions; its sections are emptied to
    match (a Huffman tensor keeps nnz = 0 and, sometimes, small removed-units masks)."""
    header, payload = split(data)
    tensor = header["tensors"][rng.integers(len(header["tensors"]))]
    if rng.random() < 0.4:
        shape = list(ZERO_SHAPES[rng.integers(len(ZERO_SHAPES))])
    else:
        shape = [int(1 << rng.integers(0, 29)) for _ in range(int(rng.integers(1, 17)))]
        for _ in range(int(rng.integers(1, 3))):
            shape[rng.integers(len(shape))] = 0
    tensor["shape"] = shape
    replace: dict[tuple[int, object], bytes] = {}
    if tensor["kind"] == "raw":
        replace[(id(tensor), "data")] = b""
        body = retile(header, payload, replace)
        return build(dump(header), body, True, version(data))
    tensor["nnz"] = 0
    for stream in (tensor["index"], tensor["weight"]):
        stream["bits"] = stream["symbols"] = 0
        replace[(id(stream), "stream")] = b""
        if rng.random() < 0.5:
            replace[(id(stream), "table")] = b""
    if "units" in tensor and len(shape) >= 2 and rng.random() < 0.5:
        units = tensor["units"]
        shape[0], shape[1] = (int(d) for d in rng.integers(0, 65, 2))
        for key, dim in (("rows", shape[0]), ("cols", shape[1])):
            bits = rng.integers(0, 2, dim).astype(bool)
            replace[(id(units), key)] = np.packbits(bits, bitorder="big").tobytes()
            units[f"kept_{key}"] = int(bits.sum())
    else:
        tensor.pop("units", None)
    body = retile(header, payload, replace)
    return build(dump(header), body, True, version(data))


BOMB_UNITS = [b"{}", b"[]", b"0", b'""', b'{"a":0}', b"[[[[]]]]", b"1234567890", b'"abcdefgh"']
"""Small JSON values a header bomb repeats."""


@functools.cache
def reported_bomb() -> bytes:
    """The reported file: a ~24 KB zlib header inflating to 16 MiB of ``[{}]``."""
    body = b",".join([b"[{}]"] * ((16 * 2**20 - 60) // 5))
    text = b'{"arch":{},"provenance":{"b":[' + body + b']},"tensors":[]}'
    return build(text, b"", True, 3)


def _header_bomb(data: bytes, rng: np.random.Generator) -> bytes:
    """Splice many small values into provenance, about ``per_byte`` per stored header byte (the
    limit is 8, inflation at most 64x); random padding sets the stored length."""
    if rng.random() < 0.05:
        return reported_bomb()
    header, payload = split(data)
    stored = int(rng.choice([64, 512, 4096, 32768]))
    per_byte = float(rng.choice([0.5, 4, 7, 7.9, 8.1, 9, 16, 64]))
    unit = BOMB_UNITS[rng.integers(len(BOMB_UNITS))]
    header["provenance"] = {"pad": rng.bytes(stored).hex(), "bomb": "BOMB"}
    bomb = b"[" + b",".join([unit] * int(per_byte * stored)) + b"]"
    text = dump(header).replace(b'"BOMB"', bomb)
    out = build(text, payload, rng.random() < 0.9, version(data))
    if rng.random() < 0.1:  # declare an inflated length at or just past the 64x cap
        fields = list(PREAMBLE.unpack_from(out))
        fields[4] = min(64 * fields[3] + int(rng.integers(0, 2)), 16 * 2**20)
        out = PREAMBLE.pack(*fields) + out[PREAMBLE.size :]
    return out


def _v4_base(rng: np.random.Generator) -> tuple[bytes, bytes, int, int]:
    """A random binary-header base file's header, payload, input-spec flag bit and version."""
    data = BINARY_FILES[rng.integers(len(BINARY_FILES))]
    return *split_v4(data), PREAMBLE.unpack_from(data)[2] & 2, version(data)


def _v4_header_edit(rng: np.random.Generator) -> bytes:
    """A binary-header file whose header has 1-3 bytes replaced, nudged, inserted or deleted."""
    header, payload, flag, number = _v4_base(rng)
    body = bytearray(header)
    for _ in range(int(rng.integers(1, 4))):
        at, action = int(rng.integers(len(body))), int(rng.integers(4))
        if action == 0:
            body[at] = int(rng.choice([rng.integers(256), body[at] ^ 1 << rng.integers(8)]))
        elif action == 1:
            body[at] = (body[at] + int(rng.choice([-1, 1]))) % 256
        elif action == 2:
            body.insert(at, int(rng.choice([0, 0x7F, 0x80, 0xFF, rng.integers(256)])))
        else:
            del body[at]
    return build(bytes(body), payload, bool(rng.integers(2)), number, flag)


def _v4_payload(rng: np.random.Generator) -> bytes:
    """A binary-header file with payload bits flipped and the CRC repaired."""
    header, payload, flag, number = _v4_base(rng)
    return build(header, bytes(_flip_bits(payload, rng)), False, number, flag)


def _v4_header_cut(rng: np.random.Generator) -> bytes:
    """A binary-header file whose header is cut short or has bytes appended."""
    header, payload, flag, number = _v4_base(rng)
    if rng.integers(2):
        header = header[: int(rng.integers(len(header)))]
    else:
        header += rng.bytes(int(rng.integers(1, 4)))
    return build(header, payload, bool(rng.integers(2)), number, flag)


MUTATORS: dict[str, Callable[[bytes, np.random.Generator], bytes]] = {
    "v4_header_bytes": lambda d, r: _v4_header_edit(r),
    "v4_header_cut": lambda d, r: _v4_header_cut(r),
    "v4_payload_with_crc": lambda d, r: _v4_payload(r),
    "v4_whole_file": lambda d, r: bytes(
        _flip_bits(BINARY_FILES[r.integers(len(BINARY_FILES))], r)
    ),
    "truncate": lambda d, r: d[: r.integers(0, len(d))],
    "bit_flips": lambda d, r: bytes(_flip_bits(d, r)),
    "random_bytes": lambda d, r: r.bytes(int(r.integers(0, len(d) + 1))),
    "garbage_after_magic": lambda d, r: d[:8] + r.bytes(int(r.integers(0, 200))),
    "preamble_fields": _preamble_mutation,
    "payload_with_crc": _payload_mutation,
    "payload_bits_with_crc": lambda d, r: build(
        dump(split(d)[0]), bytes(_flip_bits(split(d)[1], r)), False, version(d)
    ),
    "header_field": lambda d, r: _edit_header(d, r, nudge=False),
    "header_int_nudge": lambda d, r: _edit_header(d, r, nudge=True),
    "code_table": lambda d, r: _replace_section(d, r, "table", _random_table),
    "stream": lambda d, r: _replace_section(d, r, "stream", _random_stream),
    "raw_dtype": lambda d, r: _retype(BASE_FILES[TYPED], r),
    "bool_bytes": lambda d, r: _bool_bytes(BASE_FILES[TYPED], r),
    "shape": _reshape,
    "units_masks": lambda d, r: _units_masks(BASE_FILES[UNITS], r),
    "zero_dims": _zero_dims,
    "header_bomb": _header_bomb,
}


DECODED_DTYPES = {getattr(torch, name) for name in RAW_DTYPES}


def outcome(data: bytes) -> str:
    """The error class name, or "decoded" after checking each tensor against ``read_info``."""
    try:
        info = read_info(data)
        decoded = decode_model(data)
    except FormatError as err:
        return type(err).__name__
    for layer, tensor in zip(info.layers, decoded.state_dict.values(), strict=True):
        assert tensor.device.type == "cpu" and list(tensor.shape) == list(layer.shape)
        assert tensor.dtype == getattr(torch, layer.dtype) and tensor.dtype in DECODED_DTYPES
        if layer.kind == "huffman":
            assert tensor.dtype == torch.float32
        if tensor.dtype == torch.bool and tensor.numel():
            assert int(tensor.view(torch.uint8).max()) <= 1
    return "decoded"
