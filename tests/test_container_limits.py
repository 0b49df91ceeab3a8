"""The reader's exact limits (docs/FORMAT.md, Limits and Reader checks) and its order of checks."""

from __future__ import annotations

import contextlib
import json
import time
import tracemalloc

import pytest
import torch
from container_bytes import dump, encode_v3, pack, split

from deepcompression.format.container import (
    DEFAULT_MAX_DECODED_BYTES,
    MAX_HEADER_BYTES,
    MAX_JSON_DEPTH,
    MAX_JSON_INT,
    MAX_TOTAL_NUMEL,
    ChecksumMismatch,
    CorruptStream,
    DecodedTooLarge,
    FormatError,
    HeaderTooLarge,
    InvalidArgument,
    InvalidCode,
    InvalidOffset,
    InvalidValue,
    MalformedHeader,
    QuantizedTensor,
    TruncatedFile,
    decode_model,
    read_info,
)


def constant_file(numel: int) -> bytes:
    """A fully dense one-cluster layer re-declared as ``numel`` elements: zero-bit streams."""
    ones = torch.ones(3, dtype=torch.bool)
    layer = QuantizedTensor("c", ones, ones.long() * 0, torch.tensor([0.5]), 1, 1)
    header, payload = split(encode_v3([layer], {}, {}, {}, compress_header=False))
    tensor = header["tensors"][0]
    tensor["shape"] = [numel]
    tensor["nnz"] = tensor["index"]["symbols"] = tensor["weight"]["symbols"] = numel
    return pack(dump(header), payload)


def peak_bytes(function: object) -> int:
    tracemalloc.start()
    try:
        with contextlib.suppress(FormatError):
            function()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_tiny_file_declaring_2_28_weights_is_refused_before_allocating() -> None:
    data = constant_file(MAX_TOTAL_NUMEL)
    assert len(data) < 400
    assert read_info(data).decoded_bytes == 4 * MAX_TOTAL_NUMEL > DEFAULT_MAX_DECODED_BYTES
    start = time.perf_counter()
    with pytest.raises(DecodedTooLarge, match="max_decoded_bytes") as caught:
        decode_model(data)
    assert time.perf_counter() - start < 1.0
    assert (caught.value.decoded_bytes, caught.value.limit) == (2**30, DEFAULT_MAX_DECODED_BYTES)
    assert str(DEFAULT_MAX_DECODED_BYTES) in str(caught.value)
    assert peak_bytes(lambda: decode_model(data)) < 2**20


def test_the_limit_is_inclusive_and_none_lifts_it() -> None:
    data = constant_file(1000)
    assert decode_model(data, max_decoded_bytes=4000).state_dict["c"].shape == (1000,)
    with pytest.raises(DecodedTooLarge, match="4000 bytes of tensors, over .* limit of 3999"):
        decode_model(data, max_decoded_bytes=3999)
    assert decode_model(data, max_decoded_bytes=None).state_dict["c"].sum().item() == 500.0


def test_the_limit_counts_each_raw_tensor_in_its_dtype() -> None:
    raw = {"i": torch.zeros(10, dtype=torch.int64), "b": torch.zeros(10, dtype=torch.bool)}
    data = encode_v3([], raw, {}, {})
    assert read_info(data).decoded_bytes == 90
    decode_model(data, max_decoded_bytes=90)
    with pytest.raises(DecodedTooLarge):
        decode_model(data, max_decoded_bytes=89)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "1GiB"])
def test_invalid_limits_are_caller_errors(bad: object) -> None:
    with pytest.raises(InvalidArgument, match="max_decoded_bytes"):
        decode_model(constant_file(3), max_decoded_bytes=bad)  # type: ignore[arg-type]


def _depth_file(depth: int) -> bytes:
    """A valid file whose provenance nests arrays so the header's depth is ``depth``."""
    nested: object = "[[[not brackets {{{"
    for _ in range(depth - 2):
        nested = [nested]
    text = dump({"arch": {}, "provenance": {"deep": nested}, "tensors": []})
    return pack(text, b"")


def test_json_depth_limit_is_exact() -> None:
    assert MAX_JSON_DEPTH == 64
    assert read_info(_depth_file(MAX_JSON_DEPTH)).provenance["deep"]
    with pytest.raises(MalformedHeader, match="nested too deeply \\(65 levels; at most 64\\)"):
        read_info(_depth_file(MAX_JSON_DEPTH + 1))
    deep = {"a": None}
    for _ in range(MAX_JSON_DEPTH):
        deep = {"a": deep}
    with pytest.raises(InvalidArgument, match="nested too deeply"):
        encode_v3([], {}, {}, deep)


@pytest.mark.parametrize(
    ("literal", "ok"),
    [
        (str(MAX_JSON_INT), True),
        (str(-MAX_JSON_INT), True),
        ("-0", True),
        (str(MAX_JSON_INT + 1), False),
        (str(-MAX_JSON_INT - 1), False),
        ("1" + "0" * 400, False),
        ("9" * 5000, False),
        ("1e308", True),
        ("1e309", False),
        ("1.5", True),
    ],
)
def test_integer_literals_must_be_exact_in_a_double(literal: str, ok: bool) -> None:
    data = pack(b'{"arch":{},"provenance":{"n":' + literal.encode() + b'},"tensors":[]}', b"")
    if ok:
        assert read_info(data).provenance["n"] == json.loads(literal)
    else:
        with pytest.raises(MalformedHeader, match="beyond|out of float range"):
            read_info(data)


def test_encoder_refuses_integers_the_reader_would_refuse() -> None:
    assert decode_model(encode_v3([], {}, {}, {"n": MAX_JSON_INT})).provenance["n"] > 0
    with pytest.raises(InvalidArgument, match="beyond"):
        encode_v3([], {}, {}, {"n": MAX_JSON_INT + 1})


@pytest.mark.parametrize(
    ("shape", "ok"),
    [
        ([0, MAX_TOTAL_NUMEL], True),
        ([MAX_TOTAL_NUMEL, 0], True),
        ([2**20, 2**20, 0], True),
        ([0, 2**20, 2**20], True),
        ([0, MAX_TOTAL_NUMEL + 1], False),
        ([MAX_TOTAL_NUMEL + 1, 0], False),
        ([2**14, 2**14, 2], False),
        ([0] + [1] * 15, True),
        ([0] + [1] * 16, False),
    ],
)
def test_every_dimension_and_the_element_count_are_capped(shape: list[int], ok: bool) -> None:
    text = dump(
        {
            "arch": {},
            "provenance": {},
            "tensors": [
                {"data": [0, 0], "dtype": "int8", "kind": "raw", "name": "t", "shape": shape}
            ],
        }
    )
    data = pack(text, b"")
    if ok:
        assert read_info(data).layers[0].shape == tuple(shape)
    else:
        with pytest.raises(MalformedHeader, match="shape"):
            read_info(data)


def test_header_cap_is_inclusive() -> None:
    base = b'{"arch":{},"provenance":{"pad":""},"tensors":[]}'
    fill = MAX_HEADER_BYTES - len(base)
    text = base.replace(b'"pad":""', b'"pad":"' + b"x" * fill + b'"')
    assert len(text) == MAX_HEADER_BYTES
    assert len(read_info(pack(text, b"")).provenance["pad"]) == fill
    longer = text.replace(b'"pad":"', b'"pad":"x')
    with pytest.raises(HeaderTooLarge, match=f"{MAX_HEADER_BYTES + 1} exceeds"):
        read_info(pack(longer, b""))


def _two_layer_file() -> tuple[dict, bytes]:
    """Two sparse layers (tables and streams with bits), then a bool raw tensor."""
    gen = torch.Generator().manual_seed(0)
    layers = []
    for name in ("a", "b"):
        mask = torch.rand(8, 8, generator=gen) < 0.5
        labels = torch.randint(0, 4, (8, 8), generator=gen)
        layers.append(QuantizedTensor(name, mask, labels, torch.arange(4.0), 2, 2))
    data = encode_v3(layers, {"f": torch.tensor([True, False])}, {}, {}, compress_header=False)
    return split(data)


def _with(payload: bytes, edits: dict[int, int]) -> bytes:
    body = bytearray(payload)
    for offset, value in edits.items():
        body[offset] = value
    return bytes(body)


def test_order_of_checks_when_a_file_has_several_faults() -> None:
    header, payload = _two_layer_file()
    a, b = header["tensors"][0], header["tensors"][1]
    a_index_pad = a["index"]["stream"][0] + a["index"]["stream"][1] - 1
    a_weight_table = a["weight"]["table"][0]  # L: 0xff is above the 31-bit cap
    b_index_table = b["index"]["table"][0]
    flag = header["tensors"][2]["data"][0]
    assert a["index"]["bits"] % 8, "the test needs padding bits after a's index stream"

    def decode(edits: dict[int, int], head: dict = header) -> None:
        decode_model(pack(dump(head), _with(payload, edits)))

    # Within a tensor: both code tables before either stream's padding.
    with pytest.raises(InvalidCode, match="tensor 'a': weights"):
        decode({a_index_pad: 0xFF, a_weight_table: 0xFF})
    with pytest.raises(CorruptStream, match="tensor 'a': index stream: .*padding"):
        decode({a_index_pad: 0xFF})
    # Across tensors: file order, so a's stream fault wins over b's table fault.
    with pytest.raises(CorruptStream, match="tensor 'a'"):
        decode({a_index_pad: 0xFF, b_index_table: 0xFF})
    with pytest.raises(InvalidValue, match="tensor 'f'"):
        decode({flag: 7})
    # File-level checks come first: payload CRC, then the decoded-size limit, then tensors.
    corrupt = pack(dump(header), _with(payload, {a_weight_table: 0xFF}))
    with pytest.raises(DecodedTooLarge):
        decode_model(corrupt, max_decoded_bytes=10)
    bad_crc = bytearray(corrupt)
    bad_crc[24] ^= 1
    with pytest.raises(ChecksumMismatch, match="payload"):
        decode_model(bytes(bad_crc), max_decoded_bytes=10)
    # Layout: a misplaced section is reported before a short payload.
    moved = json.loads(dump(header))
    moved["tensors"][1]["codebook"][0] += 1
    with pytest.raises(InvalidOffset, match="tensor 'b' codebook"):
        decode_model(pack(dump(moved), payload[:-5]))
    with pytest.raises(TruncatedFile, match="sections need"):
        decode_model(pack(dump(header), payload[:-1]))
