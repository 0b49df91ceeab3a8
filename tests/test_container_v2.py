"""Format version 2: raw tensors of every dtype round-trip bit for bit; pinned bytes per dtype."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from container_bytes import PREAMBLE, bits, encode_v3, rebuild, split
from torch import nn

from deepcompression.format.container import (
    FORMAT_VERSION,
    RAW_DTYPES,
    InvalidValue,
    MalformedHeader,
    QuantizedTensor,
    decode_model,
    read_info,
)


def assert_identical(got: torch.Tensor, want: torch.Tensor) -> None:
    assert got.dtype == want.dtype and got.shape == want.shape and got.device.type == "cpu"
    assert torch.equal(bits(got), bits(want))


def random_bits(dtype: torch.dtype, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """Every bit pattern of ``dtype`` is equally likely (NaNs with payloads, infs, subnormals)."""
    rng = np.random.default_rng(seed)
    count = math.prod(shape)
    if count == 0:
        return torch.empty(shape, dtype=dtype)
    if dtype == torch.bool:
        return torch.from_numpy(rng.integers(0, 2, count).astype(bool)).reshape(shape)
    raw = rng.integers(0, 256, count * dtype.itemsize, dtype=np.uint8)
    return torch.from_numpy(raw).view(dtype).reshape(shape)


@pytest.mark.parametrize("dtype_name", RAW_DTYPES)
def test_every_dtype_round_trips_bit_for_bit(dtype_name: str) -> None:
    dtype = getattr(torch, dtype_name)
    raw = {
        "matrix": random_bits(dtype, (17, 5), seed=1),
        "scalar": random_bits(dtype, (), seed=2),
        "empty": random_bits(dtype, (0, 3), seed=3),
        "transposed": random_bits(dtype, (4, 6), seed=4).t(),
    }
    data = encode_v3([], raw, {"name": "m", "kwargs": {}}, {})
    decoded = decode_model(data).state_dict
    assert list(decoded) == list(raw)
    for name, tensor in raw.items():
        assert_identical(decoded[name], tensor)
    info = read_info(data)
    assert info.version == 3 and FORMAT_VERSION == 8
    assert {layer.dtype for layer in info.layers} == {dtype_name}
    width = dtype.itemsize
    assert [layer.raw_bytes for layer in info.layers] == [85 * width, width, 0, 24 * width]
    assert all(layer.weight_bits == 8 * width for layer in info.layers)
    assert info.decoded_bytes == (85 + 1 + 24) * width


def test_float_specials_keep_their_bits() -> None:
    payloads = {
        torch.float32: [0x7FC00001, 0xFF800001, 0x80000000, 0x00000001, 0x7F800000],
        torch.float64: [0x7FF8000000000123, 0xFFF0000000000001, 0x8000000000000000, 1],
        torch.float16: [0x7E01, 0xFC01, 0x8000, 0x0001, 0x7C00],
        torch.bfloat16: [0x7FC1, 0xFF81, 0x8000, 0x0001, 0x7F80],
    }
    raw = {}
    for dtype, patterns in payloads.items():
        unsigned = np.array(patterns, dtype=f"<u{dtype.itemsize}")
        raw[str(dtype)] = torch.from_numpy(unsigned.view(np.uint8)).view(dtype)
    decoded = decode_model(encode_v3([], raw, {}, {})).state_dict
    for name, tensor in raw.items():
        assert_identical(decoded[name], tensor)
        assert torch.isnan(decoded[name][0])


PINNED = {
    "float32": (torch.tensor([1.0, -0.0]), "0000803f00000080"),
    "float16": (torch.tensor([1.0, -2.0], dtype=torch.float16), "003c00c0"),
    "bfloat16": (torch.tensor([1.0, -2.0], dtype=torch.bfloat16), "803f00c0"),
    "float64": (torch.tensor([1.0], dtype=torch.float64), "000000000000f03f"),
    "int8": (torch.tensor([-1, 2], dtype=torch.int8), "ff02"),
    "int16": (torch.tensor([-2, 258], dtype=torch.int16), "feff0201"),
    "int32": (torch.tensor([1, -1], dtype=torch.int32), "01000000ffffffff"),
    "int64": (torch.tensor(300, dtype=torch.int64), "2c01000000000000"),
    "uint8": (torch.tensor([255, 0], dtype=torch.uint8), "ff00"),
    "bool": (torch.tensor([True, False, True]), "010001"),
}
"""Each dtype's little-endian bytes, as docs/FORMAT.md specifies them."""


def test_pinned_bytes_of_every_dtype() -> None:
    raw = {name: tensor for name, (tensor, _) in PINNED.items()}
    data = encode_v3([], raw, {"name": "dtypes"}, {}, compress_header=False, format_version=2)
    header, payload = split(data)
    assert [record["dtype"] for record in header["tensors"]] == list(RAW_DTYPES)
    for record in header["tensors"]:
        offset, length = record["data"]
        assert payload[offset : offset + length].hex() == PINNED[record["name"]][1]
        assert record["shape"] == list(PINNED[record["name"]][0].shape)
    assert PREAMBLE.unpack_from(data)[1] == 2
    again = encode_v3([], raw, {"name": "dtypes"}, {}, compress_header=False, format_version=2)
    assert again == data


def test_bool_tensor_with_odd_bytes_is_written_as_0_and_1() -> None:
    odd = torch.tensor([0, 1, 2, 255], dtype=torch.uint8).view(torch.bool)
    data = encode_v3([], {"flags": odd}, {}, {}, compress_header=False)
    assert split(data)[1] == bytes([0, 1, 1, 1])
    assert decode_model(data).state_dict["flags"].tolist() == [False, True, True, True]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.fc = nn.Linear(12, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1))


def test_whole_state_dict_with_batchnorm_buffers_round_trips() -> None:
    torch.manual_seed(0)
    net = _Net()
    for _ in range(3):
        net(torch.randn(4, 1, 4, 4))  # running stats and num_batches_tracked move
    state = net.state_dict()
    assert state["bn.num_batches_tracked"].dtype == torch.int64
    decoded = decode_model(encode_v3([], state, {"name": "net"}, {})).state_dict
    for name, tensor in state.items():
        assert_identical(decoded[name], tensor)
    fresh = _Net()
    fresh.load_state_dict(decoded, strict=True)
    assert fresh.bn.num_batches_tracked.item() == 3
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(fresh.eval()(x), net.eval()(x))


def test_caller_stores_biases_as_float16_by_passing_float16_tensors() -> None:
    bias = torch.randn(300)
    full = encode_v3([], {"fc.bias": bias}, {}, {})
    half = encode_v3([], {"fc.bias": bias.half()}, {}, {})
    assert len(full) - len(half) >= 2 * 300 - 8
    decoded = decode_model(half).state_dict["fc.bias"]
    assert decoded.dtype == torch.float16 and torch.equal(decoded, bias.half())
    layer = read_info(half).layers[0]
    assert (layer.dtype, layer.weight_bits, layer.raw_bytes) == ("float16", 16, 600)


def test_quantized_layers_stay_float32_next_to_typed_raw_tensors() -> None:
    mask = torch.tensor([[True, False], [False, True]])
    layer = QuantizedTensor("w", mask, mask.long(), torch.tensor([0.5, -1.0]), 1, 1)
    raw = {"b": torch.tensor([1, 2], dtype=torch.int8)}
    decoded = decode_model(encode_v3([layer], raw, {}, {})).state_dict
    assert decoded["w"].dtype == torch.float32
    assert decoded["w"].tolist() == [[-1.0, 0.0], [0.0, -1.0]]
    assert_identical(decoded["b"], raw["b"])


def test_encoding_is_deterministic_across_dtypes_and_key_order() -> None:
    raw = {name: random_bits(getattr(torch, name), (7,), seed=9) for name in RAW_DTYPES}
    arch_a = {"name": "m", "kwargs": {"b": 1, "a": [1, 2]}}
    arch_b = {"kwargs": {"a": [1, 2], "b": 1}, "name": "m"}
    first = encode_v3([], raw, arch_a, {"git": "x"})
    assert first == encode_v3([], dict(raw), arch_b, {"git": "x"})
    assert first == encode_v3([], {k: v.clone() for k, v in raw.items()}, arch_a, {"git": "x"})


def _typed_file() -> bytes:
    raw = {"flags": torch.tensor([True, False]), "h": torch.tensor([1.0, 2.0]).half()}
    return encode_v3([], raw, {"name": "t", "kwargs": {}}, {}, compress_header=False)


def _edited(edit: object) -> bytes:
    header, payload = split(_typed_file())
    edit(header)  # type: ignore[operator]
    return rebuild(header, payload)


def _set(index: int, key: str, value: object) -> object:
    return lambda header: header["tensors"][index].__setitem__(key, value)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (_edited(_set(1, "dtype", "float8")), "dtype must be one of"),
        (_edited(_set(1, "dtype", "Float16")), "dtype must be one of"),
        (_edited(_set(1, "dtype", "float16 ")), "dtype must be one of"),
        (_edited(_set(1, "dtype", "")), "dtype must be one of"),
        (_edited(_set(1, "dtype", None)), "dtype must be one of"),
        (_edited(_set(1, "dtype", 2)), "dtype must be one of"),
        (_edited(_set(1, "dtype", ["float16"])), "dtype must be one of"),
        (_edited(lambda h: h["tensors"][1].pop("dtype")), "missing fields \\['dtype'\\]"),
        (_edited(_set(1, "dtype", "float32")), "raw data is 4 bytes but float32"),
        (_edited(_set(1, "dtype", "int8")), "raw data is 4 bytes but int8"),
        (_edited(_set(0, "dtype", "int16")), "raw data is 2 bytes but int16"),
        (_edited(_set(1, "shape", [1])), "raw data is 4 bytes but float16 shape \\[1\\]"),
        (_edited(_set(1, "shape", [2**28, 2])), "exceeds"),
        (_edited(_set(1, "shape", [0, 2**28 + 1])), "shape"),
        (_edited(lambda h: h["arch"].__setitem__("name", 5)), "arch 'name' must be a string"),
        (_edited(lambda h: h["arch"].__setitem__("kwargs", [])), "arch 'kwargs' must be"),
    ],
)
def test_hostile_version_2_headers(data: bytes, message: str) -> None:
    with pytest.raises(MalformedHeader, match=message):
        read_info(data)
    with pytest.raises(MalformedHeader, match=message):
        decode_model(data)


@pytest.mark.parametrize("byte", [2, 0x80, 0xFF])
def test_bool_bytes_other_than_0_and_1_are_rejected(byte: int) -> None:
    header, payload = split(_typed_file())
    bad = rebuild(header, bytes([1, byte]) + payload[2:])
    assert read_info(bad).layers[0].dtype == "bool"  # header-level checks accept it
    with pytest.raises(InvalidValue, match=f"tensor 'flags': bool item 1 is byte 0x{byte:02x}"):
        decode_model(bad)
    assert decode_model(rebuild(header, bytes([1, 1]) + payload[2:])).state_dict["flags"].all()
