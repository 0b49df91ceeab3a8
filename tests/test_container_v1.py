"""Version-1 files, pinned as bytes written by the version-1 writer, decode bit for bit forever."""

from __future__ import annotations

import hashlib
import struct
import zlib

import pytest
import torch

from deepcompression.format.container import (
    InvalidArgument,
    MalformedHeader,
    QuantizedTensor,
    decode_model,
    encode_model,
    read_info,
)

TINY_V1_HEX = (
    "8944435a0d0a1a0a01000000480100004801000027fe9416b5294e48"
    + b'{"arch":{"name":"tiny"},"provenance":{},"tensors":[{"codebook":[0,8],'
    b'"index":{"bits":6,"stream":[18,1],"symbols":4,"table":[8,6]},"index_bits":2,'
    b'"kind":"huffman","name":"w","nnz":3,"shape":[2,4],'
    b'"weight":{"bits":3,"stream":[19,1],"symbols":3,"table":[14,4]},"weight_bits":1},'
    b'{"data":[20,8],"kind":"raw","name":"b","shape":[2]}]}'.hex()
    + "000000bf0000803e"
    + "020102000103"
    + "01020001"
    + "70"
    + "a0"
    + "0000803f000000c0"
)
"""The version-1 worked example of docs/FORMAT.md as the version-1 writer wrote it."""
TINY_V1_SHA256 = "f18e28dbf563e3ecbf0932fdd6cb1b07d3c296d00070e75fc1a6434ff25cdf72"

V1_FIXTURE_HEX = "".join(
    [
        "8944435a0d0a1a0a0100010054010000bf030000a07ea352a77ee92078da8d93dd8e82301484dfe55cf7a23f",
        "e02aaf628c2958a1515ad2d6bf35bcfb1e44a4a8bbeb1da53367be49db2b485754905d617792aef4b72fc858",
        "4bc0c85a41065b7d0e07a700ff34ce1e9591a6509dacd461edd4517b6d0dea8eac930465bc7538667985c26e",
        "546e2d8e5b52c2f88a80361b75eebcb90ea84918011f9c92354a38273394f84b9ddbfd7d33c87c8f594bc649",
        "b26aeffe756fe60476b8c6e4eab0ddd6d2c003b9948def56e61b3281232bd97453044928269c942eab3052a4",
        "31c49cb01842440c33e46b07fb00d192494fbe40d0979e344a105f84c6098b314108c29f5b26bfb72cacf161",
        "a8b9886b8a372d3f65487b86494bf6d412fdf3bf5b26e934818e09b7adcfcf52d54db80c2de9d89213fe4fcb",
        "0f185e5b6e6490bd8075b7f14ee5e46924c207d03b4698ee723ebc3376bb03efacbe907be922e3c4d7f3be8d",
        "b4a1d2a68c8c140fb95db53fb3ec2b950100c07f0000008001000000010201030201020200017ffeffffff00",
        "980000403f000000000000803f0000803f0100c07f0000008001000000000080ff00000080",
    ]
)
"""A zlib-headed version-1 file written by the version-1 writer (commit d404885): a sparse
layer with FILLERs whose codebook holds a NaN payload, -0.0 and the smallest subnormal; a
constant layer (zero-bit streams); an all-pruned layer; raw tensors with special bit patterns,
a scalar and an empty tensor."""
V1_FIXTURE_SHA256 = "62328a19aa3c08bd01b831731d7c04d46aab7432b3e551ce7db3550c8ded77d6"
NAN_PAYLOAD, NEG_ZERO, SUBNORMAL, NEG_INF = 0x7FC00001, -(2**31), 1, -8388608


def _gaps_bits() -> list[int]:
    bits = [0] * 120
    bits[1], bits[45], bits[119] = NAN_PAYLOAD, SUBNORMAL, NEG_ZERO
    return bits


EXPECTED_BITS = {
    "gaps": ([3, 40], _gaps_bits()),
    "const": ([3, 3], [0x3F400000] * 9),
    "empty": ([2, 2], [0] * 4),
    "nan_bits": ([4], [NAN_PAYLOAD, NEG_ZERO, SUBNORMAL, NEG_INF]),
    "scalar": ([], [NEG_ZERO]),
    "nothing": ([0, 3], []),
}


def test_pinned_version_1_file_decodes_bit_for_bit() -> None:
    data = bytes.fromhex(V1_FIXTURE_HEX)
    assert hashlib.sha256(data).hexdigest() == V1_FIXTURE_SHA256
    decoded = decode_model(data)
    assert list(decoded.state_dict) == list(EXPECTED_BITS)
    for name, (shape, bits) in EXPECTED_BITS.items():
        tensor = decoded.state_dict[name]
        assert tensor.dtype == torch.float32 and list(tensor.shape) == shape
        assert tensor.view(torch.int32).reshape(-1).tolist() == bits
    assert decoded.arch == {"name": "fixture", "kwargs": {"k": 1}}
    assert decoded.provenance == {"git_revision": "v1"}


def test_pinned_version_1_file_info() -> None:
    info = read_info(bytes.fromhex(V1_FIXTURE_HEX))
    assert info.version == 1 and info.header_compressed
    assert info.file_bytes == len(V1_FIXTURE_HEX) // 2
    assert [layer.kind for layer in info.layers] == ["huffman"] * 3 + ["raw"] * 3
    assert info.dense_bytes == 4 * (120 + 9 + 4 + 4 + 1 + 0)


def _tiny_inputs() -> tuple[list[QuantizedTensor], dict[str, torch.Tensor]]:
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask.view(-1)[[0, 5, 6]] = True
    labels = torch.zeros(2, 4, dtype=torch.int64)
    labels.view(-1)[[0, 5, 6]] = torch.tensor([1, 0, 1])
    layer = QuantizedTensor("w", mask, labels, torch.tensor([-0.5, 0.25]), 1, 2)
    return [layer], {"b": torch.tensor([1.0, -2.0])}


def test_version_1_worked_example_decodes_and_the_v1_writer_still_writes_it() -> None:
    data = bytes.fromhex(TINY_V1_HEX)
    assert hashlib.sha256(data).hexdigest() == TINY_V1_SHA256
    decoded = decode_model(data)
    assert decoded.state_dict["w"].tolist() == [[0.25, 0, 0, 0], [0, -0.5, 0.25, 0]]
    assert decoded.state_dict["b"].tolist() == [1.0, -2.0]
    quantized, raw = _tiny_inputs()
    args = (quantized, raw, {"name": "tiny"}, {})
    assert encode_model(*args, compress_header=False, format_version=1) == data
    v2 = encode_model(*args, compress_header=False, format_version=2)
    assert v2[8:10] == b"\x02\x00" and read_info(v2).version == 2
    for name, tensor in decode_model(v2).state_dict.items():
        assert torch.equal(tensor.view(torch.int32), decoded.state_dict[name].view(torch.int32))


def test_version_1_rules_stay_version_1() -> None:
    data = bytes.fromhex(TINY_V1_HEX)
    with_dtype = data.replace(b'"data":[20,8],', b'"data":[20,8],"dtype":"float32",')
    header = with_dtype[28:-28]
    fields = list(struct.unpack_from("<8sHHIIII", data))
    fields[3] = fields[4] = len(header)
    fields[5] = zlib.crc32(header)
    with pytest.raises(MalformedHeader, match="unknown fields \\['dtype'\\]"):
        decode_model(struct.pack("<8sHHIIII", *fields) + header + data[-28:])
    # Version 1 leaves arch uninterpreted; version 2 types its name and kwargs.
    quantized, raw = _tiny_inputs()
    odd = {"name": 5, "kwargs": []}
    assert decode_model(encode_model(quantized, raw, odd, {}, format_version=1)).arch == odd
    with pytest.raises(InvalidArgument, match="arch 'name'"):
        encode_model(quantized, raw, odd, {})
    with pytest.raises(InvalidArgument, match="float32"):
        encode_model([], {"n": torch.zeros(1, dtype=torch.int64)}, {}, {}, format_version=1)
