"""Where a LeNet file's bytes go: header (versions 3 and 4), each stream against its order-0
entropy, and what general-purpose compressors still find (issue 18).

Without arguments the files are built here from the registry's LeNet-300-100 and LeNet-5 (seeded
init, no training): magnitude-pruned to the paper's per-layer densities, a third of the hidden units
removed (their biases zeroed, as unit pruning leaves them), k-means shared at the paper's bits,
float32 biases, index widths chosen by the writer, provenance of two sha256 hashes as the
pipeline writes it. Header and layout bytes are those of trained files of the same shapes;
entropies of untrained weights are not.

    .venv/bin/python -m benchmarks.bench_entropy
    .venv/bin/python -m benchmarks.bench_entropy --files compressed/*.dcz   # files on disk

With `--files`, each file is decoded and measured as written: its bytes against the order-0
ideal of its streams (each coded tensor's positions and cluster indices), its header, and the
general-purpose compressors (brotli: `pip install '.[bench]'`).
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from deepcompression.compress.pruning import magnitude_mask
from deepcompression.compress.quantization import cluster_model
from deepcompression.format.container import QuantizedTensor, encode_model, read_info
from deepcompression.format.decoder import decode_model
from deepcompression.format.info import LayerInfo
from deepcompression.format.sparse_index import encode_positions
from models import build_model, model_arch

DENSITIES = {
    "lenet_300_100": {"fc1": 0.08, "fc2": 0.09, "fc3": 0.26},
    "lenet5": {"conv1": 0.66, "conv2": 0.12, "fc1": 0.08, "fc2": 0.19},
}
"""Per-layer kept fractions of the paper's Tables 2-3."""
BITS = {"lenet_300_100": 6, "lenet5": 5}
REMOVED = {"lenet_300_100": ("fc1", "fc2"), "lenet5": ("conv2", "fc1")}
"""Layers a third of whose output units are removed (with the next layer's inputs from them)."""


def lenet_inputs(name: str) -> tuple[list[QuantizedTensor], dict[str, torch.Tensor], dict, dict]:
    """(quantized, raw, arch, provenance) of a pruned, shared LeNet, as ``encode_model`` takes."""
    torch.manual_seed(0)
    model = build_model(name)
    state = model.state_dict()
    layers = list(DENSITIES[name])
    masks = {}
    for i, layer in enumerate(layers):
        weight = state[f"{layer}.weight"]
        mask = magnitude_mask(weight, DENSITIES[name][layer])
        if layer in REMOVED[name]:
            state[f"{layer}.bias"][::3] = 0.0
            mask[::3] = False
        if i and layers[i - 1] in REMOVED[name]:
            _drop_inputs(mask, masks[f"{layers[i - 1]}.weight"])
        masks[f"{layer}.weight"] = mask
        weight.mul_(mask)
    bits = {layer: BITS[name] for layer in layers}
    books = cluster_model(model, masks, bits)
    quantized = [
        QuantizedTensor(key, book.mask, book.labels, book.centroids, book.bits, None)
        for key, book in books.items()
    ]
    raw = {key: value for key, value in model.state_dict().items() if key not in books}
    provenance = {  # the pipeline's: sha256 cut to 16 hex digits (flows/provenance.py)
        "params_sha256": hashlib.sha256(b"params").hexdigest()[:16],
        "code_sha256": hashlib.sha256(b"code").hexdigest()[:16],
    }
    return quantized, raw, model_arch(model), provenance


def _drop_inputs(mask: torch.Tensor, previous: torch.Tensor) -> None:
    """Clear the inputs of ``mask`` fed by the previous layer's removed (empty) outputs."""
    empty = ~previous.reshape(previous.shape[0], -1).any(dim=1)
    if mask.shape[1] == empty.numel():
        mask[:, empty] = False
    else:  # a flattened conv output: each channel feeds a block of inputs
        per = mask.shape[1] // empty.numel()
        mask[:, empty.repeat_interleave(per)] = False


def entropy_bytes(symbols: np.ndarray) -> float:
    """Order-0 entropy of a symbol sequence in bytes (its empirical distribution)."""
    if symbols.size == 0:
        return 0.0
    counts = np.bincount(symbols).astype(np.float64)
    counts = counts[counts > 0]
    return abs(float((counts * np.log2(counts / symbols.size)).sum() / 8))


def stream_rows(quantized: list[QuantizedTensor], info: list[LayerInfo]) -> list[tuple]:
    """(layer, stream, coded bytes incl. table, order-0 entropy bytes, coder) of every stream
    of the quantized layers."""
    by_name = {layer.name: layer for layer in info}
    rows = []
    for q in quantized:
        layer = by_name[q.name]
        mask = q.mask.numpy()
        if layer.units is not None:
            kept_rows = mask.reshape(mask.shape[0], -1).any(axis=1)
            kept_cols = np.moveaxis(mask, 1, 0).reshape(mask.shape[1], -1).any(axis=1)
            mask = mask[np.ix_(kept_rows, kept_cols)]
        index = encode_positions(mask.reshape(-1), layer.index_bits)
        labels = q.labels.numpy().reshape(-1)[q.mask.numpy().reshape(-1)]
        rows.append((q.name, "index", layer.index_table_bytes + layer.index_stream_bytes,
                     entropy_bytes(index), layer.index_coder))  # fmt: skip
        rows.append((q.name, "weight", layer.weight_table_bytes + layer.weight_stream_bytes,
                     entropy_bytes(labels), layer.weight_coder))  # fmt: skip
    return rows


def removed_bias_bytes(layers: list[LayerInfo]) -> int:
    """Bytes a file spends on biases of rows its weight layers remove (stored as zeros)."""
    by_name = {layer.name: layer for layer in layers}
    total = 0
    for layer in layers:
        bias = by_name.get(layer.name.rpartition(".")[0] + ".bias")
        if layer.units is not None and bias is not None and bias.kept_rows is None:
            total += bias.raw_bytes // bias.numel * (layer.shape[0] - layer.units[0])
    return total


def _zstd(data: bytes) -> int | None:
    if shutil.which("zstd") is None:
        return None
    out = subprocess.run(["zstd", "-19", "--long", "-c", "-q"], input=data, capture_output=True,
                         check=True)  # fmt: skip
    return len(out.stdout)


def _brotli(data: bytes) -> int | None:
    try:
        import brotli  # type: ignore[import-not-found]
    except ImportError:
        return None
    return len(brotli.compress(data, quality=11))


COMPRESSORS: dict[str, Callable[[bytes], int | None]] = {
    "xz -9e": lambda data: len(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME)),
    "zstd -19 --long": _zstd,
    "brotli -q 11": _brotli,
}


def print_compressors(data: bytes) -> None:
    """One line per general-purpose compressor: its output size and change against `data`."""
    for tool, compress in COMPRESSORS.items():
        size = compress(data)
        shown = "not installed" if size is None else f"{size} B ({size / len(data) - 1:+.1%})"
        print(f"  {tool}: {shown}")


def report(name: str) -> None:
    """Print one LeNet's header, stream and compressor table."""
    quantized, raw, arch, provenance = lenet_inputs(name)
    print(f"## {name}")
    infos = {}
    for label, options in VARIANTS.items():
        data = encode_model(quantized, raw, arch, provenance, **options)
        info = infos[label] = read_info(data)
        print(f"{label}: file {len(data)} B, header {info.header_bytes} B "
              f"({'zlib' if info.header_compressed else 'plain'}), payload "
              f"{info.payload_bytes} B; bias bytes of removed units stored: "
              f"{removed_bias_bytes(list(info.layers))} B")  # fmt: skip
        print_compressors(data)
    huffman = stream_rows(quantized, list(infos["v4 Huffman only"].layers))
    mixed = stream_rows(quantized, list(infos["v4"].layers))
    print("| layer | stream | order-0 entropy B | Huffman B (table + bits) | v4 B | v4 coder |")
    print("|---|---|---:|---:|---:|---|")
    totals = [0.0, 0.0, 0.0]
    for (layer, stream, coded, ideal, _), row in zip(huffman, mixed, strict=True):
        chosen, coder = row[2], row[4]
        totals = [totals[0] + ideal, totals[1] + coded, totals[2] + chosen]
        print(f"| {layer} | {stream} | {ideal:.1f} | {coded} ({coded / ideal:.3f}) | {chosen} "
              f"({chosen / ideal:.3f}) | {coder} |")  # fmt: skip
    print(f"| all | streams | {totals[0]:.1f} | {totals[1]:.0f} ({totals[1] / totals[0]:.3f}) | "
          f"{totals[2]:.0f} ({totals[2] / totals[0]:.3f}) | |\n")  # fmt: skip


@dataclass(frozen=True)
class Shared:
    """A decoded coded tensor as ``stream_rows`` reads it: kept positions and cluster labels (the
    labels are numbered by value, not as in the file: entropies do not depend on the numbering)."""

    name: str
    mask: torch.Tensor
    labels: torch.Tensor


def decoded_shared(data: bytes) -> list[Shared]:
    """Every Huffman-record tensor of a file as kept positions and labels."""
    decoded = decode_model(data)
    shared = []
    for layer in decoded.layers:
        if layer.kind != "huffman":
            continue
        values = decoded.state_dict[layer.name].numpy()
        mask = values != 0
        labels = np.zeros(values.shape, dtype=np.int64)
        labels[mask] = np.unique(values[mask], return_inverse=True)[1]
        shared.append(Shared(layer.name, torch.from_numpy(mask), torch.from_numpy(labels)))
    return shared


def report_file(path: str) -> None:
    """Print a file's bytes against the order-0 ideal of its streams, and the compressors."""
    data = Path(path).read_bytes()
    info = read_info(data)
    layers = list(info.layers)
    rows = stream_rows(decoded_shared(data), layers)
    ideal = sum(row[3] for row in rows)
    coded = sum(row[2] for row in rows)
    books = sum(layer.codebook_bytes for layer in layers)
    raw = sum(layer.raw_bytes for layer in layers)
    print(f"## {path}: {len(data)} B")
    print(f"  header {info.header_bytes} B, codebooks {books} B, raw tensors {raw} B, "
          f"unit masks {sum(layer.units_bytes for layer in layers)} B")  # fmt: skip
    whole = len(data) / (len(data) - coded + ideal)
    print(f"  streams: {coded} B coded (tables included) against an order-0 ideal of "
          f"{ideal:.1f} B ({coded / ideal:.3f}); the file against its streams' ideal plus the "
          f"rest as stored (header, codebooks, raw tensors, unit masks): {whole:.3f}")  # fmt: skip
    print_compressors(data)
    print("| layer | stream | order-0 entropy B | coded B (table + bits) | coder |")
    print("|---|---|---:|---:|---|")
    for layer, stream, size, entropy, coder in rows:
        ratio = f"{size / entropy:.3f}" if entropy else "a single symbol: 0 bits"
        print(f"| {layer} | {stream} | {entropy:.1f} | {size} ({ratio}) | {coder} |")
    print()


VARIANTS: dict[str, dict] = {
    "v3": {"format_version": 3},
    "v4 Huffman only": {"arithmetic": False},
    "v4": {},
}
"""The files compared: version 3, version 4 with Huffman coding only, version 4 as written."""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", nargs="+", help=".dcz files to measure as written")
    args = parser.parse_args(argv)
    if args.files:
        for path in args.files:
            report_file(path)
        return
    for name in DENSITIES:
        report(name)


if __name__ == "__main__":
    main()
