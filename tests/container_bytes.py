"""Container files taken apart and put back together, byte by byte, for the format tests: the
preamble as docs/FORMAT.md states it (written here again, not imported, so that the tests check
the library against the document), the header JSON and the payload."""

from __future__ import annotations

import json
import struct
import zlib

import torch

from deepcompression.format.container import encode_model as encode_any_version

PREAMBLE = struct.Struct("<8sHHIIII")
"""magic, version, flags, header_len, json_len, header_crc32, payload_crc32 (little-endian)."""
MAGIC = b"\x89DCZ\r\n\x1a\n"
FLAG_HEADER_ZLIB = 1


def encode_v3(*args: object, **kwargs: object) -> bytes:
    """The version-3 writer (`encode_model` with `format_version=3` unless given): the format
    tests read and edit JSON headers, and version 4's header is binary."""
    return encode_any_version(*args, **{"format_version": 3, **kwargs})  # type: ignore[arg-type]


def split(data: bytes) -> tuple[dict, bytes]:
    """A file's header (decompressed when its flag says so) and its payload bytes."""
    _, _, flags, header_len, _, _, _ = PREAMBLE.unpack_from(data)
    stored = data[PREAMBLE.size : PREAMBLE.size + header_len]
    header = json.loads(zlib.decompress(stored) if flags & FLAG_HEADER_ZLIB else stored)
    return header, data[PREAMBLE.size + header_len :]


def header_of(data: bytes) -> dict:
    """A file's header JSON, as a dict."""
    return split(data)[0]


def dump(header: object) -> bytes:
    """Header JSON as the writer writes it: sorted keys, no spaces."""
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def pack(
    header_json: bytes, payload: bytes = b"", version: int = 2, compress: bool = False
) -> bytes:
    """A file of `header_json` (zlib-compressed at level 9 when `compress`) and `payload`, with a
    valid preamble: lengths and both CRC-32s match what follows."""
    stored = zlib.compress(header_json, 9) if compress else header_json
    flags = FLAG_HEADER_ZLIB if compress else 0
    fields = (MAGIC, version, flags, len(stored), len(header_json))
    return PREAMBLE.pack(*fields, zlib.crc32(stored), zlib.crc32(payload)) + stored + payload


def rebuild(header: dict, payload: bytes, version: int = 2) -> bytes:
    """`pack` of a header dict, stored plain."""
    return pack(dump(header), payload, version)


BITS_OF = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(tensor: torch.Tensor) -> torch.Tensor:
    """The tensor's raw bits as integers of the same width (NaN payloads compare exactly)."""
    return tensor.contiguous().view(BITS_OF[tensor.element_size()])
