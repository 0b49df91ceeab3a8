"""Format version 4: the binary header (FORMAT.md "Version 4: binary header"), biases stored over
kept rows, what it saves on the LeNets, and its malformed headers' errors."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import struct
from collections.abc import Callable

import numpy as np
import pytest
import torch
from bitarray import bitarray, frozenbitarray
from container_bytes import bits

from benchmarks.bench_entropy import lenet_inputs, removed_bias_bytes
from benchmarks.mutation_bases import V4_FILES, _base_inputs, build, split_v4
from deepcompression.format import coders
from deepcompression.format import header as header_module
from deepcompression.format.arith import arith_decode, arith_encode
from deepcompression.format.binheader import load_header
from deepcompression.format.binwriter import dump_header
from deepcompression.format.container import (
    FORMAT_VERSION,
    CorruptStream,
    InputMeta,
    InvalidArgument,
    InvalidValue,
    MalformedHeader,
    QuantizedTensor,
    UnsupportedVersion,
    decode_model,
    encode_model,
    read_info,
)
from deepcompression.format.spec import STATIC_STRINGS
from deepcompression.inference import InputSpec


def assert_same_tensors(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert list(a) == list(b)
    for name in a:
        assert a[name].dtype == b[name].dtype and a[name].shape == b[name].shape, name
        assert torch.equal(bits(a[name]), bits(b[name])), name


def _tiny_inputs() -> tuple:
    """FORMAT.md's worked example tensors (w, b), arch and provenance."""
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask.view(-1)[[0, 5, 6]] = True
    labels = torch.zeros(2, 4, dtype=torch.int64)
    labels.view(-1)[[0, 5, 6]] = torch.tensor([1, 0, 1])
    layer = QuantizedTensor("w", mask, labels, torch.tensor([-0.5, 0.25]), 1, 2)
    return [layer], {"b": torch.tensor([1.0, -2.0])}, {"name": "tiny"}, {}


TINY_INPUTS = _tiny_inputs()


def tiny_v4() -> bytes:
    """The worked example in version 4."""
    return encode_model(*TINY_INPUTS, compress_header=False, format_version=4)


def test_version_4_is_pinned() -> None:
    data = tiny_v4()
    assert FORMAT_VERSION == 8 and data[8:10] == b"\x04\x00"
    header, _ = split_v4(data)
    # string table: "tiny", "w", "b"; arch {name: "tiny"}; provenance {}; two tensor records
    assert header[:10] == bytes([3, 4]) + b"tiny" + bytes([1]) + b"w" + bytes([1]) + b"b"
    info = read_info(data)
    assert len(data) == 79 and info.header_bytes == 32
    assert (info.layers[0].index_coder, info.layers[0].weight_coder) == ("arith", "arith")
    assert data[-11:-8].hex() == "378098"  # index: 9 coded bits, weights: 5
    assert hashlib.sha256(data).hexdigest() == (
        "17db38b8b92e5891798f84bce1cd73f13a3400fab2bfb19fb8ad265679181252"
    )
    huffman = encode_model(*TINY_INPUTS, compress_header=False, arithmetic=False, format_version=4)
    assert len(huffman) == 90 and read_info(huffman).layers[0].index_coder == "huffman"
    assert hashlib.sha256(huffman).hexdigest() == (
        "1422b585bc6f962475972a01c813ce2fbc08383676577847497629556c9057cb"
    )


@pytest.mark.parametrize("inputs", _base_inputs(), ids=lambda inputs: str(len(inputs[1])))
def test_v4_files_decode_to_the_tensors_of_their_v3_twins(inputs: tuple) -> None:
    v4 = encode_model(*inputs, format_version=4)
    header, _ = split_v4(v4)
    info = read_info(v4)
    assert info.version == 4 and info.header_json_bytes == len(header)
    decoded = decode_model(v4)
    assert_same_tensors(decode_model(encode_model(*inputs, format_version=3)).state_dict,
                        decoded.state_dict)  # fmt: skip
    assert (decoded.arch, decoded.provenance) == (inputs[2], inputs[3])
    assert [layer.name for layer in info.layers] == list(decoded.state_dict)


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5"])
def test_lenet_headers_shrink_and_removed_biases_cost_nothing(name: str) -> None:
    quantized, raw, arch, provenance = lenet_inputs(name)
    v3 = encode_model(quantized, raw, arch, provenance, format_version=3)
    v4 = encode_model(quantized, raw, arch, provenance)
    info3, info4 = read_info(v3), read_info(v4)
    assert info4.header_bytes * 3 < info3.header_bytes and info4.header_bytes <= 210
    assert removed_bias_bytes(list(info3.layers)) > 500
    assert removed_bias_bytes(list(info4.layers)) == 0
    assert len(v4) < len(v3) - 900
    assert_same_tensors(decode_model(v3).state_dict, decode_model(v4).state_dict)
    decoded = decode_model(v4)
    assert decoded.arch == arch and decoded.provenance == provenance


def test_a_bias_not_zero_on_a_removed_row_is_stored_whole() -> None:
    mask = torch.zeros(64, 40, dtype=torch.bool)
    mask[::2, 1:] = True
    layer = QuantizedTensor("fc.weight", mask, mask.long(), torch.tensor([0.5, -1.0]), 1, None)
    zero = torch.where(torch.arange(64) % 2 == 0, torch.arange(64.0) + 1, torch.zeros(()))
    for bias, stored in ((zero, 32), (zero + 1, None), (torch.full((64,), -0.0), None)):
        data = encode_model([layer], {"fc.bias": bias}, {}, {})
        assert read_info(data).layers[1].kept_rows == stored
        assert torch.equal(bits(decode_model(data).state_dict["fc.bias"]), bits(bias))


VALUES: list[object] = [
    None, True, False, 0, 30, 31, 2**53 - 1, -1, -31, -(2**53 - 1), 0.0, -0.0, 1e-310, 1e300,
    "", "\ud800", "😀", "a" * 300, "ab" * 32, "AB" * 32, "ab" * 31, [], [[["x"]]], {"": {}},
]  # fmt: skip


def test_typed_values_round_trip_exactly() -> None:
    arch = {"name": "m", "kwargs": {f"k{i}": v for i, v in enumerate(VALUES)}}
    provenance = {"list": VALUES, "name": "name", "\ud800": {"b": 1, "a": 2}}
    decoded = decode_model(encode_model([], {"x": torch.zeros(1)}, arch, provenance))
    assert decoded.arch == arch and decoded.provenance == provenance
    floats = [v for v in decoded.provenance["list"] if isinstance(v, float)]
    assert [math.copysign(1, v) for v in floats] == [1, -1, 1, 1]
    assert [type(v) for v in decoded.provenance["list"]] == [type(v) for v in VALUES]


@pytest.mark.parametrize(
    ("provenance", "message"),
    [
        ({"n": 2**53}, "2\\*\\*53"),
        ({"n": -(2**53)}, "2\\*\\*53"),
        ({"x": float("nan")}, "finite"),
        ({"x": object()}, "JSON-like"),
        ({1: "a"}, "str keys"),
    ],
)
def test_the_writer_refuses_what_the_header_cannot_hold(provenance: dict, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        encode_model([], {}, {}, provenance)


def header_file(header: bytes, payload: bytes = b"") -> bytes:
    return build(header, payload, False, 4)


EMPTY = bytes([0, 0x80, 0x80, 0])
"""No strings, arch {}, provenance {}, no tensors."""
F32 = bytes([0x00, 1, 0, 1, 2])
"""A raw float32 record named "name" (static 0) of shape [2]."""


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (EMPTY + b"\x00", "follow the last tensor"),
        (EMPTY[:-1], "ends inside"),
        (bytes([0, 0x80, 0x80, 0x80, 0]), "varint is not in its shortest form"),
        (bytes([0, 0x80, 0x80]) + b"\xff" * 9, "varint longer than 8 bytes"),
        (bytes([1, 1]) + b"x" + EMPTY[1:], "never referenced"),
        (bytes([1, 4]) + b"name" + EMPTY[1:], "already a header string"),
        (bytes([1, 1, 0xFF]) + EMPTY[1:], "not UTF-8"),
        (bytes([0, 0x00, 0x80, 0]), "must be objects"),
        (bytes([0, 0x82, 0, 0xA0, 1, 0xA0, 0x80, 0]), "not after"),
        (bytes([0, 0x81, 99, 0xA0, 0x80, 0]), "past the"),
        (bytes([0, 0x81, 0, 0xA3]) + b"\x00" * 6 + b"\xf8\x7f" + bytes([0x80, 0]), "not finite"),
        (bytes([0, 0x81, 0, 0xA5, 0x80, 0]), "is not defined"),
        (bytes([0, 0x81, 0, 0x1F, 3, 0x80, 0]), "must be inline"),
        (EMPTY[:-1] + bytes([1, 0x03, 1, 0, 0]), "tag 0x03 is not defined"),
        (EMPTY[:-1] + bytes([1, 0x00, 1, 0, 17]), "17 dimensions"),
        (EMPTY[:-1] + bytes([1, 0x00, 0, 0]), "one or more parts"),
        (EMPTY[:-1] + bytes([1, 0x04, 1, 8, 0]), "not an earlier tensor with removed units"),
    ],
)
def test_malformed_binary_headers(header: bytes, message: str) -> None:
    with pytest.raises(MalformedHeader, match=message):
        read_info(header_file(header))


def test_a_raw_record_decodes_and_its_schema_is_the_common_one() -> None:
    data = header_file(EMPTY[:-1] + bytes([1]) + F32, b"\x00\x00\x80\x3f\x00\x00\x00\xc0")
    assert decode_model(data).state_dict["name"].tolist() == [1.0, -2.0]
    with pytest.raises(MalformedHeader, match="appears twice"):
        read_info(header_file(EMPTY[:-1] + bytes([2]) + F32 + F32, b"\x00" * 16))
    too_big = EMPTY[:-1] + bytes([1, 0x00, 1, 0, 1, 0x81, 0x80, 0x80, 0x80, 0x01])
    with pytest.raises(MalformedHeader, match="shape must be an integer in"):
        read_info(header_file(too_big))


def test_kept_rows_of_a_bool_bias_are_checked() -> None:
    data = V4_FILES[1]
    info = read_info(data)
    flags = next(layer for layer in info.layers if layer.name == "filters.bias")
    header, payload = split_v4(data)
    assert flags.dtype == "bool" and flags.kept_rows == 8 and payload[-1] in (0, 1)
    with pytest.raises(InvalidValue, match="bool"):
        decode_model(header_file(header, payload[:-1] + b"\x02"))


def test_static_strings_are_the_documented_46() -> None:
    assert len(STATIC_STRINGS) == len(set(STATIC_STRINGS)) == 46
    assert STATIC_STRINGS[:3] == ("name", "kwargs", "model")
    assert STATIC_STRINGS[7:9] == ("lenet_300_100", "lenet5")


SPEC = InputMeta(3, 32, (0.5, 0.25, -1.0), (0.5, 2.0, 1e-3), 4, ("cat", "dog", "fc1", "\ud800"))


def test_an_input_spec_round_trips_and_feeds_inference() -> None:
    plain = tiny_v4()
    data = encode_model(*TINY_INPUTS, compress_header=False, input_spec=SPEC, format_version=4)
    assert data[10:12] == b"\x02\x00" and read_info(plain).input is None
    assert read_info(data).input == SPEC and decode_model(data).input == SPEC
    unnamed = dataclasses.replace(SPEC, classes=None)
    data = encode_model(*TINY_INPUTS, compress_header=False, input_spec=unnamed, format_version=4)
    assert read_info(data).header_bytes == read_info(plain).header_bytes + 2 + 6 * 8 + 2
    spec = InputSpec(**dataclasses.asdict(decode_model(data).input))
    assert spec.shape == (3, 32, 32) and spec.classes is None


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (dataclasses.replace(SPEC, channels=0, mean=(), std=()), "channels"),
        (dataclasses.replace(SPEC, std=(1.0, 0.0, 1.0)), "std > 0"),
        (dataclasses.replace(SPEC, mean=(math.inf, 0.0, 0.0)), "finite"),
        (dataclasses.replace(SPEC, classes=("a",)), "classes must be None or 4 strings"),
        ({"channels": 1}, "InputMeta"),
    ],
)
def test_the_writer_refuses_a_bad_input_spec(spec: object, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        encode_model(*TINY_INPUTS, input_spec=spec)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="version 4"):
        encode_model(*TINY_INPUTS, input_spec=SPEC, format_version=3)


def test_malformed_input_specs_and_the_flag_outside_version_4() -> None:
    one = bytes([1, 28]) + struct.pack("<dd", 0.5, 0.25)
    for spec, message in (
        (one + bytes([10, 0]), None),
        (bytes([0, 28]) + bytes([10, 0]), "channels 0"),
        (bytes([1, 28]) + struct.pack("<dd", 0.5, -0.25) + bytes([10, 0]), "std > 0"),
        (one + bytes([10, 2]), "flag 0 or 1"),
        (one + bytes([2, 1, 0]), "ends inside"),
    ):
        header = EMPTY[:-1] + spec + EMPTY[-1:]
        data = build(header, b"", False, 4)
        data = data[:10] + b"\x02\x00" + data[12:]
        if message is None:
            assert read_info(data).input == InputMeta(1, 28, (0.5,), (0.25,), 10)
        else:
            with pytest.raises(MalformedHeader, match=message):
                read_info(data)
    v3 = encode_model(*TINY_INPUTS, format_version=3, compress_header=False)
    with pytest.raises(UnsupportedVersion, match="0x0002"):
        read_info(v3[:10] + b"\x02\x00" + v3[12:])


def nested(levels: int) -> object:
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def test_at_most_64_arrays_and_objects_are_open_at_once() -> None:
    deepest = {"a": nested(63)}  # provenance and 63 arrays: 64 open around the scalar
    data = encode_model([], {}, {}, deepest, compress_header=False)
    assert decode_model(data).provenance == deepest
    with pytest.raises(InvalidArgument, match="nest more than 64"):
        encode_model([], {}, {}, {"a": nested(64)})
    header, payload = split_v4(data)
    deeper = header.replace(b"\x61" * 63 + b"\x21", b"\x61" * 64 + b"\x21")  # arrays of 1
    with pytest.raises(MalformedHeader, match="nest deeper than 64"):
        read_info(build(deeper, payload, False, 4))


def test_arithmetic_coding_is_chosen_by_file_size_and_decodes_the_same() -> None:
    for name in ("lenet_300_100", "lenet5"):
        inputs = lenet_inputs(name)
        mixed, huffman = encode_model(*inputs), encode_model(*inputs, arithmetic=False)
        pairs = {(layer.index_coder, layer.weight_coder) for layer in read_info(mixed).layers}
        assert ("arith", "arith") in pairs and ("huffman", "huffman") in pairs  # fc1: large
        assert len(mixed) < len(huffman) - 100
        assert_same_tensors(decode_model(mixed).state_dict, decode_model(huffman).state_dict)


def _edited(data: bytes, edit: Callable[[list[dict]], None]) -> bytes:
    """A version-4 file whose header object was edited and written again (payload as it was)."""
    header, payload = split_v4(data)
    document, _ = load_header(header)
    edit(document["tensors"])
    return build(dump_header(document["arch"], document["provenance"], document["tensors"]),
                 payload, False, 4)  # fmt: skip


def test_arithmetic_stream_limits() -> None:
    data = tiny_v4()

    def widen(tensors: list[dict]) -> None:  # gaps 1, 5, 1 need no FILLER at 9 bits
        tensors[0]["index_bits"] = 9
        tensors[0]["index"]["symbols"] = 3

    wide = _edited(data, widen)
    with pytest.raises(MalformedHeader, match="alphabet of 1 to 256"):
        read_info(wide)
    assert read_info(_edited(data, lambda tensors: None)).file_bytes == len(data)


def test_the_file_cap_on_arithmetic_symbols(monkeypatch: pytest.MonkeyPatch) -> None:
    inputs = lenet_inputs("lenet5")
    monkeypatch.setattr(coders, "MAX_FILE_ARITH_SYMBOLS", 1000)
    capped = encode_model(*inputs)
    used = sum(
        layer.index_symbols * (layer.index_coder == "arith")
        + layer.nnz * (layer.weight_coder == "arith")
        for layer in read_info(capped).layers
    )
    assert 0 < used <= 1000
    monkeypatch.setattr(header_module, "MAX_FILE_ARITH_SYMBOLS", used - 1)
    with pytest.raises(MalformedHeader, match="arithmetic-coded symbols"):
        read_info(capped)


@pytest.mark.parametrize("seed", range(4))
def test_the_arithmetic_coder_round_trips_and_refuses_other_bits(seed: int) -> None:
    rng = np.random.default_rng(seed)
    alphabet = int(rng.integers(1, 257))
    symbols = rng.choice(
        alphabet, size=int(rng.integers(0, 2000)), p=rng.dirichlet([0.3] * alphabet)
    )
    bits = arith_encode(symbols, alphabet)
    assert arith_decode(bits, symbols.size, alphabet).tolist() == symbols.tolist()
    longer = frozenbitarray(bits + bitarray("0"))
    shorter = frozenbitarray(bits[:-1])
    for other in (longer, shorter):
        with pytest.raises(CorruptStream):
            arith_decode(other, symbols.size, alphabet)
