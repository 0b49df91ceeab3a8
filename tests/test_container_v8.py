"""Format version 8 (docs/FORMAT.md, "Version 8"): 4-byte digests, bias names derived from their
owner's, and a columns mask over the column blocks of an earlier tensor's kept rows.

A layer's inputs are the previous layer's outputs, so the columns unit pruning leaves are the
previous layer's kept rows (one block of columns per row after a flatten); version 8 stores only
the choice among those, and nothing when every candidate is kept.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch

from benchmarks.mutation_bases import build, linked_inputs, split_v4
from deepcompression.format.binheader import load_header
from deepcompression.format.binwriter import dump_header
from deepcompression.format.container import (
    FORMAT_VERSION,
    CorruptStream,
    MalformedHeader,
    decode_model,
    encode_model,
    read_info,
)
from deepcompression.format.decoder import _kept_units
from deepcompression.format.header import parse_header
from deepcompression.format.records import ColumnsOf, HuffmanRecord, Span, StreamRecord, UnitsRecord


def _expected(q) -> torch.Tensor:
    return torch.where(q.mask, q.centroids[q.labels], torch.zeros(()))


def _document(data: bytes) -> dict:
    header, _ = split_v4(data)
    return load_header(header, False, 8)[0]


def _linked(compress: bool = False) -> bytes:
    quantized, raw, arch, provenance = linked_inputs()
    return encode_model(quantized, raw, arch, provenance, compress_header=compress)


def test_linked_columns_named_biases_and_short_digests_decode_to_the_same_model() -> None:
    quantized, raw, arch, provenance = linked_inputs()
    data = encode_model(quantized, raw, arch, provenance)
    v7 = encode_model(quantized, raw, arch, provenance, format_version=7)
    info, old = read_info(data), read_info(v7)
    assert info.version == FORMAT_VERSION == 8 and old.version == 7
    tensors = {t["name"]: t for t in _document(data)["tensors"]}
    assert tensors["fc.weight"]["units"]["cols_of"] == 0
    assert tensors["out.weight"]["units"]["cols_of"] == 1
    assert tensors["out.weight"]["units"]["cols"][1] == 0  # every candidate kept: no mask
    assert tensors["fc.bias"]["rows_of"] == 1 and tensors["conv.bias"]["rows_of"] == 0
    masks = {layer.name: layer.units_bytes for layer in info.layers}
    before = {layer.name: layer.units_bytes for layer in old.layers}
    # fc: 8 kept filters x 4 columns = 32 candidates (4 bytes, not 6); out: 10 of 10 (0, not 3)
    assert masks["fc.weight"] == before["fc.weight"] - 2 and masks["out.weight"] == 1
    assert info.header_bytes < old.header_bytes and len(data) < len(v7)
    decoded, earlier = decode_model(data), decode_model(v7)
    assert decoded.provenance == provenance and decoded.arch == arch
    for q in quantized:
        assert torch.equal(decoded.state_dict[q.name].view(torch.int32),
                           _expected(q).view(torch.int32))  # fmt: skip
    for name, tensor in earlier.state_dict.items():
        assert torch.equal(decoded.state_dict[name], tensor), name


def test_short_forms_cost_what_the_document_says() -> None:
    """Each 8-digit hash costs 5 bytes (a tag and 4), not 9 as a table string would; each bias
    over its owner's kept rows one byte of name, not three."""
    quantized, raw, arch, provenance = linked_inputs()
    data = encode_model(quantized, raw, arch, provenance, compress_header=False)
    header, _ = split_v4(data)
    assert provenance["code_sha256"] and header.count(bytes.fromhex("0123abcd")) == 1
    named = {**provenance, "code_sha256": "0123abcz"}  # not hex: a table string
    longer = encode_model(quantized, raw, arch, named, compress_header=False)
    # a table string: its length byte and 8 bytes in the table, a tag; a digest: a tag and 4
    assert read_info(longer).header_bytes - read_info(data).header_bytes == (1 + 8 + 1) - (1 + 4)
    renamed = {"fc.bias": "fc.shift", "conv.bias": "conv.shift"}
    moved = [dataclasses.replace(q, name=renamed.get(q.name, q.name)) for q in quantized]
    spelled = encode_model(moved, {renamed[k]: v for k, v in raw.items()}, arch, provenance,
                           compress_header=False)  # fmt: skip
    document = _document(spelled)
    assert {t["name"] for t in document["tensors"]} >= set(renamed.values())
    # two spelled names: 3 bytes each in parts, and "shift" once in the string table (1 + 5)
    assert read_info(spelled).header_bytes - read_info(data).header_bytes == 2 * 2 + 6


@pytest.mark.parametrize("compress", [False, True])
def test_every_version_8_form_is_undefined_in_version_7(compress: bool) -> None:
    data = _linked(compress)
    header, payload = split_v4(data)
    assert decode_model(build(header, payload, compress, 8))
    with pytest.raises(MalformedHeader):
        decode_model(build(header, payload, compress, 7))
    digest_only = dump_header({}, {"code_sha256": "0123abcd"}, [], version=8)
    with pytest.raises(MalformedHeader, match="not defined"):
        load_header(digest_only, False, 7)
    assert load_header(digest_only, False, 8)[0]["provenance"] == {"code_sha256": "0123abcd"}


def test_a_derived_name_is_only_for_a_record_over_kept_rows() -> None:
    raw = {"kind": "raw", "name": "fc1.weight", "shape": [2], "dtype": "float32", "data": [0, 8]}
    header = dump_header({}, {}, [raw], version=8)
    # no strings, arch {}, provenance {}, one record: tag, 2 parts (fc1, weight), 1 dim of 2
    assert header == bytes([0, 0x80, 0x80, 1, 0x00, 2, 33, 9, 1, 2])
    assert load_header(header, False, 8)[0]["tensors"] == [raw]
    with pytest.raises(MalformedHeader, match="name"):
        load_header(header[:5] + b"\x00" + header[8:], False, 8)


def test_the_rebuilt_columns_rules() -> None:
    document = _document(_linked())
    parse_header(document, 8)
    with pytest.raises(MalformedHeader, match="cols_of|keys"):
        parse_header(document, 7)
    position = 1  # fc.weight: columns over conv.weight's kept rows (12 rows, 4 columns each)
    units = document["tensors"][position]["units"]
    bad_cases = [
        {"cols_of": 2},  # not earlier
        {"cols_of": 3},  # fc.bias: no units
        {"kept_cols": 33},  # more than the 8 x 4 candidates
        {"kept_cols": 32},  # every candidate kept: the mask must then be empty
        {"cols": [units["cols"][0], units["cols"][1] + 1]},
        {"cols_of": -1},
    ]
    for change in bad_cases:
        bad = copy.deepcopy(document)
        bad["tensors"][position]["units"] |= change
        with pytest.raises(MalformedHeader):
            parse_header(bad, 8)
    odd = copy.deepcopy(document)
    odd["tensors"][0]["shape"] = [11, 3, 2, 2]  # 48 columns are not a multiple of 11 rows
    odd["tensors"][0]["units"]["rows"][1] = 2
    with pytest.raises(MalformedHeader, match="multiple"):
        parse_header(odd, 8)


def test_a_columns_mask_that_breaks_its_counts_is_corrupt() -> None:
    data = _linked(False)
    header, payload = split_v4(data)
    cols = _document(data)["tensors"][1]["units"]["cols"]
    for byte, flip in ((cols[0], 0x80), (cols[0] + cols[1] - 1, 0x01)):
        forged = bytearray(payload)
        forged[byte] ^= flip
        with pytest.raises(CorruptStream, match="cols mask"):
            decode_model(build(header, bytes(forged), False, 8))


def test_an_empty_tensor_builds_no_candidate_columns() -> None:
    """A header alone never allocates more than the decoded tensor: with no elements the
    kept columns are not built, however many candidates the owner's rows give."""
    owner_rows = Span(0, 1)
    payload = memoryview(bytes([0xF0]))
    columns = ColumnsOf(tensor=0, mask=owner_rows, rows=4, kept=4, block=1 << 26)
    units = UnitsRecord(Span(1, 0), Span(1, 0), 0, 1 << 28, columns)
    empty = StreamRecord(Span(1, 0), Span(1, 0), 0, 0)
    record = HuffmanRecord("w", (0, 1 << 28), 0, 0, 1, 1, Span(1, 0), empty, empty, units)
    rows, cols = _kept_units(record, units, payload)
    assert rows.size == 0 and cols.size == 1 << 28 and cols.strides == (0,)
    # owner rows 0 and 2 of 4 kept, 2 columns each: candidates 0, 1, 4, 5; the mask picks 1, 4
    linked = UnitsRecord(Span(2, 1), Span(1, 1), 1, 2, ColumnsOf(0, owner_rows, 4, 2, 2))
    small = HuffmanRecord("w", (1, 8), 8, 0, 1, 1, Span(0, 0), empty, empty, linked)
    rows, picked = _kept_units(small, linked, memoryview(bytes([0b1010_0000, 0b0110_0000, 0x80])))
    assert np.array_equal(rows, [0]) and np.array_equal(picked, [1, 4])
