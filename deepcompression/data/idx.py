"""The IDX file format (LeCun's MNIST format): encoding, decoding, headers, streamed rows and
read-only maps of any array; errors are IdxFormatError."""

from __future__ import annotations

import io
import math
import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np

from deepcompression.data.checksums import verify_sha256_file
from deepcompression.data.errors import IdxFormatError

_IDX_CODE_TO_DTYPE: dict[int, np.dtype] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_IDX_KIND_TO_CODE: dict[tuple[str, int], int] = {
    (dtype.kind, dtype.itemsize): code for code, dtype in _IDX_CODE_TO_DTYPE.items()
}
_IDX_MAX_DIM = 2**31 - 1


def encode_idx(array: np.ndarray) -> bytes:
    """Serialise an array as an IDX file: zero bytes, type code, rank, big-endian dims, data."""
    array = np.asarray(array)
    return encode_idx_header(array.dtype, array.shape) + idx_body(array)


def encode_idx_header(dtype: np.dtype, shape: tuple[int, ...]) -> bytes:
    """The IDX header of an array of `dtype` and `shape`: what precedes its `idx_body` bytes,
    so that a file can be written chunk by chunk."""
    code = _IDX_KIND_TO_CODE.get((dtype.kind, dtype.itemsize))
    if code is None:
        raise IdxFormatError(
            f"IDX cannot store dtype {dtype}; convert to uint8, int8, int16, int32, float32 "
            "or float64 first."
        )
    if not 1 <= len(shape) <= 255:
        raise IdxFormatError(f"IDX needs 1 to 255 dimensions; got {len(shape)}.")
    if max(shape) > _IDX_MAX_DIM:
        raise IdxFormatError(f"IDX dimensions must be below 2**31; got shape {tuple(shape)}.")
    return bytes([0, 0, code, len(shape)]) + struct.pack(f">{len(shape)}I", *shape)


def idx_body(array: np.ndarray) -> bytes:
    """An array's IDX data bytes (big-endian, C order); of consecutive rows, the concatenation."""
    dtype = array.dtype
    code = _IDX_KIND_TO_CODE[(dtype.kind, dtype.itemsize)]
    return np.ascontiguousarray(array, dtype=_IDX_CODE_TO_DTYPE[code]).tobytes()


def _idx_header(data: bytes) -> tuple[np.dtype, tuple[int, ...], int]:
    """(big-endian dtype, shape, header size) from an IDX file's first 4 + 4 x rank bytes."""
    if len(data) < 4:
        raise IdxFormatError(f"IDX data is {len(data)} bytes; the 4-byte magic number is missing.")
    zero_a, zero_b, code, ndim = data[:4]
    if zero_a or zero_b:
        raise IdxFormatError("IDX magic number must start with two zero bytes; this is not IDX.")
    if code not in _IDX_CODE_TO_DTYPE:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_CODE_TO_DTYPE)
        raise IdxFormatError(f"IDX type code 0x{code:02X} is unknown; expected one of {known}.")
    if ndim == 0:
        raise IdxFormatError("IDX rank is 0; an IDX file needs at least one dimension.")
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise IdxFormatError(
            f"IDX header needs {header_size} bytes for {ndim} dims; data is short."
        )
    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    if max(shape) > _IDX_MAX_DIM:
        raise IdxFormatError(f"IDX dimensions must be below 2**31; header says {shape}.")
    return _IDX_CODE_TO_DTYPE[code], shape, header_size


def _check_idx_body(dtype: np.dtype, shape: tuple[int, ...], found: int) -> None:
    """Refuse an IDX body of `found` bytes that is not exactly what the header promises."""
    body_size = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if found != body_size:
        raise IdxFormatError(
            f"IDX header promises {body_size} data bytes for shape {shape}; "
            f"found {found}. The file is truncated or has trailing bytes."
        )


def decode_idx(data: bytes) -> np.ndarray:
    """Parse IDX bytes into a writable native-endian array; reject malformed headers and sizes."""
    dtype, shape, header_size = _idx_header(data)
    _check_idx_body(dtype, shape, len(data) - header_size)
    flat = np.frombuffer(data, dtype=dtype, offset=header_size)
    return flat.reshape(shape).astype(dtype.newbyteorder("="))


def read_idx_header(handle: BinaryIO) -> tuple[np.dtype, tuple[int, ...], int]:
    """(big-endian dtype, shape, header size) of an open IDX file, reading its header alone;
    its size must be exactly what the header promises."""
    handle.seek(0)
    head = handle.read(4)
    if len(head) == 4:
        head += handle.read(4 * head[3])
    dtype, shape, header_size = _idx_header(head)
    _check_idx_body(dtype, shape, handle.seek(0, io.SEEK_END) - header_size)
    return dtype, shape, header_size


def read_idx_stream_header(handle: BinaryIO, name: str) -> tuple[np.dtype, tuple[int, ...]]:
    """(big-endian dtype, shape) from the header at the start of a stream that cannot seek (a
    gzip file); `iter_idx_rows` reads the rows after it. Errors name the file."""
    head = handle.read(4)
    if len(head) == 4:
        head += handle.read(4 * head[3])
    try:
        dtype, shape, _ = _idx_header(head)
    except IdxFormatError as exc:
        raise IdxFormatError(f"{name}: not a valid IDX file: {exc}") from None
    return dtype, shape


def iter_idx_rows(
    handle: BinaryIO, dtype: np.dtype, shape: tuple[int, ...], name: str, rows: int
) -> Iterator[np.ndarray]:
    """The rows of an IDX file after its header, `rows` at a time, as native-endian arrays; a
    body shorter or longer than the header promises is an error naming the file."""
    row_bytes = math.prod(shape[1:]) * dtype.itemsize
    done = 0
    while done < shape[0]:
        want = min(rows, shape[0] - done)
        data = handle.read(want * row_bytes)
        if len(data) != want * row_bytes:
            found = done * row_bytes + len(data)
            _check_idx_body_named(name, dtype, shape, found)
        block = np.frombuffer(data, dtype=dtype).reshape((want, *shape[1:]))
        yield block.astype(dtype.newbyteorder("="), copy=False)
        done += want
    if handle.read(1):
        raise IdxFormatError(
            f"{name}: not a valid IDX file: IDX header promises {shape[0] * row_bytes} data "
            f"bytes for shape {shape}; found more. The file has trailing bytes."
        )


def _check_idx_body_named(name: str, dtype: np.dtype, shape: tuple[int, ...], found: int) -> None:
    """`_check_idx_body`, its error naming the file."""
    try:
        _check_idx_body(dtype, shape, found)
    except IdxFormatError as exc:
        raise IdxFormatError(f"{name}: not a valid IDX file: {exc}") from None


def map_idx(handle: BinaryIO, name: str, expected_sha256: str) -> np.ndarray:
    """A read-only memmap of an open IDX file's uint8 array, the file first checked against
    `expected_sha256` in chunks: nothing is read into memory whole. Errors name the file."""
    verify_sha256_file(name, handle, expected_sha256)
    try:
        dtype, shape, offset = read_idx_header(handle)
    except IdxFormatError as exc:
        raise IdxFormatError(f"{name}: {exc}") from None
    if dtype != np.dtype(np.uint8):
        raise IdxFormatError(
            f"{name}: images must be unsigned bytes (IDX type 0x08); found {dtype}."
        )
    if not all(shape):
        raise IdxFormatError(f"{name}: holds no images (shape {shape}).")
    return np.memmap(handle, dtype=np.uint8, mode="r", offset=offset, shape=shape)
