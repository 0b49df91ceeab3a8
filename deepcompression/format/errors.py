"""The errors of the compressed-model format: one FormatError subclass per kind of bad input.

Decoding raises only FormatError subclasses for bad data (FORMAT.md's order of checks names which);
InvalidArgument is a caller's mistake, never raised for a file's bytes.
"""

from __future__ import annotations

__all__ = [
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
]


class FormatError(ValueError):
    """Base class for malformed or corrupt encoded data (never raised for caller mistakes)."""


class InvalidCode(FormatError):
    """A code table is not a complete prefix code over the allowed symbol range."""


class CorruptStream(FormatError):
    """A coded stream does not decode to the declared number of in-range symbols."""


class InvalidArgument(ValueError):
    """An encoder or helper was called with invalid arguments (a caller bug, not corrupt data)."""


class BadMagic(FormatError):
    """The data does not start with the compressed-model magic bytes."""


class UnsupportedVersion(FormatError):
    """The file uses a format version or flag this reader does not implement."""


class TruncatedFile(FormatError):
    """The file ends before a section it declares."""


class HeaderTooLarge(FormatError):
    """A declared header length exceeds MAX_HEADER_BYTES, or a compressed header declares more
    than MAX_HEADER_RATIO times its stored length."""


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
