"""Format version 5 (FORMAT.md "Version 5: shorter values"): 8- and 16-byte digests, decimal
numbers and digit class names in the binary header; version 4 readers' rules stay as they were."""

from __future__ import annotations

import struct

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from test_container_v4 import TINY_INPUTS, assert_same_tensors, tiny_v4

from benchmarks.bench_entropy import lenet_inputs
from benchmarks.mutation_bases import build, split_v4
from deepcompression.format.binheader import MAX_DECIMAL_EXPONENT, load_header
from deepcompression.format.binwriter import dump_header
from deepcompression.format.container import (
    FORMAT_VERSION,
    InputMeta,
    MalformedHeader,
    decode_model,
    encode_model,
    read_info,
)
from deepcompression.format.spec import STATIC_STRINGS

MNIST = InputMeta(1, 28, (0.1307,), (0.3081,), 10, tuple(map(str, range(10))))
EMPTY = dump_header({}, {}, [], version=5)
"""No strings, arch {}, provenance {}, no tensors."""


def _file(arch: dict, provenance: dict, version: int = FORMAT_VERSION, **kwargs: object) -> bytes:
    return encode_model([], {"x": torch.zeros(1)}, arch, provenance, compress_header=False,
                        format_version=version, **kwargs)  # fmt: skip


def _base() -> int:
    """Header bytes of `_file({}, {})`: the string "x", empty arch and provenance, one record."""
    return len(split_v4(_file({}, {}))[0])


def test_version_5_writes_version_4_headers_where_nothing_is_shorter() -> None:
    data = encode_model(*TINY_INPUTS, compress_header=False, format_version=5)
    assert data[8:10] == b"\x05\x00"
    assert split_v4(data) == split_v4(tiny_v4())
    assert_same_tensors(decode_model(data).state_dict, decode_model(tiny_v4()).state_dict)


@settings(max_examples=300, deadline=None)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_every_finite_float_round_trips_bit_exactly(value: float) -> None:
    decoded = decode_model(_file({"v": value}, {})).arch["v"]
    assert struct.pack("<d", decoded) == struct.pack("<d", value)


@pytest.mark.parametrize(
    ("value", "size"),
    [(0.1307, 4), (0.5, 3), (0.0, 3), (-2.5e12, 3), (1e-300, 4), (1 / 3, 9), (-0.0, 9)],
)
def test_a_float_takes_its_decimal_form_when_that_is_shorter(value: float, size: int) -> None:
    """Tag byte, then zigzag varints of m and e (m * 10**e), or the 8 bytes of a binary64."""
    header, _ = split_v4(_file({"v": value}, {}))
    assert len(header) == _base() + 2 + 1 + size  # table string "v", key ref, the value


@pytest.mark.parametrize("digits", [16, 32, 64])
def test_lowercase_hex_of_16_32_or_64_digits_is_a_digest(digits: int) -> None:
    value = "0123456789abcdef" * (digits // 16)
    header, _ = split_v4(_file({}, {"h": value}))
    assert len(header) == _base() + 2 + 1 + 1 + digits // 2  # table "h", key, tag, bytes
    assert decode_model(_file({}, {"h": value})).provenance == {"h": value}
    for text in (value.upper(), value[:-1], value + "0"):
        assert decode_model(_file({}, {"h": text})).provenance == {"h": text}
        assert len(split_v4(_file({}, {"h": text}))[0]) > len(header)


def test_class_names_0_to_n_minus_1_cost_one_flag_byte() -> None:
    digits, named = MNIST, InputMeta(1, 28, (0.1307,), (0.3081,), 10, tuple("abcdefghij"))
    short, listed = (split_v4(_file({}, {}, input_spec=s))[0] for s in (digits, named))
    assert len(short) == _base() + 1 + 1 + 2 * 4 + 1 + 1  # sizes, two decimals, count, flag
    assert len(listed) > len(short) + 10 + 10
    for spec in (digits, named):
        assert read_info(_file({}, {}, input_spec=spec)).input == spec


def test_version_4_files_do_not_take_the_version_5_forms() -> None:
    arch, provenance = {"v": 0.1307}, {"h": "ab" * 8}
    for header in (
        dump_header(arch, {}, [], version=5),
        dump_header({}, provenance, [], version=5),
        dump_header({}, {}, [], MNIST, version=5),
    ):
        spec = header == dump_header({}, {}, [], MNIST, version=5)
        flag = 2 if spec else 0
        assert read_info(build(header, b"", False, 5, flag)) is not None
        with pytest.raises(MalformedHeader):
            read_info(build(header, b"", False, 4, flag))
    v4 = _file(arch, provenance, version=4, input_spec=MNIST)
    assert decode_model(v4).arch == arch and read_info(v4).input == MNIST
    assert len(v4) > len(_file(arch, provenance, input_spec=MNIST)) + 8 + 8 + 10


def _decimal_header(mantissa: int, exponent: int) -> bytes:
    """arch {"v": m * 10**e} as a version-5 header (no strings but "v")."""
    zig = [2 * n if n >= 0 else -2 * n - 1 for n in (mantissa, exponent)]
    body = bytearray([1, 1]) + b"v" + bytes([0x81, len(STATIC_STRINGS), 0xA7])
    for n in zig:
        while n >= 0x80:
            body.append(n & 0x7F | 0x80)
            n >>= 7
        body.append(n)
    return bytes(body) + bytes([0x80, 0])  # provenance {}, no tensors


@pytest.mark.parametrize(
    ("mantissa", "exponent", "outcome"),
    [
        (1307, -4, 0.1307),
        (5, -324, 5e-324),
        (1, -400, 0.0),
        (179769313486231, 294, 1.79769313486231e308),
        (1, 309, "not finite"),
        (1, MAX_DECIMAL_EXPONENT + 1, "decimal exponent"),
        (-3, -MAX_DECIMAL_EXPONENT - 1, "decimal exponent"),
    ],
)
def test_decimals_round_to_the_nearest_binary64_and_refuse_the_rest(
    mantissa: int, exponent: int, outcome: float | str
) -> None:
    header = _decimal_header(mantissa, exponent)
    if isinstance(outcome, str):
        with pytest.raises(MalformedHeader, match=outcome):
            load_header(header, version=5)
    else:
        assert load_header(header, version=5)[0]["arch"] == {"v": outcome}
        with pytest.raises(MalformedHeader, match="not defined"):
            load_header(header, version=4)


def test_an_input_spec_number_must_be_a_float_or_a_decimal() -> None:
    good = dump_header({}, {}, [], InputMeta(1, 28, (0.5,), (0.25,), 10), version=5)
    assert load_header(good, True, 5)[1] == InputMeta(1, 28, (0.5,), (0.25,), 10)
    at = len(EMPTY) - 1 + 2  # after the tensor count's place: channels, size
    assert good[at] == 0xA7
    for tag, message in ((0x21, "not a float or decimal"), (0xA4, "not a float or decimal")):
        with pytest.raises(MalformedHeader, match=message):
            load_header(good[:at] + bytes([tag]) + good[at + 1 :], True, 5)
    with pytest.raises(MalformedHeader, match="flag 0 or 1 or 2, got 3"):
        load_header(good[:-2] + bytes([3]) + good[-1:], True, 5)


@pytest.mark.parametrize("name", ["lenet_300_100", "lenet5"])
def test_lenet_headers_are_at_most_150_bytes(name: str) -> None:
    """The pipeline's header: its arch (the default network), two 8-byte provenance digests,
    MNIST's input spec, the records."""
    quantized, raw, _, provenance = lenet_inputs(name)
    arch = {"kwargs": {}, "name": name}
    data = encode_model(quantized, raw, arch, provenance, input_spec=MNIST)
    info = read_info(data)
    assert info.version == FORMAT_VERSION and info.header_bytes <= 150
    assert not info.header_compressed
    decoded = decode_model(data)
    assert (decoded.arch, decoded.provenance, decoded.input) == (arch, provenance, MNIST)
    v4, v5 = (encode_model(quantized, raw, arch, provenance, input_spec=MNIST, format_version=v)
              for v in (4, 5))  # fmt: skip
    # v4: the 16-digit hashes as table strings (1 + 16 bytes each), each mean and std 8 bytes,
    # ten class name references; v5: two 8-byte digests, two 4-byte decimals, no names
    shorter = read_info(v4).header_bytes - read_info(v5).header_bytes
    assert shorter == 2 * (17 - 8) + 2 * (8 - 4) + 10
    assert_same_tensors(decode_model(v5).state_dict, decode_model(v4).state_dict)
    assert_same_tensors(decoded.state_dict, decode_model(v4).state_dict)
    assert len(v4) - len(v5) == shorter
