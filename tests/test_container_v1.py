"""Version-1 files, pinned as bytes written by the version-1 writer, decode bit for bit forever."""

from __future__ import annotations

import hashlib

import torch

from deepcompression.container import decode_model, read_info

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
