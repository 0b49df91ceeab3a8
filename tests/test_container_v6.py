"""Format version 6: a Huffman tensor's codebook stored as float16 (docs/FORMAT.md, "Version 6").

The writer takes the 2-byte form exactly when every centroid is a float16 value, so decoding
gives back the given tensor; tag bit 0x20 is undefined before version 6, and each binary16
item decodes to the binary32 of the same value (a NaN's sign and payload kept).
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_container_v4 import TINY_INPUTS

from benchmarks.mutation_bases import build, split_v4
from deepcompression.format.binheader import load_header
from deepcompression.format.container import (
    FORMAT_VERSION,
    MalformedHeader,
    QuantizedTensor,
    decode_model,
    encode_model,
    read_info,
)
from deepcompression.format.header import parse_header


def _layer(centroids: torch.Tensor, seed: int = 0) -> QuantizedTensor:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(6, 8, generator=gen) < 0.6
    labels = torch.randint(0, centroids.numel(), (6, 8), generator=gen)
    return QuantizedTensor("fc.weight", mask, labels, centroids, 3, None)


def _decoded(data: bytes) -> torch.Tensor:
    return decode_model(data).state_dict["fc.weight"]


def _expected(layer: QuantizedTensor) -> torch.Tensor:
    return torch.where(layer.mask, layer.centroids[layer.labels], torch.zeros(()))


def test_float16_centroids_take_two_bytes_each_and_decode_to_the_same_bits() -> None:
    centroids = torch.randn(8, generator=torch.Generator().manual_seed(1)).half().float()
    layer = _layer(centroids)
    data = encode_model([layer], {}, {}, {}, compress_header=False)
    info = read_info(data)
    assert info.version == FORMAT_VERSION >= 6
    (stored,) = info.layers
    assert (stored.codebook_size, stored.codebook_bytes) == (8, 16)
    assert torch.equal(_decoded(data).view(torch.int32), _expected(layer).view(torch.int32))
    v5 = encode_model([layer], {}, {}, {}, compress_header=False, format_version=5)
    assert read_info(v5).layers[0].codebook_bytes == 32 and len(v5) - len(data) == 16
    assert torch.equal(_decoded(v5), _decoded(data))


def test_a_centroid_float16_cannot_hold_keeps_the_whole_codebook_float32() -> None:
    centroids = torch.randn(8, generator=torch.Generator().manual_seed(2)).half().float()
    centroids[3] = 0.1  # not a float16 value
    layer = _layer(centroids)
    data = encode_model([layer], {}, {}, {})
    assert read_info(data).layers[0].codebook_bytes == 32
    assert torch.equal(_decoded(data), _expected(layer))


def _single_from_half(bits: np.ndarray) -> np.ndarray:
    """FORMAT.md's rule: each binary16 as the binary32 of its value; a NaN keeps its sign and
    payload (shifted left 13 bits)."""
    single = bits.view(np.float16).astype(np.float32).view(np.uint32).copy()
    nan = (bits & 0x7C00 == 0x7C00) & (bits & 0x03FF != 0)
    wide = bits.astype(np.uint32)
    single[nan] = (wide[nan] & 0x8000) << 16 | 0x7F800000 | (wide[nan] & 0x03FF) << 13
    return single


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(0, 0xFFFF), min_size=8, max_size=8))
def test_every_float16_item_decodes_to_the_float32_of_its_value(halves: list[int]) -> None:
    """Any 2 bytes in a float16 codebook decode by the rule: infinities, subnormals, signed
    zeros and NaNs (signalling ones too, whatever the CPU's own conversion would do)."""
    layer = _layer(torch.tensor([0.5, -0.25, 2.0, 0.125, 1.5, -3.0, 4.0, -0.5]))
    header, payload = split_v4(encode_model([layer], {}, {}, {}, compress_header=False))
    bits = np.array(halves, dtype=np.uint16)
    data = build(header, bits.astype("<u2").tobytes() + payload[16:], False, 6)
    single = torch.from_numpy(_single_from_half(bits).view(np.int32))
    expected = torch.where(layer.mask, single[layer.labels], torch.zeros((), dtype=torch.int32))
    assert torch.equal(_decoded(data).view(torch.int32), expected)


def test_the_float16_tag_bit_is_undefined_before_version_6() -> None:
    centroids = torch.tensor([0.5, -0.25, 2.0, 0.125])
    quantized, raw, arch, provenance = TINY_INPUTS
    half = [dataclasses.replace(q, centroids=centroids[: q.centroids.numel()]) for q in quantized]
    data = encode_model(half, raw, arch, provenance, compress_header=False, arithmetic=False)
    header, payload = split_v4(data)
    assert header.count(0x21) == 1
    tag_at = header.index(0x21)  # the Huffman record's tag: 0x01 with the float16 bit
    for version in (4, 5):
        with pytest.raises(MalformedHeader, match="tag 0x21 is not defined"):
            decode_model(build(header, payload, False, version))
    assert header[tag_at] == 0x21 and decode_model(build(header, payload, False, 6))


def test_the_rebuilt_record_takes_codebook_dtype_float16_in_version_6_only() -> None:
    centroids = torch.tensor([0.5, -0.25, 2.0, 0.125, 1.5, -3.0, 4.0, -0.5])
    data = encode_model([_layer(centroids)], {}, {}, {}, compress_header=False)
    document, _ = load_header(split_v4(data)[0], False, 6)
    (record,) = document["tensors"]
    assert record["codebook_dtype"] == "float16" and record["codebook"][1] == 16
    parse_header(document, 6)
    for version in (4, 5):
        with pytest.raises(MalformedHeader, match="codebook_dtype"):
            parse_header(document, version)
    for value, length in (("float32", 16), ("float16", 15), ("float16", 18)):
        bad = copy.deepcopy(document)
        bad["tensors"][0] |= {"codebook_dtype": value, "codebook": [0, length]}
        with pytest.raises(MalformedHeader, match="codebook"):
            parse_header(bad, 6)
