"""Format version 3: removed units (row and column masks, the index over the compacted
sub-tensor) and the writer's per-layer choices by exact file bytes (units form, auto width)."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from container_bytes import encode_v3, rebuild, split
from hypothesis import given, settings
from hypothesis import strategies as st
from test_container_spec import assert_agree

from deepcompression.format.container import (
    AUTO_INDEX_BITS,
    CorruptStream,
    MalformedHeader,
    QuantizedTensor,
    decode_model,
    read_info,
)


def layer(
    name: str,
    mask: torch.Tensor,
    index_bits: int | None,
    weight_bits: int = 3,
    seed: int = 0,
) -> QuantizedTensor:
    """Random labels over ``2**weight_bits`` random centroids for a given mask."""
    gen = torch.Generator().manual_seed(seed)
    k = 1 << weight_bits
    labels = torch.randint(0, k, mask.shape, generator=gen)
    return QuantizedTensor(
        name, mask, labels, torch.randn(k, generator=gen), weight_bits, index_bits
    )


def expected(q: QuantizedTensor) -> torch.Tensor:
    """What the layer decodes to: its centroid at surviving positions, +0.0 elsewhere."""
    return torch.where(q.mask, q.centroids[q.labels], torch.zeros(()))


def unit_mask(
    shape: tuple[int, ...], rows: float, cols: float, density: float, seed: int
) -> torch.Tensor:
    """Each row/column kept with its probability, each weight of a kept block with ``density``."""
    gen = torch.Generator().manual_seed(seed)
    keep_rows = torch.rand(shape[0], generator=gen) < rows
    keep_cols = torch.rand(shape[1], generator=gen) < cols
    extra = (1,) * (len(shape) - 2)
    block = keep_rows.view(-1, 1, *extra) & keep_cols.view(1, -1, *extra)
    return (torch.rand(shape, generator=gen) < density) & block


SHAPES = st.sampled_from([(40, 60), (24, 9, 3, 3), (64, 16), (7, 130)])


@settings(max_examples=40, deadline=None)
@given(
    shape=SHAPES,
    rows=st.floats(0.0, 1.0),
    cols=st.floats(0.0, 1.0),
    density=st.floats(0.0, 1.0),
    index_bits=st.one_of(st.none(), st.integers(1, 12)),
    seed=st.integers(0, 1000),
)
def test_decode_of_encode_is_the_layer_and_never_larger_than_version_2(
    shape: tuple[int, ...],
    rows: float,
    cols: float,
    density: float,
    index_bits: int | None,
    seed: int,
) -> None:
    q = layer("w", unit_mask(shape, rows, cols, density, seed), index_bits, seed=seed)
    raw = {"b": torch.randn(shape[0])}
    v3 = encode_v3([q], raw, {"name": "m"}, {})
    decoded = decode_model(v3).state_dict
    assert torch.equal(decoded["w"], expected(q)) and torch.equal(decoded["b"], raw["b"])
    info = read_info(v3).layers[0]
    if info.units is not None:  # removed rows and columns decode to +0.0 (bits 0)
        mask = q.mask.numpy()
        removed_rows = ~mask.reshape(shape[0], -1).any(axis=1)
        assert info.units[0] == shape[0] - removed_rows.sum()
        assert not decoded["w"][torch.from_numpy(removed_rows)].view(torch.int32).any()
    if index_bits is not None:
        v2 = encode_v3([q], raw, {"name": "m"}, {}, format_version=2)
        assert len(v3) <= len(v2)
        assert (len(v3) == len(v2)) == (info.units is None)


def test_a_dense_block_is_stored_with_no_index_bits() -> None:
    mask = torch.zeros(300, 784, dtype=torch.bool)
    mask[::3, ::2] = True  # a third of the neurons, half of the inputs, dense between them
    q = layer("fc1.weight", mask, 5)
    data = encode_v3([q], {}, {}, {})
    info = read_info(data).layers[0]
    assert info.units == (100, 392)
    assert info.index_stream_bits == 0 and info.index_symbols == info.nnz == 100 * 392
    assert info.units_bytes == 38 + 98
    assert torch.equal(decode_model(data).state_dict["fc1.weight"], expected(q))
    v2 = encode_v3([q], {}, {}, {}, format_version=2)
    assert len(data) < len(v2) - 4_000  # v2 spends about 1 bit per weight on its positions


def test_units_are_removed_only_when_the_file_shrinks() -> None:
    mask = torch.zeros(2, 4, dtype=torch.bool)
    mask.view(-1)[[0, 5, 6]] = True  # column 3 is empty: declaring it costs more than it saves
    small = encode_v3([layer("w", mask, 2)], {}, {}, {})
    assert read_info(small).layers[0].units is None
    assert small[10:] == encode_v3([layer("w", mask, 2)], {}, {}, {}, format_version=2)[10:]


def test_auto_width_is_never_larger_than_any_fixed_width() -> None:
    layers = [
        (unit_mask((300, 784), 0.7, 0.9, 0.06, seed=1), "fc1.weight"),
        (unit_mask((100, 300), 1.0, 0.7, 0.1, seed=2), "fc2.weight"),
        (unit_mask((50, 20, 5, 5), 0.8, 1.0, 0.12, seed=3), "conv2.weight"),
        (unit_mask((10, 100), 1.0, 1.0, 0.3, seed=4), "fc3.weight"),
    ]
    auto = encode_v3([layer(n, m, None, seed=i) for i, (m, n) in enumerate(layers)], {}, {}, {})
    for width in AUTO_INDEX_BITS:
        fixed = [layer(n, m, width, seed=i) for i, (m, n) in enumerate(layers)]
        assert len(auto) <= len(encode_v3(fixed, {}, {}, {})), width
    mixed = [layer(n, m, 8 if m.dim() == 4 else 5, seed=i) for i, (m, n) in enumerate(layers)]
    assert len(auto) <= len(encode_v3(mixed, {}, {}, {}))
    decoded = decode_model(auto).state_dict
    for i, (m, n) in enumerate(layers):
        assert torch.equal(decoded[n], expected(layer(n, m, None, seed=i)))


def test_older_versions_never_declare_units_and_still_read_back() -> None:
    mask = torch.zeros(300, 784, dtype=torch.bool)
    mask[::3, ::2] = True
    q = layer("fc1.weight", mask, None)
    for version in (1, 2):
        data = encode_v3([q], {}, {}, {}, format_version=version)
        info = read_info(data)
        assert info.version == version and info.layers[0].units is None
        assert torch.equal(decode_model(data).state_dict["fc1.weight"], expected(q))


def units_file() -> bytes:
    mask = torch.zeros(36, 80, dtype=torch.bool)
    mask[::2, 1::2] = True
    return encode_v3([layer("w", mask, 2)], {}, {}, {}, compress_header=False)


def test_units_file_fixture_removes_units() -> None:
    assert read_info(units_file()).layers[0].units == (18, 40)


@pytest.mark.parametrize(
    ("edit", "error", "message"),
    [
        (lambda t: t["units"].update(kept_rows=19), CorruptStream, "keeps 18 units"),
        (lambda t: t["units"].update(kept_cols=10), MalformedHeader, "nnz"),
        (lambda t: t["units"].update(kept_rows=37), MalformedHeader, "kept_rows"),
        (lambda t: t["units"].update(extra=1), MalformedHeader, "unknown fields"),
        (lambda t: t["units"].pop("cols"), MalformedHeader, "missing fields"),
        (lambda t: t.update(units=None), MalformedHeader, "JSON object"),
        (lambda t: t.update(shape=[2880]), MalformedHeader, "at least 2 dimensions"),
        (lambda t: t["units"]["rows"].__setitem__(1, 4), MalformedHeader, "need 5"),
    ],
)
def test_inconsistent_units_are_rejected(edit, error, message) -> None:
    header, payload = split(units_file())
    edit(header["tensors"][0])
    with pytest.raises(error, match=message):
        decode_model(rebuild(header, payload, version=3))


def test_units_mask_padding_and_version_2_key_are_rejected() -> None:
    header, payload = split(units_file())
    offset = header["tensors"][0]["units"]["rows"][0]
    body = bytearray(payload)
    body[offset + 4] |= 0x01  # bit 39 of a 36-unit mask: padding
    with pytest.raises(CorruptStream, match="padding"):
        decode_model(rebuild(header, bytes(body), version=3))
    with pytest.raises(MalformedHeader, match="unknown fields \\['units'\\]"):
        read_info(rebuild(header, payload, version=2))


def test_a_file_declaring_huge_units_allocates_only_its_output() -> None:
    """Counts bounded by the compacted sub-tensor: a 2^24-element zero-bit layer with removed
    units decodes through the reference reader within its own size plus the compacted part."""
    mask = np.zeros((4096, 4096), dtype=bool)
    mask[::2, ::2] = True
    q = QuantizedTensor(
        "w", torch.from_numpy(mask), torch.zeros(4096, 4096, dtype=torch.int64),
        torch.tensor([0.5]), 1, 1,
    )  # fmt: skip
    data = encode_v3([q], {}, {}, {})
    assert len(data) < 2000 and read_info(data).layers[0].units == (2048, 2048)
    decoded = decode_model(data).state_dict["w"]
    assert float(decoded.sum()) == 0.5 * 2048 * 2048 and decoded[1::2].abs().sum() == 0


UNITS_EXAMPLE_PREAMBLE = "8944435a0d0a1a0a0300000055010000550100001d973f27600837fc"
UNITS_EXAMPLE_SHA256 = "1eb7fd4a8d30d0a29593257ee11835dba046167bd0f3dfccdc9848c1a4ca3849"


def units_example() -> bytes:
    """The worked example of docs/FORMAT.md, "removed units (version 3)"."""
    header = (
        '{"arch":{"name":"tiny"},"provenance":{},"tensors":[{"codebook":[0,8],"index":{"bits":0,'
        '"stream":[16,0],"symbols":4,"table":[10,2]},"index_bits":1,"kind":"huffman","name":"w",'
        '"nnz":4,"shape":[3,4],"units":{"cols":[9,1],"kept_cols":2,"kept_rows":2,"rows":[8,1]},'
        '"weight":{"bits":4,"stream":[16,1],"symbols":4,"table":[12,4]},"weight_bits":1}]}'
    )
    payload = "000000bf0000803ea06000000102000190"
    return bytes.fromhex(UNITS_EXAMPLE_PREAMBLE) + header.encode() + bytes.fromhex(payload)


def test_pinned_units_example_decodes_as_documented() -> None:
    data = units_example()
    assert len(data) == 386 and hashlib.sha256(data).hexdigest() == UNITS_EXAMPLE_SHA256
    w = decode_model(data).state_dict["w"]
    assert w.tolist() == [[0, 0.25, -0.5, 0], [0, 0, 0, 0], [0, -0.5, 0.25, 0]]
    assert not w[1].view(torch.int32).any() and not w[:, [0, 3]].view(torch.int32).any()
    info = read_info(data).layers[0]
    assert (info.units, info.units_bytes, info.index_stream_bits) == ((2, 2), 2, 0)
    assert assert_agree(data) == "decoded"  # the decoder written from FORMAT.md alone agrees
