"""Format version 7: a coded bias stored over its layer's kept rows (docs/FORMAT.md, "Version 7").

A 1-D Huffman tensor `X.bias` whose surviving positions are exactly the kept rows of `X.weight`
(stored with removed units) needs no index stream: tag bit 0x02, the owner's position, the weight
stream. The writer takes the form only when it is exact; it is undefined before version 7.
"""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

from benchmarks.mutation_bases import _kept_rows_inputs, build, split_v4
from deepcompression.format.binheader import load_header
from deepcompression.format.binwriter import dump_header
from deepcompression.format.container import (
    FORMAT_VERSION,
    MalformedHeader,
    QuantizedTensor,
    decode_model,
    encode_model,
    read_info,
)
from deepcompression.format.header import parse_header


def _inputs() -> tuple[list[QuantizedTensor], dict, dict]:
    """LeNet-like layers with removed units and a 2-bit k-means bias on each one's kept rows."""
    layers, _, arch, provenance = _kept_rows_inputs()
    gen = torch.Generator().manual_seed(3)
    biases = []
    for layer in layers:
        kept = layer.mask.reshape(layer.shape[0], -1).any(dim=1)
        labels = torch.randint(0, 4, (layer.shape[0],), generator=gen)
        biases.append(QuantizedTensor(layer.name.replace(".weight", ".bias"), kept, labels,
                                      torch.tensor([-0.5, 0.25, 1.0, 2.0]), 2, None))  # fmt: skip
    return layers + biases, arch, provenance


def _expected(q: QuantizedTensor) -> torch.Tensor:
    return torch.where(q.mask, q.centroids[q.labels], torch.zeros(()))


def test_a_bias_on_the_kept_rows_costs_no_index_and_decodes_to_itself() -> None:
    quantized, arch, provenance = _inputs()
    data = encode_model(quantized, {}, arch, provenance, format_version=7)
    v6 = encode_model(quantized, {}, arch, provenance, format_version=6)
    assert read_info(data).version == 7 < FORMAT_VERSION
    biases = {layer.name: layer for layer in read_info(data).layers if layer.name.endswith("bias")}
    assert len(biases) == 3
    for name, layer in biases.items():
        assert layer.index_stream_bytes == layer.index_table_bytes == layer.index_symbols == 0
        assert layer.kept_rows == layer.nnz, name
    old = {layer.name: layer for layer in read_info(v6).layers}
    saved = sum(old[n].index_stream_bytes + old[n].index_table_bytes for n in biases)
    assert len(v6) - len(data) >= saved > 0
    decoded, before = decode_model(data).state_dict, decode_model(v6).state_dict
    for q in quantized:
        assert torch.equal(decoded[q.name].view(torch.int32), _expected(q).view(torch.int32))
        assert torch.equal(decoded[q.name], before[q.name])


def test_a_bias_off_the_kept_rows_keeps_its_index_stream() -> None:
    quantized, arch, provenance = _inputs()
    bias = quantized[-1]
    moved = dataclasses.replace(bias, mask=bias.mask.roll(1))  # a removed row holds a value
    data = encode_model([*quantized[:-1], moved], {}, arch, provenance, format_version=7)
    header, _ = split_v4(data)
    record = load_header(header, False, 7)[0]["tensors"][-1]
    assert "rows_of" not in record and record["index"]["symbols"] > 0
    assert torch.equal(decode_model(data).state_dict[bias.name], _expected(moved))


def test_the_kept_rows_tag_bit_is_undefined_before_version_7() -> None:
    quantized, arch, provenance = _inputs()
    data = encode_model(quantized, {}, arch, provenance, compress_header=False, arithmetic=False,
                        format_version=7)
    header, payload = split_v4(data)
    assert decode_model(build(header, payload, False, 7))
    with pytest.raises(MalformedHeader, match="not defined|tag"):
        decode_model(build(header, payload, False, 6))


def test_the_rebuilt_record_keeps_every_rule_of_a_tensor_over_kept_rows() -> None:
    quantized, arch, provenance = _inputs()
    data = encode_model(quantized, {}, arch, provenance, compress_header=False, format_version=7)
    document = load_header(split_v4(data)[0], False, 7)[0]
    position = len(document["tensors"]) - 1
    record = document["tensors"][position]
    assert record["rows_of"] == 2 and record["index_bits"] == 1
    parse_header(document, 7)
    with pytest.raises(MalformedHeader, match="rows_of"):
        parse_header(document, 6)
    kept = record["nnz"]
    bad_cases = [
        {"nnz": kept - 1, "weight": {**record["weight"], "symbols": kept - 1}},
        {"index_bits": 2},
        {"index": {**record["index"], "symbols": 1}},
        {"rows_of": 0, "shape": document["tensors"][0]["shape"][:1]},
        {"units": document["tensors"][2]["units"]},
        {"rows_of": position},
    ]
    for change in bad_cases:
        bad = copy.deepcopy(document)
        bad["tensors"][position] |= change
        with pytest.raises(MalformedHeader):
            parse_header(bad, 7)


def test_kept_rows_of_a_tensor_without_units_is_malformed() -> None:
    """The reader checks `t` as it reads the record: an earlier tensor with removed units."""
    quantized, arch, provenance = _inputs()
    data = encode_model(quantized, {}, arch, provenance, compress_header=False, format_version=7)
    document = load_header(split_v4(data)[0], False, 7)[0]
    tensors = document["tensors"]
    assert "units" not in tensors[3] and tensors[-1]["rows_of"] == 2
    for owner in (3, len(tensors) - 1, 99):
        forged = copy.deepcopy(tensors)
        forged[-1]["rows_of"] = owner
        header = dump_header(arch, provenance, forged, version=7)
        with pytest.raises(MalformedHeader, match="removed units"):
            load_header(header, False, 7)
