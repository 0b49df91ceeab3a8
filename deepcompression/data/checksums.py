"""sha256 pins: hashing bytes and open files, and checking them against what they are pinned to."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import BinaryIO

from deepcompression.data.errors import ChecksumError, DataError

HASH_CHUNK_BYTES = 1 << 20
"""How much of a file a streamed split reads at once to check its sha256."""


def sha256_hex(data: bytes) -> str:
    """Return the hex sha256 of ``data``; the one hash used for every pin in this module."""
    return hashlib.sha256(data).hexdigest()


def verify_sha256(name: str, data: bytes, expected: str) -> None:
    """Raise ChecksumError naming ``name`` and both hashes unless sha256(data) == expected."""
    actual = sha256_hex(data)
    if actual != expected.lower():
        raise ChecksumError(name, expected, actual)


def verify_sha256_file(name: str, handle: BinaryIO, expected: str) -> None:
    """`verify_sha256` of an open file's whole content, read in chunks (never whole)."""
    digest = hashlib.sha256()
    handle.seek(0)
    while chunk := handle.read(HASH_CHUNK_BYTES):
        digest.update(chunk)
    if digest.hexdigest() != expected.lower():
        raise ChecksumError(name, expected, digest.hexdigest())


def check_sha256s(found: Mapping[str, str], expected: Mapping[str, str], where: str) -> None:
    """Check each file named in `expected` ({file name: sha256}) against the sha256 of its bytes
    in `found` ({file name: sha256}, hashed as read); a name not found is an error listing the
    files there."""
    for file, digest in expected.items():
        if file not in found:
            raise DataError(
                f"data.sha256 names {file!r}, which is not among the files read from {where}: "
                f"{', '.join(sorted(found))}."
            )
        if found[file] != digest.lower():
            raise ChecksumError(f"{where}/{file}", digest, found[file])
