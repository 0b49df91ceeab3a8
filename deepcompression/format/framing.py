"""Framing: checks 1-11 of FORMAT.md's order (preamble, header bytes, header, layout, checksums).

``parse_file`` validates everything but the tensors' contents; it allocates only what the file's
own bytes pay for: the inflated header is bounded by its stored length before it is inflated.
"""

from __future__ import annotations

import zlib

from deepcompression.format.binheader import load_header
from deepcompression.format.errors import (
    BadMagic,
    ChecksumMismatch,
    HeaderTooLarge,
    InvalidOffset,
    MalformedHeader,
    TruncatedFile,
    UnsupportedVersion,
)
from deepcompression.format.header import parse_header, quoted
from deepcompression.format.jsontext import load_json
from deepcompression.format.records import ParsedFile, Record
from deepcompression.format.spec import (
    BINARY_HEADER_VERSION,
    FLAG_HEADER_ZLIB,
    FLAG_INPUT_SPEC,
    MAGIC,
    MAX_HEADER_BYTES,
    MAX_HEADER_RATIO,
    MAX_JSON_VALUES,
    MAX_JSON_VALUES_PER_BYTE,
    PREAMBLE,
    PREAMBLE_SIZE,
    SUPPORTED_VERSIONS,
)

__all__ = ["parse_file", "max_json_values"]


def max_json_values(header_len: int) -> int:
    """Most JSON values a header stored in ``header_len`` bytes may hold."""
    return min(MAX_JSON_VALUES, MAX_JSON_VALUES_PER_BYTE * header_len)


def parse_file(data: bytes) -> ParsedFile:
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
    _, version, flags, header_len, json_len, header_crc, payload_crc = PREAMBLE.unpack_from(view)
    if version not in SUPPORTED_VERSIONS:
        raise UnsupportedVersion(
            f"format version {version} is not supported (this reader implements "
            f"{' and '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    known = FLAG_HEADER_ZLIB | (FLAG_INPUT_SPEC if version >= BINARY_HEADER_VERSION else 0)
    if flags & ~known:
        unknown = flags & ~known
        raise UnsupportedVersion(f"unknown flag bits 0x{unknown:04x} for format version {version}")
    for what, size in (("stored", header_len), ("decompressed", json_len)):
        if size > MAX_HEADER_BYTES:
            raise HeaderTooLarge(f"{what} header length {size} exceeds the {MAX_HEADER_BYTES} cap")
    if flags & FLAG_HEADER_ZLIB and json_len > MAX_HEADER_RATIO * header_len:
        raise HeaderTooLarge(
            f"compressed header of {header_len} bytes declares {json_len} bytes of JSON, more "
            f"than {MAX_HEADER_RATIO} times its stored length"
        )
    header_end = PREAMBLE_SIZE + header_len
    if header_end > len(view):
        raise TruncatedFile(f"header needs bytes up to {header_end}, file has {len(view)}")
    stored = view[PREAMBLE_SIZE:header_end]
    if zlib.crc32(stored) != header_crc:
        raise ChecksumMismatch("header CRC32 mismatch; the header bytes are corrupt")
    text = _unpack_header(stored, flags, json_len)
    spec = None
    if version >= BINARY_HEADER_VERSION:
        header, spec = load_header(text, bool(flags & FLAG_INPUT_SPEC), version)
    else:
        header = load_json(text, max_json_values(header_len))
    arch, provenance, records = parse_header(header, version)
    payload = view[header_end:]
    _check_layout(records, len(payload))
    if zlib.crc32(payload) != payload_crc:
        raise ChecksumMismatch("payload CRC32 mismatch; the payload bytes are corrupt")
    return ParsedFile(
        version, flags, header_len, json_len, payload, arch, provenance, records, spec
    )


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


def _check_layout(records: list[Record], payload_len: int) -> None:
    """Sections tile the payload exactly, in file order."""
    expected = 0
    for record in records:
        for part, span in record.spans():
            if span.offset != expected:
                raise InvalidOffset(
                    f"tensor {quoted(record.name)} {part} starts at payload offset "
                    f"{span.offset}, expected {expected}: sections must be contiguous in file order"
                )
            expected += span.length
    if expected > payload_len:
        raise TruncatedFile(f"sections need {expected} payload bytes, file has {payload_len}")
    if expected < payload_len:
        raise InvalidOffset(f"{payload_len - expected} unexpected bytes after the last section")
