"""Compressed model file: bitwise round trips, pinned bytes, determinism, sizes, error classes."""

from __future__ import annotations

import hashlib
import json
import time
import tracemalloc
import zlib
from collections.abc import Callable
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from container_bytes import PREAMBLE, dump, encode_v3, header_of

from deepcompression.format.container import (
    MAGIC,
    MAX_HEADER_BYTES,
    MAX_TOTAL_NUMEL,
    BadMagic,
    ChecksumMismatch,
    CorruptStream,
    FormatError,
    HeaderTooLarge,
    InvalidArgument,
    InvalidCode,
    InvalidOffset,
    MalformedHeader,
    QuantizedTensor,
    TruncatedFile,
    UnsupportedVersion,
    decode_model,
    read_info,
)
from deepcompression.format.sizes import (
    compression_ratio,
    layer_sizes,
    model_sizes,
    pq_bits,
    pq_layer_report,
    pqh_bits,
)
from deepcompression.format.sparse_index import constant_positions, decode_positions


def make_layer(
    name: str,
    shape: tuple[int, ...],
    density: float,
    weight_bits: int = 4,
    index_bits: int = 3,
    seed: int = 0,
) -> QuantizedTensor:
    """A random pruned layer with skewed labels (normal weights bucketed into 2**bits bins)."""
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=gen) < density
    k = 1 << weight_bits
    labels = (torch.randn(shape, generator=gen) * k / 6 + k / 2).long().clamp(0, k - 1)
    labels[~mask] = -1  # pruned positions carry no label; the encoder must ignore them
    centroids = torch.randn(k, generator=gen)
    return QuantizedTensor(name, mask, labels, centroids, weight_bits, index_bits)


def expected_weight(q: QuantizedTensor) -> torch.Tensor:
    dense = torch.zeros(q.shape, dtype=torch.float32)
    dense[q.mask] = q.centroids[q.labels[q.mask]]
    return dense


def assert_bitwise_equal(a: torch.Tensor, b: torch.Tensor) -> None:
    assert a.dtype == b.dtype == torch.float32
    assert a.shape == b.shape
    assert torch.equal(a.view(torch.int32), b.view(torch.int32))


def repack(
    data: bytes,
    *,
    header: bytes | None = None,
    payload: bytes | None = None,
    version: int | None = None,
    flags: int | None = None,
) -> bytes:
    """Rebuild a file around a replaced (plain JSON) header and/or payload, with valid CRCs."""
    magic, old_version, old_flags, header_len, json_len, _, _ = PREAMBLE.unpack_from(data)
    stored = data[PREAMBLE.size : PREAMBLE.size + header_len]
    plain = zlib.decompress(stored) if old_flags & 1 else stored
    new_header = plain if header is None else header
    new_payload = data[PREAMBLE.size + header_len :] if payload is None else payload
    return (
        PREAMBLE.pack(
            magic,
            old_version if version is None else version,
            0 if flags is None else flags,
            len(new_header),
            len(new_header),
            zlib.crc32(new_header),
            zlib.crc32(new_payload),
        )
        + new_header
        + new_payload
    )


def tiny_file(compress_header: bool = False, version: int = 2) -> bytes:
    """The worked example of docs/FORMAT.md (version 2; version 3 differs only in that field)."""
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask.view(-1)[[0, 5, 6]] = True
    labels = torch.zeros(2, 4, dtype=torch.int64)
    labels.view(-1)[[0, 5, 6]] = torch.tensor([1, 0, 1])
    layer = QuantizedTensor("w", mask, labels, torch.tensor([-0.5, 0.25]), 1, 2)
    return encode_v3(
        [layer],
        {"b": torch.tensor([1.0, -2.0])},
        {"name": "tiny"},
        {},
        compress_header=compress_header,
        format_version=version,
    )


TINY_HEX = (
    "8944435a0d0a1a0a020000005a0100005a010000b0a0a134b5294e48"
    + b'{"arch":{"name":"tiny"},"provenance":{},"tensors":[{"codebook":[0,8],'
    b'"index":{"bits":6,"stream":[18,1],"symbols":4,"table":[8,6]},"index_bits":2,'
    b'"kind":"huffman","name":"w","nnz":3,"shape":[2,4],'
    b'"weight":{"bits":3,"stream":[19,1],"symbols":3,"table":[14,4]},"weight_bits":1},'
    b'{"data":[20,8],"dtype":"float32","kind":"raw","name":"b","shape":[2]}]}'.hex()
    + "000000bf0000803e"
    + "020102000103"
    + "01020001"
    + "70"
    + "a0"
    + "0000803f000000c0"
)
TINY_SHA256 = "5332ef60a7e6e367847becfba6ab9c6482656f370fed9125611f1f576afc1277"


def test_pinned_bytes_of_the_worked_example() -> None:
    data = tiny_file()
    assert data.hex() == TINY_HEX
    assert hashlib.sha256(data).hexdigest() == TINY_SHA256
    decoded = decode_model(data)
    assert decoded.state_dict["w"].tolist() == [[0.25, 0, 0, 0], [0, -0.5, 0.25, 0]]
    assert decoded.state_dict["b"].tolist() == [1.0, -2.0]
    v3 = tiny_file(version=3)  # column 3 is empty, but declaring it costs more than it saves
    assert v3[:8] + b"\x03\x00" + v3[10:] == v3 and v3[10:] == data[10:]
    assert decoded.arch == {"name": "tiny"}
    assert decoded.provenance == {}


def test_round_trip_fc_and_conv_layers_bitwise() -> None:
    layers = [
        make_layer("conv1.weight", (6, 3, 5, 5), 0.6, weight_bits=8, index_bits=8, seed=1),
        make_layer("fc1.weight", (40, 120), 0.1, weight_bits=5, index_bits=5, seed=2),
        make_layer("fc2.weight", (10, 40), 0.3, weight_bits=2, index_bits=1, seed=3),
    ]
    raw = {"conv1.bias": torch.randn(6), "fc1.bias": torch.randn(40)}
    decoded = decode_model(encode_v3(layers, raw, {"name": "net"}, {"git": "abc"}))
    assert list(decoded.state_dict) == [q.name for q in layers] + list(raw)
    for q in layers:
        assert_bitwise_equal(decoded.state_dict[q.name], expected_weight(q))
    for name, tensor in raw.items():
        assert_bitwise_equal(decoded.state_dict[name], tensor)
    assert [layer.name for layer in decoded.layers] == list(decoded.state_dict)
    assert all(t.device.type == "cpu" for t in decoded.state_dict.values())


def _edge_layer(case: str) -> QuantizedTensor:
    if case == "empty":
        mask = torch.zeros(5, 7, dtype=torch.bool)
        return QuantizedTensor("e", mask, torch.zeros(5, 7, dtype=torch.long), torch.ones(3), 2, 4)
    if case == "empty_codebook":
        mask = torch.zeros(4, dtype=torch.bool)
        return QuantizedTensor("e", mask, torch.zeros(4, dtype=torch.long), torch.zeros(0), 1, 1)
    if case == "single_symbol":
        mask = torch.rand(9, 11, generator=torch.Generator().manual_seed(4)) < 0.4
        labels = torch.full((9, 11), 2, dtype=torch.long)
        return QuantizedTensor("s", mask, labels, torch.tensor([0.1, 0.2, 0.3]), 2, 3)
    if case == "all_zero":
        mask = torch.ones(6, 6, dtype=torch.bool)
        labels = torch.zeros(6, 6, dtype=torch.long)
        return QuantizedTensor("z", mask, labels, torch.zeros(1), 1, 5)
    if case == "several_fillers":
        mask = torch.zeros(3, 100, dtype=torch.bool)
        mask[0, 0] = mask[2, 99] = True
        labels = torch.zeros(3, 100, dtype=torch.long)
        labels[2, 99] = 1
        return QuantizedTensor("f", mask, labels, torch.tensor([1.5, -1.5]), 1, 2)
    if case == "special_values":
        mask = torch.ones(2, 3, dtype=torch.bool)
        labels = torch.tensor([[0, 1, 2], [3, 0, 1]])
        centroids = torch.tensor([-0.0, float("nan"), float("-inf"), 1e-45])
        return QuantizedTensor("v", mask, labels, centroids, 2, 2)
    raise AssertionError(case)


@pytest.mark.parametrize(
    "case",
    ["empty", "empty_codebook", "single_symbol", "all_zero", "several_fillers", "special_values"],
)
def test_edge_case_layers_round_trip(case: str) -> None:
    layer = _edge_layer(case)
    data = encode_v3([layer], {}, {}, {})
    assert_bitwise_equal(decode_model(data).state_dict[layer.name], expected_weight(layer))


def test_zero_bit_streams_for_constant_layers() -> None:
    info = read_info(encode_v3([_edge_layer("all_zero")], {}, {}, {})).layers[0]
    assert (info.index_stream_bits, info.weight_stream_bits) == (0, 0)
    assert (info.index_stream_bytes, info.weight_stream_bytes) == (0, 0)
    assert info.index_symbols == info.nnz == 36


def test_several_fillers_are_counted() -> None:
    info = read_info(encode_v3([_edge_layer("several_fillers")], {}, {}, {})).layers[0]
    assert info.nnz == 2
    assert info.index_symbols == 2 + (299 - 0 - 1) // 3


def test_raw_tensor_shapes_round_trip() -> None:
    raw = {
        "scalar": torch.tensor(3.5),
        "empty": torch.zeros(0, 3),
        "conv": torch.randn(2, 3, 2, 2),
        "strided": torch.randn(4, 5).t(),
    }
    decoded = decode_model(encode_v3([], raw, {}, {})).state_dict
    assert list(decoded) == list(raw)
    for name, tensor in raw.items():
        assert_bitwise_equal(decoded[name], tensor.contiguous())


def test_encoding_is_deterministic() -> None:
    layers = [make_layer("a.weight", (30, 20), 0.2, seed=5)]
    raw = {"a.bias": torch.randn(30)}
    first = encode_v3(layers, raw, {"name": "m", "kwargs": {"x": 1}}, {"p": [1, 2], "g": "x"})
    second = encode_v3(layers, raw, {"kwargs": {"x": 1}, "name": "m"}, {"g": "x", "p": [1, 2]})
    assert first == second


def test_compressed_and_plain_headers_hold_the_same_json() -> None:
    plain, packed = tiny_file(False), tiny_file(True)
    assert len(packed) < len(plain)
    assert header_of(plain) == header_of(packed)
    assert read_info(packed).header_compressed and not read_info(plain).header_compressed
    for name, tensor in decode_model(plain).state_dict.items():
        assert_bitwise_equal(decode_model(packed).state_dict[name], tensor)


def test_read_info_accounts_for_every_byte() -> None:
    layers = [make_layer("fc.weight", (50, 30), 0.15, seed=6), _edge_layer("all_zero")]
    data = encode_v3(layers, {"fc.bias": torch.randn(50)}, {"name": "m"}, {"run": 1})
    info = read_info(data)
    parts = sum(layer.total_bytes for layer in info.layers)
    assert info.preamble_bytes + info.header_bytes + parts == len(data) == info.file_bytes
    assert info.payload_bytes == parts
    assert info.dense_bytes == 4 * (1500 + 36 + 50)
    assert [(i.kind, i.nnz) for i in info.layers] == [
        ("huffman", int(layers[0].mask.sum())),
        ("huffman", 36),
        ("raw", 50),
    ]
    assert info.arch == {"name": "m"} and info.provenance == {"run": 1}


def test_read_info_of_the_worked_example() -> None:
    info = read_info(tiny_file())
    w, b = info.layers
    assert (w.shape, w.numel, w.nnz, w.codebook_size) == ((2, 4), 8, 3, 2)
    assert (w.index_symbols, w.index_stream_bits, w.weight_stream_bits) == (4, 6, 3)
    assert (w.index_table_bytes, w.weight_table_bytes, w.codebook_bytes) == (6, 4, 8)
    assert (b.kind, b.raw_bytes, b.weight_bits, b.index_bits) == ("raw", 8, 32, 0)
    assert (info.header_bytes, info.payload_bytes, info.file_bytes) == (346, 28, 402)


def test_sizes_follow_the_paper_formulas_on_the_worked_example() -> None:
    sizes = model_sizes(read_info(tiny_file()))
    layer = sizes.layers["w"]
    # P+Q: 3 weights x 1 bit + 4 index entries x 2 bits + 2 float32 centroids.
    assert layer.pq_bits == pq_bits(3, 1, 4, 2, 2) == 3 + 8 + 64
    # P+Q+H: 6 + 3 stream bits + (6 + 4) table bytes + the codebook.
    assert layer.pqh_bits == pqh_bits(6, 3, 80, 2) == 6 + 3 + 80 + 64
    assert layer.pq_ratio == pytest.approx(256 / 75)
    assert layer.pqh_ratio == pytest.approx(256 / 153)
    assert layer.kept_percent == pytest.approx(37.5)
    assert layer.huffman_index_bits == pytest.approx(6 / 4)
    assert sizes.raw_numel == 2
    assert sizes.file_ratio == pytest.approx(4 * 10 / 402)
    summary = sizes.to_dict()
    assert summary["total"]["pqh_bits"] == 153
    assert json.loads(json.dumps(summary)) == summary
    assert compression_ratio(10, 0) is None


def test_sizes_reject_raw_layers() -> None:
    with pytest.raises(InvalidArgument, match="raw"):
        layer_sizes(read_info(tiny_file()).layers[1])


def test_pq_layer_report_from_a_checkpoint() -> None:
    q = make_layer("fc1.weight", (20, 30), 0.2, weight_bits=3, index_bits=4, seed=8)
    checkpoint = SimpleNamespace(
        state_dict={"fc1.weight": torch.zeros(20, 30), "fc1.bias": torch.zeros(20)},
        masks={"fc1.weight": q.mask},
        centroids={"fc1.weight": q.centroids},
        bits={"fc1.weight": 3},
    )
    report = pq_layer_report(checkpoint, {"fc1": 4})
    data = encode_v3([q], {"fc1.bias": torch.zeros(20)}, {}, {})
    from_file = model_sizes(read_info(data)).layers["fc1.weight"]
    assert report.layers["fc1"].pq_bits == from_file.pq_bits
    assert report.ratio == pytest.approx(600 * 32 / from_file.pq_bits)
    assert report.raw_numel == 20 and report.file_ratio is None
    with pytest.raises(InvalidArgument, match="index_bits"):
        pq_layer_report(checkpoint, {})


def _bad(**changes: object) -> QuantizedTensor:
    base = {
        "name": "w",
        "mask": torch.ones(2, 2, dtype=torch.bool),
        "labels": torch.zeros(2, 2, dtype=torch.long),
        "centroids": torch.zeros(2),
        "weight_bits": 1,
        "index_bits": 2,
    }
    base.update(changes)
    return QuantizedTensor(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("layer", "message"),
    [
        (_bad(labels=torch.tensor([[0, 2], [0, 0]])), "label 2 at surviving position 1"),
        (_bad(labels=torch.tensor([[0, -1], [0, 0]])), "outside the codebook"),
        (_bad(weight_bits=0), "weight_bits"),
        (_bad(index_bits=17), "index_bits"),
        (_bad(index_bits=True), "index_bits"),
        (_bad(centroids=torch.zeros(3)), "3 centroids do not fit weight_bits=1"),
        (_bad(centroids=torch.zeros(2, dtype=torch.float64)), "float32"),
        (_bad(centroids=torch.zeros(1, 2)), "1-D"),
        (_bad(mask=torch.ones(2, 2)), "torch.bool"),
        (_bad(labels=torch.zeros(2, 2)), "integer"),
        (_bad(labels=torch.zeros(4, dtype=torch.long)), "labels shape"),
        (_bad(name=""), "non-empty"),
    ],
)
def test_encoder_rejects_invalid_layers(layer: QuantizedTensor, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        encode_v3([layer], {}, {}, {})


def test_encoder_rejects_invalid_model_inputs() -> None:
    with pytest.raises(InvalidArgument, match="more than once"):
        encode_v3([_bad()], {"w": torch.zeros(1)}, {}, {})
    with pytest.raises(InvalidArgument, match="more than once"):
        encode_v3([_bad(), _bad()], {}, {}, {})
    with pytest.raises(InvalidArgument, match="float32"):
        encode_v3([], {"b": torch.zeros(2, dtype=torch.int64)}, {}, {}, format_version=1)
    with pytest.raises(InvalidArgument, match="supported: float32"):
        encode_v3([], {"b": torch.zeros(2, dtype=torch.complex64)}, {}, {})
    with pytest.raises(InvalidArgument, match="format_version"):
        encode_v3([], {}, {}, {}, format_version=9)
    with pytest.raises(InvalidArgument, match="arch"):
        encode_v3([], {}, ["not", "a", "dict"], {})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="JSON-able"):
        encode_v3([], {}, {}, {"lr": float("nan")})
    with pytest.raises(InvalidArgument, match="JSON-able"):
        encode_v3([], {}, {}, {"obj": object()})
    huge = torch.zeros(1, 1, dtype=torch.bool).expand(2, MAX_TOTAL_NUMEL // 2 + 1)
    with pytest.raises(InvalidArgument, match="at most"):
        encode_v3(
            [_bad(mask=huge, labels=torch.zeros(1, 1).long().expand(huge.shape))], {}, {}, {}
        )
    long = torch.zeros(1, 1, dtype=torch.bool).expand(0, MAX_TOTAL_NUMEL + 1)
    with pytest.raises(InvalidArgument, match="dimension over"):
        encode_v3(
            [_bad(mask=long, labels=torch.zeros(1, 1).long().expand(long.shape))], {}, {}, {}
        )
    with pytest.raises(InvalidArgument, match="dimension over"):
        encode_v3([], {"b": torch.zeros(0, MAX_TOTAL_NUMEL + 1, dtype=torch.int8)}, {}, {})


def _edit_header(edit: object) -> bytes:
    data = tiny_file()
    header = header_of(data)
    edit(header)  # type: ignore[operator]
    return repack(data, header=dump(header))


def _set(path: list, value: object) -> object:
    def apply(header: dict) -> None:
        target = header
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return apply


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"PK\x03\x04" + bytes(40), BadMagic, "magic"),
        (b"", TruncatedFile, "preamble"),
        (MAGIC + b"\x01\x00", TruncatedFile, "preamble"),
        (repack(tiny_file(), version=9), UnsupportedVersion, "version 9"),
        (repack(tiny_file(), version=0), UnsupportedVersion, "version 0"),
        (repack(tiny_file(), flags=4), UnsupportedVersion, "flag"),
        (tiny_file()[:100], TruncatedFile, "header"),
        (tiny_file()[:-1], TruncatedFile, "payload"),
        (tiny_file() + b"\x00", InvalidOffset, "unexpected bytes"),
        (repack(tiny_file(), header=b"{not json"), MalformedHeader, "JSON"),
        (repack(tiny_file(), header=b"[" * 100_000), MalformedHeader, "nested"),
        (repack(tiny_file(), header=b'{"a":1,"a":2}'), MalformedHeader, "duplicate"),
        (repack(tiny_file(), header=b'{"a":NaN}'), MalformedHeader, "NaN"),
        (repack(tiny_file(), header=b"\xff\xfe"), MalformedHeader, "UTF-8"),
        (
            _edit_header(_set(["tensors", 0, "shape"], [1 << 20, 1 << 20])),
            MalformedHeader,
            "exceeds",
        ),
        (_edit_header(_set(["tensors", 0, "nnz"], 9)), MalformedHeader, "nnz"),
        (_edit_header(_set(["tensors", 0, "weight_bits"], True)), MalformedHeader, "weight_bits"),
        (_edit_header(_set(["tensors", 0, "extra"], 1)), MalformedHeader, "unknown fields"),
        (_edit_header(_set(["tensors", 1, "name"], "w")), MalformedHeader, "twice"),
        (_edit_header(_set(["tensors", 0, "codebook"], [0, 12])), MalformedHeader, "codebook"),
        (_edit_header(_set(["tensors", 0, "index", "bits"], 9)), MalformedHeader, "bits"),
        (_edit_header(_set(["tensors", 0, "index", "table"], [9, 6])), InvalidOffset, "offset"),
        (_edit_header(_set(["tensors", 1, "data"], [20, 1 << 40])), MalformedHeader, "raw data"),
    ],
)
def test_specific_errors(data: bytes, error: type[FormatError], message: str) -> None:
    with pytest.raises(error, match=message):
        decode_model(data)
    assert issubclass(error, FormatError) and issubclass(error, ValueError)


def _with_payload(edit: object) -> bytes:
    data = tiny_file()
    payload = bytearray(data[-28:])
    edit(payload)  # type: ignore[operator]
    return repack(data, payload=bytes(payload))


def test_checksum_errors() -> None:
    data = bytearray(tiny_file())
    data[-1] ^= 1
    with pytest.raises(ChecksumMismatch, match="payload"):
        decode_model(bytes(data))
    data = bytearray(tiny_file())
    data[40] ^= 1
    with pytest.raises(ChecksumMismatch, match="header"):
        decode_model(bytes(data))


def test_stream_and_code_errors_name_the_tensor() -> None:
    # Index table counts (1, 2) at payload bytes 9-10 become (2, 1): over-subscribed.
    over = _with_payload(lambda p: p.__setitem__(slice(9, 11), b"\x02\x01"))
    with pytest.raises(InvalidCode, match="tensor 'w': index stream: .*over-subscribed"):
        decode_model(over)
    # Duplicate symbol in the weight table.
    duplicate = _with_payload(lambda p: p.__setitem__(17, 0))
    with pytest.raises(InvalidCode, match="more than once"):
        decode_model(duplicate)
    # Non-zero padding after the 6 index bits.
    padding = _with_payload(lambda p: p.__setitem__(18, 0x71))
    with pytest.raises(CorruptStream, match="padding"):
        decode_model(padding)
    # Index bits "010100" decode to symbols 0, 1, 1, 0: positions 0, 2, 4, 5 -> 4 weights, not 3.
    wrong_count = _with_payload(lambda p: p.__setitem__(18, 0b01010000))
    with pytest.raises(CorruptStream, match="nnz=3"):
        decode_model(wrong_count)


def test_header_size_caps() -> None:
    data = tiny_file()
    fields = list(PREAMBLE.unpack_from(data))
    for index in (3, 4):
        changed = fields.copy()
        changed[index] = MAX_HEADER_BYTES + 1
        with pytest.raises(HeaderTooLarge):
            decode_model(PREAMBLE.pack(*changed) + data[PREAMBLE.size :])


def test_zlib_header_must_inflate_to_the_declared_length() -> None:
    data = tiny_file(True)
    fields = list(PREAMBLE.unpack_from(data))
    fields[4] -= 1
    with pytest.raises(MalformedHeader, match="inflate"):
        decode_model(PREAMBLE.pack(*fields) + data[PREAMBLE.size :])
    garbage = b"\x78\x9c" + bytes(20)
    fields = [MAGIC, 1, 1, len(garbage), 50, zlib.crc32(garbage), zlib.crc32(b"")]
    with pytest.raises(MalformedHeader, match="zlib"):
        decode_model(PREAMBLE.pack(*fields) + garbage)


def test_decoded_tensors_are_writable_and_independent_of_input() -> None:
    data = bytearray(tiny_file())
    state = decode_model(data).state_dict
    originals = {name: tensor.clone() for name, tensor in state.items()}
    buffer = np.frombuffer(data, dtype=np.uint8)
    for tensor in state.values():
        assert not np.shares_memory(tensor.numpy(), buffer)
    data[PREAMBLE.size :] = bytes(len(data) - PREAMBLE.size)  # wipe the input after decoding
    for name, tensor in state.items():
        assert_bitwise_equal(tensor, originals[name])
    state["b"] += 1
    state["w"][0, 0] = 5
    assert state["b"].tolist() == [2.0, -1.0] and state["w"][0, 0].item() == 5.0
    again = decode_model(tiny_file()).state_dict
    for name, tensor in again.items():
        assert_bitwise_equal(tensor, originals[name])


def traced_peak(function: Callable[[], object]) -> int:
    """Peak bytes allocated (numpy buffers included) while ``function`` runs, per tracemalloc."""
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    try:
        function()
    except FormatError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1] - base
        if not was_tracing:
            tracemalloc.stop()
    return peak


def constant_layer_file(index_bits: int = 1) -> bytes:
    """A fully dense 3x3 layer with one cluster: both streams are zero-bit codes (0 coded bits)."""
    ones = torch.ones(3, 3, dtype=torch.bool)
    layer = QuantizedTensor("c", ones, ones.long() * 0, torch.ones(1), 1, index_bits)
    return encode_v3([layer], {}, {}, {}, compress_header=False)


def hostile(base: bytes, numel: int, fields: dict, index_symbol: int | None = None) -> bytes:
    """``base`` re-declared as ``numel`` elements with edited layer/stream fields, CRCs repaired."""
    header = header_of(base)
    layer = header["tensors"][0]
    layer["shape"] = [numel]
    for key, value in fields.items():
        if key in ("index", "weight"):
            layer[key]["symbols"] = value
        else:
            layer[key] = value
    payload = bytearray(base[PREAMBLE.size + PREAMBLE.unpack_from(base)[3] :])
    if index_symbol is not None:
        payload[layer["index"]["table"][0] + 1] = index_symbol
    return repack(base, header=dump(header), payload=bytes(payload))


HOSTILE_CASES = {
    # The reported file: 9 weights, but the zero-bit index stream declares nnz + numel symbols.
    "reported": (1, {"index": lambda n: 9 + n}, None, "reaches flat position"),
    # In range, but the stream would place numel weights where the header declares 9.
    "count_mismatch": (1, {"index": lambda n: n}, None, "places .* declares nnz=9"),
    # Zero-bit index code whose one symbol is the FILLER M = 1: no weight is ever placed.
    "filler_only": (1, {"index": lambda n: n}, 1, "ends with a FILLER"),
    # Symbol 2 with M = 3 steps by 3, so n // 2 weights need 1.5 * n positions.
    "past_the_end": (
        2,
        {"nnz": lambda n: n // 2, "index": lambda n: n // 2, "weight": lambda n: n // 2},
        2,
        "reaches flat position",
    ),
}


@pytest.mark.parametrize("numel", [1 << 24, MAX_TOTAL_NUMEL])
@pytest.mark.parametrize("case", sorted(HOSTILE_CASES))
def test_tiny_file_declaring_a_huge_zero_bit_stream_fails_without_allocating(
    case: str, numel: int
) -> None:
    index_bits, fields, symbol, message = HOSTILE_CASES[case]
    values = {key: make(numel) for key, make in fields.items()}
    data = hostile(constant_layer_file(index_bits), numel, values, symbol)
    assert len(data) < 400
    assert read_info(data).dense_bytes == 4 * numel  # header-level checks accept it
    start = time.perf_counter()
    with pytest.raises(CorruptStream, match=message):
        decode_model(data, max_decoded_bytes=None)
    assert time.perf_counter() - start < 5.0
    assert traced_peak(lambda: decode_model(data, max_decoded_bytes=None)) < 20 * 2**20


@pytest.mark.parametrize("numel", [1 << 24, MAX_TOTAL_NUMEL])
def test_declared_weight_count_beyond_the_coded_index_bits_fails_without_allocating(
    numel: int,
) -> None:
    base = encode_v3([_edge_layer("single_symbol")], {}, {}, {}, compress_header=False)
    assert header_of(base)["tensors"][0]["weight"]["bits"] == 0  # zero-bit weight code
    half = numel // 2
    data = hostile(base, numel, {"nnz": half, "index": half, "weight": half})
    with pytest.raises(CorruptStream, match="cannot take"):
        decode_model(data, max_decoded_bytes=None)
    assert traced_peak(lambda: decode_model(data, max_decoded_bytes=None)) < 20 * 2**20


def test_constant_dense_layer_decodes_into_its_output_and_nothing_more() -> None:
    side = 1024
    ones = torch.ones(side, side, dtype=torch.bool)
    layer = QuantizedTensor("c", ones, ones.long() * 0, torch.tensor([0.75]), 1, 1)
    data = encode_v3([layer], {}, {}, {})
    assert len(data) < 400
    output = 4 * side * side
    assert traced_peak(lambda: decode_model(data)) < output + 2**18
    assert_bitwise_equal(decode_model(data).state_dict["c"], expected_weight(layer))


@pytest.mark.parametrize("stride", [2, 3, 7])
def test_zero_bit_index_with_a_constant_stride_round_trips(stride: int) -> None:
    mask = torch.zeros(5, 21, dtype=torch.bool)
    mask.view(-1)[stride - 1 :: stride] = True
    labels = torch.arange(105).reshape(5, 21) % 2
    layer = QuantizedTensor("s", mask, labels, torch.tensor([-1.0, 2.0]), 1, 3)
    data = encode_v3([layer], {}, {}, {})
    info = read_info(data).layers[0]
    assert (info.index_stream_bits, info.index_symbols) == (0, int(mask.sum()))
    assert_bitwise_equal(decode_model(data).state_dict["s"], expected_weight(layer))


@pytest.mark.parametrize("index_bits", [1, 2, 3])
def test_constant_positions_match_decoding_the_repeated_symbols(index_bits: int) -> None:
    filler = (1 << index_bits) - 1
    for symbol in range(filler + 1):
        for n_symbols in range(5):
            for numel in range(0, 3 * (filler + 1)):
                expected: object
                try:
                    full = np.full(n_symbols, symbol, dtype=np.int64)
                    expected = decode_positions(full, index_bits, numel).tolist()
                except CorruptStream as err:
                    expected = str(err).split(":")[0]
                try:
                    placed = constant_positions(symbol, n_symbols, index_bits, numel)
                    got: object = np.arange(numel)[placed].tolist()
                except CorruptStream as err:
                    got = str(err).split(":")[0]
                assert got == expected, (symbol, n_symbols, numel)


def test_load_model_builds_the_named_network_with_the_decoded_weights():
    from deepcompression.format.container import QuantizedTensor, encode_model
    from deepcompression.format.loader import ModelBuildError, load_with_info
    from models import build_model

    torch.manual_seed(0)
    reference = build_model("lenet_300_100")
    quantized, raw = [], {}
    for name, tensor in reference.state_dict().items():
        if name.endswith("weight"):
            mask = torch.rand(tensor.shape) < 0.1
            labels = torch.randint(0, 4, tensor.shape)
            centroids = torch.tensor([-0.2, -0.1, 0.1, 0.2])
            quantized.append(QuantizedTensor(name, mask, labels, centroids, 2, 5))
            reference.state_dict()[name].copy_(torch.where(mask, centroids[labels], 0.0))
        else:
            raw[name] = tensor
    data = encode_model(quantized, raw, {"name": "lenet_300_100", "kwargs": {}}, {})
    model, decoded = load_with_info(data)
    x = torch.randn(8, 1, 28, 28)
    assert torch.equal(model(x), reference(x))
    assert decoded.arch["name"] == "lenet_300_100"
    wrong = encode_model(quantized, raw, {"name": "lenet5", "kwargs": {}}, {})
    with pytest.raises(ModelBuildError, match="do not fit model 'lenet5'"):
        load_with_info(wrong)
