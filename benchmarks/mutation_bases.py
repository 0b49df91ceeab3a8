"""The files the hostile-file mutations start from: real encoded files of versions 1 to 8.

Base files of versions 1-3 (JSON header; one with removed units, one with a raw tensor of every
dtype) and binary-header files of versions 4 to 8 of the same tensors (version 6 with float16
codebooks, 7 with coded biases over kept rows, 8 with columns masks over an earlier layer's kept
rows), with the helpers that
take a file apart and build one back with valid CRCs (``benchmarks.mutations`` edits them).
"""

from __future__ import annotations

import dataclasses
import json
import struct
import zlib

import torch

from deepcompression.format.container import InputMeta, QuantizedTensor, encode_model

PREAMBLE = struct.Struct("<8sHHIIII")


def _layer(
    name: str, shape: tuple[int, ...], density: float, bits: int, index_bits: int, seed: int
) -> QuantizedTensor:
    gen = torch.Generator().manual_seed(seed)
    mask = torch.rand(shape, generator=gen) < density
    k = 1 << bits
    labels = (torch.randn(shape, generator=gen) * k / 5 + k / 2).long().clamp(0, k - 1)
    return QuantizedTensor(name, mask, labels, torch.randn(k, generator=gen), bits, index_bits)


def _base_inputs() -> list[tuple]:
    """(quantized, raw, arch, provenance) of the version-4 base files."""
    mlp = [
        _layer("fc1.weight", (24, 16), 0.3, 4, 3, 1),
        _layer("fc2.weight", (8, 24), 0.5, 3, 2, 2),
    ]
    biases = {"fc1.bias": torch.randn(24, generator=torch.Generator().manual_seed(5))}
    arch = {"name": "tiny_mlp", "kwargs": {"hidden": 24, "scale": -1.5, "flags": [True, None]}}
    provenance = {"git": "0" * 40, "params_sha256": "ab" * 32, "params": {"bits": [4, -3]}}
    typed = {
        "f16": torch.randn(3, 2, generator=torch.Generator().manual_seed(6)).half(),
        "bn.num_batches_tracked": torch.tensor(12, dtype=torch.int64),
        "flags": torch.tensor([True, False, True, True]),
        "none": torch.zeros(0, 4, dtype=torch.bool),
    }
    return [
        (mlp, biases, arch, provenance),
        _kept_rows_inputs(),
        (mlp[:1], typed, {"name": "typed"}, {"\ud800": "\u00e9"}),
        (_unit_layers(), biases, arch, provenance),
        (mlp, {}, {}, {}),
    ]


def _kept_rows_inputs() -> tuple:
    """Layers with removed units and their biases (float32, float16, bool), zero on the removed
    rows, which version 4 stores over the kept rows only."""
    gen = torch.Generator().manual_seed(7)
    layers, biases = [], {}
    for q, dtype in zip(_unit_layers(), (torch.float32, torch.float16, torch.bool), strict=True):
        layers.append(QuantizedTensor(f"{q.name}.weight", q.mask, q.labels, q.centroids,
                                      q.weight_bits, q.index_bits))  # fmt: skip
        kept = q.mask.reshape(q.shape[0], -1).any(dim=1)
        values = torch.randn(q.shape[0], generator=gen).to(dtype)
        biases[f"{q.name}.bias"] = torch.where(kept, values, torch.zeros((), dtype=dtype))
    return layers, biases, {"name": "units"}, {}


def _base_files() -> list[bytes]:
    mlp = [
        _layer("fc1.weight", (24, 16), 0.3, 4, 3, 1),
        _layer("fc2.weight", (8, 24), 0.5, 3, 2, 2),
    ]
    biases = {"fc1.bias": torch.randn(24), "fc2.bias": torch.randn(8)}
    arch = {"name": "tiny_mlp", "kwargs": {"hidden": 24}}
    provenance = {"git": "0" * 40, "params": {"bits": [4, 3]}}
    ones = torch.ones(4, 5, dtype=torch.bool)
    sparse = torch.zeros(3, 40, dtype=torch.bool)
    sparse[0, 1] = sparse[2, 39] = True
    edge = [
        QuantizedTensor("empty", ~ones, ones.long() * 0, torch.ones(2), 1, 2),
        QuantizedTensor("const", ones[:3, :3], ones[:3, :3].long() * 0, torch.ones(1), 1, 4),
        QuantizedTensor("gaps", sparse, sparse.long(), torch.tensor([0.5, -0.5]), 1, 2),
        _layer("conv.weight", (4, 2, 3, 3), 0.4, 2, 8, 3),
    ]
    typed = {
        "f16": torch.randn(3, 2).half(), "bf16": torch.randn(5).bfloat16(),
        "f64": torch.randn(2, 2).double(), "i8": torch.tensor([-128, 0, 127], dtype=torch.int8),
        "i16": torch.tensor([-1, 300], dtype=torch.int16),
        "i32": torch.tensor([[7]], dtype=torch.int32),
        "bn.num_batches_tracked": torch.tensor(12, dtype=torch.int64),
        "u8": torch.arange(6, dtype=torch.uint8), "flags": torch.tensor([True, False, True, True]),
        "none": torch.zeros(0, 4, dtype=torch.bool),
    }  # fmt: skip
    return [
        encode_model(mlp, biases, arch, provenance, format_version=3),
        encode_model(mlp, biases, arch, provenance, compress_header=False, format_version=2),
        encode_model(edge, {"s": torch.tensor(1.0)}, {"name": "edge"}, {}, compress_header=False,
                     format_version=3),
        encode_model(mlp[:1], typed, arch, provenance, compress_header=False, format_version=3),
        encode_model(mlp, biases, arch, provenance, format_version=1),
        encode_model(_unit_layers(), biases, arch, provenance, compress_header=False,
                     format_version=3),
    ]  # fmt: skip


def _unit_layers() -> list[QuantizedTensor]:
    """Layers whose empty rows and columns the version-3 writer stores as removed units."""
    gen = torch.Generator().manual_seed(4)
    rows = torch.arange(60) % 2 != 0
    cols = torch.arange(40) % 4 != 1
    sparse = (torch.rand(60, 40, generator=gen) < 0.6) & rows[:, None] & cols[None, :]
    dense = torch.zeros(24, 50, dtype=torch.bool)
    dense[3:15] = True
    filters = (
        (torch.rand(32, 16, 3, 3, generator=gen) < 0.7)
        & (torch.arange(32) % 4 == 0).view(32, 1, 1, 1)
        & (torch.arange(16) % 2 == 0).view(1, 16, 1, 1)
    )
    layers = []
    for name, mask, bits, index_bits in (("sparse", sparse, 3, 4), ("dense", dense, 2, None),
                                         ("filters", filters, 2, 2)):  # fmt: skip
        labels = torch.randint(0, 1 << bits, mask.shape, generator=gen)
        layers.append(QuantizedTensor(name, mask, labels, torch.randn(1 << bits), bits, index_bits))
    return layers


BASE_FILES = _base_files()


def _binary_files(version: int) -> list[bytes]:
    """Files of a binary-header version (4 or 5): plain, typed dtypes, removed units, input
    specs, Huffman-only."""
    bases, v = _base_inputs(), {"format_version": version}
    return [encode_model(*inputs, compress_header=compress, **v)
            for inputs, compress in zip(bases * 2, (True,) * 5 + (False,) * 5, strict=True)] + [
        encode_model(*bases[0], input_spec=InputMeta(3, 32, (0.5, 0.25, -1.0), (0.5, 2.0, 1e-3),
                     4, ("cat", "dog", "fc1", "fc1")), **v),
        encode_model(*bases[3], input_spec=InputMeta(1, 28, (0.1307,), (0.3081,), 10), **v),
        encode_model(*bases[0], arithmetic=False, **v),
        encode_model(*bases[1], arithmetic=False, compress_header=False, **v),
    ]  # fmt: skip


V4_FILES = _binary_files(4)
"""Version-4 files (binary header) of the same tensors: plain, typed dtypes and removed units."""
V5_FILES = _binary_files(5) + [encode_model(*_base_inputs()[2][:2], {"f": 0.1, "g": [1e-300]},
                                            {"params_sha256": "0123456789abcdef"},
                                            format_version=5)]  # fmt: skip
"""The same in version 5, and one with a decimal number and a short digest."""


def _half_files() -> list[bytes]:
    """Version-6 files whose codebooks are float16 (every centroid rounded to a float16 value),
    one of them beside a float32 codebook, and one with a half NaN, infinity and subnormal."""
    files = []
    for quantized, raw, arch, provenance in _base_inputs()[:4]:
        half = [dataclasses.replace(q, centroids=q.centroids.half().float()) for q in quantized]
        files.append(encode_model(half, raw, arch, provenance, format_version=7))
        files.append(encode_model([half[0], *quantized[1:]], raw, arch, provenance,
                                  compress_header=False, format_version=7))  # fmt: skip
    odd = torch.tensor([float("nan"), float("-inf"), 2.0**-24, -(2.0**-20), 65504.0, -0.0])
    layer = _layer("odd.weight", (6, 8), 0.6, 3, 2, 9)
    special = [dataclasses.replace(layer, centroids=torch.cat([odd, odd[:2]]))]
    return files + [encode_model(special, {}, {"name": "odd"}, {}, format_version=7)]


V6_FILES = _half_files()
"""Version-6 files with float16 codebooks (written as version 7)."""


def _coded_rows_files() -> list[bytes]:
    """Version-7 files whose k-means-shared biases are stored over their layers' kept rows (one
    float16, one arithmetic-coded, one beside a bias whose positions are not the kept rows)."""
    layers, _, arch, provenance = _kept_rows_inputs()
    gen = torch.Generator().manual_seed(11)
    biases = []
    for layer in layers:
        kept = layer.mask.reshape(layer.shape[0], -1).any(dim=1)
        labels = torch.randint(0, 4, (layer.shape[0],), generator=gen)
        centroids = torch.randn(4, generator=gen)
        biases.append(QuantizedTensor(layer.name.replace(".weight", ".bias"), kept, labels,
                                      centroids, 2, None))  # fmt: skip
    half = [dataclasses.replace(b, centroids=b.centroids.half().float()) for b in biases]
    odd = dataclasses.replace(biases[-1], mask=~biases[-1].mask)
    v7 = {"format_version": 7}
    return [
        encode_model(layers + biases, {}, arch, provenance, **v7),
        encode_model(layers + half, {}, arch, provenance, compress_header=False, **v7),
        encode_model(layers + biases, {}, arch, provenance, arithmetic=False, **v7),
        encode_model(layers + [*biases[:-1], odd], {}, arch, provenance, **v7),
    ]


V7_FILES = _coded_rows_files()
"""Version-7 files with coded biases over kept rows."""


def linked_inputs() -> tuple[list[QuantizedTensor], dict[str, torch.Tensor], dict, dict]:
    """A chain whose layers' inputs are the previous layer's kept units (version 8): a conv layer
    with removed filters, an fc layer over its flattened channels (4 columns each) that drops
    some more columns, an fc layer over exactly the fc layer's kept rows; k-means-shared and raw
    biases on the kept rows, two 8-digit hashes."""
    gen = torch.Generator().manual_seed(21)
    conv_rows = torch.arange(12) % 3 != 1
    conv = (torch.rand(12, 3, 2, 2, generator=gen) < 0.8) & conv_rows.view(12, 1, 1, 1)
    fc_rows = torch.arange(20) % 2 == 0
    fc_cols = conv_rows.repeat_interleave(4) & (torch.arange(48) % 7 != 3)
    fc = (torch.rand(20, 48, generator=gen) < 0.5) & fc_rows[:, None] & fc_cols[None, :]
    out = torch.rand(6, 20, generator=gen) < 0.5
    out[:, ~fc_rows] = False
    out[:, fc_rows] |= torch.arange(6)[:, None] == 0  # every kept input used: mask all ones
    layers = []
    for name, mask, bits in (("conv.weight", conv, 2), ("fc.weight", fc, 3),
                             ("out.weight", out, 2)):  # fmt: skip
        k = 1 << bits
        centroids = torch.randn(k, generator=gen)
        labels = torch.randint(0, k, mask.shape, generator=gen)
        layers.append(QuantizedTensor(name, mask, labels, centroids, bits, None))
    kept = fc.any(dim=1)
    bias = QuantizedTensor("fc.bias", kept, torch.randint(0, 2, (20,), generator=gen),
                           torch.tensor([-0.25, 0.75]), 1, None)  # fmt: skip
    raw = {"conv.bias": torch.where(conv_rows, torch.randn(12, generator=gen), torch.zeros(()))}
    provenance = {"code_sha256": "0123abcd", "params_sha256": "fedc9876"}
    return [*layers, bias], raw, {"name": "linked"}, provenance


def _linked_files() -> list[bytes]:
    """Version-8 files: columns masks over an earlier layer's kept rows (one empty), biases
    named after their owner, 4-byte digests; with and without zlib and arithmetic coding."""
    quantized, raw, arch, provenance = linked_inputs()
    return [
        encode_model(quantized, raw, arch, provenance),
        encode_model(quantized, raw, arch, provenance, compress_header=False),
        encode_model(quantized, raw, arch, provenance, arithmetic=False, compress_header=False),
    ]


V8_FILES = _linked_files()
"""Version-8 files (the writer's default)."""
BINARY_FILES = V4_FILES + V5_FILES + V6_FILES + V7_FILES + V8_FILES
"""The binary-header files the v4_* mutators start from (their names predate versions 5-8)."""


def split(data: bytes) -> tuple[dict, bytes]:
    _, _, flags, header_len, _, _, _ = PREAMBLE.unpack_from(data)
    stored = data[PREAMBLE.size : PREAMBLE.size + header_len]
    header = json.loads(zlib.decompress(stored) if flags & 1 else stored)
    return header, data[PREAMBLE.size + header_len :]


def version(data: bytes) -> int:
    return PREAMBLE.unpack_from(data)[1]


def build(header: bytes, payload: bytes, compress: bool, version: int, flags: int = 0) -> bytes:
    """A file around a header with valid CRCs; ``flags`` adds to the compression bit."""
    stored = zlib.compress(header) if compress else header
    fields = (b"\x89DCZ\r\n\x1a\n", version, int(compress) | flags, len(stored), len(header))
    crcs = (zlib.crc32(stored), zlib.crc32(payload))
    return PREAMBLE.pack(*fields, *crcs) + stored + payload


def dump(header: object) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def split_v4(data: bytes) -> tuple[bytes, bytes]:
    """The inflated binary header and the payload of a version-4 file."""
    _, _, flags, header_len, _, _, _ = PREAMBLE.unpack_from(data)
    stored = data[PREAMBLE.size : PREAMBLE.size + header_len]
    return (zlib.decompress(stored) if flags & 1 else stored), data[PREAMBLE.size + header_len :]
