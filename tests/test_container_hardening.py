"""Issue 18's defects: empty shapes with huge dimensions, header bombs, and each settled ambiguity.

Every rule tested here is stated in docs/FORMAT.md (Header, Limits, Canonical Huffman code
tables, Reader checks); the files are built by hand so that exactly one rule is at stake.
"""

from __future__ import annotations

import json
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from container_bytes import PREAMBLE, dump, encode_v3, pack

from cli.main import main
from deepcompression.format.container import (
    MAX_HEADER_RATIO,
    MAX_JSON_VALUES,
    MAX_JSON_VALUES_PER_BYTE,
    MAX_NONZERO_PRODUCT,
    CorruptStream,
    HeaderTooLarge,
    InvalidArgument,
    InvalidOffset,
    MalformedHeader,
    decode_model,
    read_info,
)
from deepcompression.format.jsontext import json_shape
from models import build_model

CAP = 1 << 28


def raw_file(shape: list[int], dtype: str = "float32", version: int = 3) -> bytes:
    record = {"data": [0, 0], "dtype": dtype, "kind": "raw", "name": "t", "shape": shape}
    return pack(dump({"arch": {}, "provenance": {}, "tensors": [record]}), b"", version)


def huffman_record(shape: list[int], index: dict, weight: dict, nnz: int = 0) -> dict:
    return {"codebook": [0, 0], "index": index, "index_bits": 2, "kind": "huffman", "name": "w",
            "nnz": nnz, "shape": shape, "weight": weight, "weight_bits": 1}  # fmt: skip


def stream(table: list[int], data: list[int], bits: int, symbols: int) -> dict:
    return {"bits": bits, "stream": data, "symbols": symbols, "table": table}


EMPTY = stream([0, 0], [0, 0], 0, 0)


# --- empty shapes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "shape",
    [[CAP, CAP, 0], [0, CAP, CAP], [CAP, CAP, 8, 0], [8, 0, CAP, CAP], [0] + [16] * 14, [1, 0] * 8],
)
def test_empty_shapes_up_to_the_cap_decode_to_empty_tensors(shape: list[int]) -> None:
    assert math_prod_nonzero(shape) <= MAX_NONZERO_PRODUCT
    for dtype in ("float64", "bool", "int8"):
        tensor = decode_model(raw_file(shape, dtype)).state_dict["t"]
        assert list(tensor.shape) == shape and tensor.numel() == 0
    text = dump({"arch": {}, "provenance": {}, "tensors": [huffman_record(shape, EMPTY, EMPTY)]})
    tensor = decode_model(pack(text, version=3)).state_dict["w"]
    assert list(tensor.shape) == shape and tensor.dtype == torch.float32


def math_prod_nonzero(shape: list[int]) -> int:
    return int(np.prod([d for d in shape if d], dtype=object)) if any(shape) else 1


@pytest.mark.parametrize(
    "shape", [[CAP, CAP, 16, 0], [0] + [16] * 15, [CAP, 0, CAP, CAP], [CAP, 2**27, 32, 0]]
)
def test_empty_shapes_beyond_the_cap_are_malformed(shape: list[int]) -> None:
    assert math_prod_nonzero(shape) > MAX_NONZERO_PRODUCT
    with pytest.raises(MalformedHeader, match="has a 0 but its other dimensions"):
        read_info(raw_file(shape))
    text = dump({"arch": {}, "provenance": {}, "tensors": [huffman_record(shape, EMPTY, EMPTY)]})
    with pytest.raises(MalformedHeader, match=f"more than {MAX_NONZERO_PRODUCT}"):
        decode_model(pack(text, version=3))


def test_an_empty_tensor_with_removed_units_decodes() -> None:
    units = {"cols": [1, 1], "kept_cols": 2, "kept_rows": 1, "rows": [0, 1]}
    record = huffman_record([5, 7, 0], EMPTY, EMPTY) | {"units": units}
    record["index"] = stream([2, 0], [2, 0], 0, 0)
    record["weight"] = stream([2, 0], [2, 0], 0, 0)
    text = dump({"arch": {}, "provenance": {}, "tensors": [record]})
    tensor = decode_model(pack(text, bytes([0b01000000, 0b00100100]), version=3)).state_dict["w"]
    assert tensor.shape == (5, 7, 0)


def test_the_writer_refuses_an_empty_tensor_the_reader_would_refuse() -> None:
    assert encode_v3([], {"e": torch.zeros(0, *[16] * 14)}, {}, {})
    with pytest.raises(InvalidArgument, match="non-zero dimensions"):
        encode_v3([], {"e": torch.zeros(0, *[16] * 15)}, {}, {})


def _eval(path: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> str:
    code = main(["eval", str(path), "--data", str(tmp_path / "none"), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code != 0 and len(err.splitlines()) == 1, err
    assert "error: unexpected" not in err and "Traceback" not in err
    return err


def test_eval_reports_empty_shapes_cleanly(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.manual_seed(0)
    state = build_model("lenet_300_100").state_dict()
    data = encode_v3([], state, {"name": "lenet_300_100"}, {}, compress_header=False)
    _, _, _, header_len, _, _, _ = PREAMBLE.unpack_from(data)
    header = json.loads(data[PREAMBLE.size : PREAMBLE.size + header_len])
    payload = data[PREAMBLE.size + header_len :]
    header["tensors"].append(
        {"data": [len(payload), 0], "dtype": "float32", "kind": "raw", "name": "e", "shape": []}
    )
    for shape, expected in (([CAP, CAP, 256, 0], "has a 0"), ([CAP, CAP, 0], "do not fit")):
        header["tensors"][-1]["shape"] = shape
        path = tmp_path / "empty.dcz"
        path.write_bytes(pack(dump(header), payload, version=3))
        assert expected in _eval(path, tmp_path, capsys)


# --- header bombs ---------------------------------------------------------------------------


def test_the_inflation_cap_is_checked_before_inflating_and_inclusive() -> None:
    data = pack(b'{"arch":{},"provenance":{},"tensors":[]}', compress=True, version=3)
    fields = list(PREAMBLE.unpack_from(data))
    fields[4] = MAX_HEADER_RATIO * fields[3]
    at_cap = PREAMBLE.pack(*fields) + data[PREAMBLE.size :]
    with pytest.raises(MalformedHeader, match="inflate to exactly"):
        read_info(at_cap)
    fields[4] += 1
    with pytest.raises(HeaderTooLarge, match=f"more than {MAX_HEADER_RATIO} times"):
        read_info(PREAMBLE.pack(*fields) + data[PREAMBLE.size :])


def _values_file(count: int) -> bytes:
    """An uncompressed header of exactly ``count`` JSON values (five plus count - 5 zeros)."""
    zeros = b",".join([b"0"] * (count - 5))
    return pack(b'{"arch":{},"provenance":{"z":[' + zeros + b']},"tensors":[]}', version=3)


def test_the_value_cap_is_exact() -> None:
    assert len(read_info(_values_file(MAX_JSON_VALUES)).provenance["z"]) == MAX_JSON_VALUES - 5
    with pytest.raises(MalformedHeader, match=f"{MAX_JSON_VALUES + 1} values"):
        read_info(_values_file(MAX_JSON_VALUES + 1))


def test_values_per_stored_byte_are_capped_before_parsing() -> None:
    pad = np.random.default_rng(1).bytes(16384).hex().encode()
    bomb = b",".join([b"{}"] * 200_000)
    text = b'{"arch":{},"provenance":{"b":[' + bomb + b'],"p":"' + pad + b'"},"tensors":[]}'
    data = pack(text, compress=True, version=3)
    stored = PREAMBLE.unpack_from(data)[3]
    assert MAX_JSON_VALUES_PER_BYTE * stored < 200_000 and len(text) <= 64 * stored
    tracemalloc.start()
    try:
        with pytest.raises(MalformedHeader, match=f"at most {MAX_JSON_VALUES_PER_BYTE * stored}"):
            read_info(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * len(text) + 2**20  # the text and its scan, not 200,000 dicts


def test_a_bomb_at_the_limits_costs_a_stated_multiple_of_its_size() -> None:
    """About 8 empty objects per stored byte, padded with incompressible text: accepted."""
    pad = np.random.default_rng(0).bytes(16384).hex().encode()
    bomb = b",".join([b"{}"] * (7 * 16384))
    text = b'{"arch":{},"provenance":{"b":[' + bomb + b'],"p":"' + pad + b'"},"tensors":[]}'
    data = pack(text, compress=True, version=3)
    tracemalloc.start()
    start = time.process_time()
    try:
        assert len(read_info(data).provenance["b"]) == 7 * 16384
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= 1024 * len(data) + 4 * 2**20, (peak, len(data))
    assert time.process_time() - start < 5


def test_the_writer_stores_a_header_uncompressed_when_compressed_would_break_a_limit() -> None:
    provenance = {"b": [{}] * 100_000}
    data = encode_v3([], {"x": torch.ones(2)}, {}, provenance)
    info = read_info(data)
    assert not info.header_compressed and info.provenance == provenance
    plain = encode_v3([], {"x": torch.ones(2)}, {}, {"b": [{"k": i} for i in range(500)]})
    assert read_info(plain).header_compressed
    with pytest.raises(InvalidArgument, match="values"):
        encode_v3([], {}, {}, {"b": [0] * MAX_JSON_VALUES})


def test_json_shape_counts_values_exactly() -> None:
    rng = np.random.default_rng(3)

    def value(depth: int) -> object:
        kind = rng.integers(7 if depth < 6 else 4)
        if kind == 0:
            return int(rng.integers(-5, 5))
        if kind == 1:
            return "".join(rng.choice(list('ab[]{},:"\\ \u00e9'), rng.integers(0, 6)))
        if kind == 2:
            return [None, True, 1.5][rng.integers(3)]
        if kind in (3, 4):
            return [value(depth + 1) for _ in range(rng.integers(0, 4))]
        return {f"k{i}": value(depth + 1) for i in range(rng.integers(0, 4))}

    def count(node: object) -> tuple[int, int]:
        children = node.values() if isinstance(node, dict) else node
        if not isinstance(node, dict | list):
            return 0, 1
        inner = [count(child) for child in children]
        return 1 + max((d for d, _ in inner), default=0), 1 + sum(v for _, v in inner)

    for _ in range(300):
        node = {"v": value(1)}
        text = json.dumps(node, indent=int(rng.integers(0, 2)) or None).encode()
        assert json_shape(text) == count(node), text


# --- settled ambiguities ----------------------------------------------------------------------


def _code_file(index_table: bytes, index_bits: int, index_stream: bytes, bits: int, symbols: int,
               nnz: int, numel: int) -> bytes:  # fmt: skip
    """One Huffman tensor of ``numel`` elements, one cluster (weight code: single symbol 0)."""
    payload = b"\x00\x00\x80\x3f" + index_table + b"\x00\x00" + index_stream
    tables = 4 + len(index_table)
    record = huffman_record(
        [numel],
        stream([4, len(index_table)], [tables + 2, len(index_stream)], bits, symbols),
        stream([tables, 2], [tables + 2 + len(index_stream), 0], 0, nnz),
        nnz,
    )
    record["codebook"], record["index_bits"] = [0, 4], index_bits
    return pack(dump({"arch": {}, "provenance": {}, "tensors": [record]}), payload, version=3)


def test_codes_go_to_symbols_in_table_order_not_ascending() -> None:
    """Length-2 codes 00, 01, 10, 11 go to symbols 2, 0, 1, 3 as listed: gaps 3, 1, 2, 3."""
    table = bytes([2, 0, 4, 2, 0, 1, 3])
    stream_bits = 0b00_01_10_00  # symbols 2, 0, 1, 2: positions 2, 3, 5, 8
    data = _code_file(table, 2, bytes([stream_bits]), 8, 4, 4, 9)
    weights = decode_model(data).state_dict["w"]
    assert torch.nonzero(weights).flatten().tolist() == [2, 3, 5, 8]


def test_a_single_symbol_code_with_bits_is_a_corrupt_stream() -> None:
    data = _code_file(bytes([0, 0]), 2, b"\x00", 3, 2, 2, 4)
    with pytest.raises(CorruptStream, match="zero-bit"):
        decode_model(data)


def test_an_empty_table_with_symbols_is_a_corrupt_stream() -> None:
    data = _code_file(b"", 2, b"", 0, 2, 2, 4)
    with pytest.raises(CorruptStream, match="index stream"):
        decode_model(data)


def test_an_empty_tensor_list_is_a_valid_file() -> None:
    for version in (1, 2, 3):
        data = pack(b'{"arch":{},"provenance":{},"tensors":[]}', version=version)
        assert decode_model(data).state_dict == {} and read_info(data).layers == ()
        assert decode_model(encode_v3([], {}, {}, {}, format_version=version)).state_dict == {}


def test_u_feff_is_a_character_inside_strings_and_invalid_elsewhere() -> None:
    inside = '{"arch":{},"provenance":{"s":"\ufeffa","t":"\\ufeff"},"tensors":[]}'.encode()
    assert read_info(pack(inside, version=3)).provenance == {"s": "\ufeffa", "t": "\ufeff"}
    for text in ('\ufeff{"arch":{},"provenance":{},"tensors":[]}',
                 '{"arch":{},\ufeff"provenance":{},"tensors":[]}'):  # fmt: skip
        with pytest.raises(MalformedHeader):
            read_info(pack(text.encode(), version=3))


def test_arch_must_be_an_object_in_every_version_but_v1_ignores_its_fields() -> None:
    for version in (1, 2, 3):
        with pytest.raises(MalformedHeader, match="must be JSON objects"):
            read_info(pack(b'{"arch":[],"provenance":{},"tensors":[]}', version=version))
    odd = b'{"arch":{"kwargs":3,"name":5},"provenance":{},"tensors":[]}'
    assert read_info(pack(odd, version=1)).arch == {"kwargs": 3, "name": 5}
    with pytest.raises(MalformedHeader, match="arch 'name'"):
        read_info(pack(odd, version=2))


def test_every_offset_is_checked_before_the_payload_length() -> None:
    """Section 1 runs past the end of the file and section 2 is misplaced: InvalidOffset."""
    records = [
        {"data": [0, 400], "dtype": "uint8", "kind": "raw", "name": "a", "shape": [400]},
        {"data": [401, 1], "dtype": "uint8", "kind": "raw", "name": "b", "shape": [1]},
    ]
    text = dump({"arch": {}, "provenance": {}, "tensors": records})
    with pytest.raises(InvalidOffset, match="tensor 'b' data starts at payload offset 401"):
        read_info(pack(text, b"\x00" * 10, version=3))
