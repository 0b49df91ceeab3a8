"""File bytes of the committed LeNet models: format version 2 as written today vs version 3.

    .venv/bin/python -m benchmarks.format_v3 [ROOT] [--models lenet_300_100 lenet5]

For each model, re-encodes checkpoints/<model>/quantized.pt with the provenance and index widths
of compressed/<model>.dcz (read-only; nothing is written): version 2 (equal to the file on disk),
version 3 with the same widths (removed units where they shrink the file) and version 3 with
`auto` widths. All are lossless re-encodings of the same tensors (each decoded and compared).
Prints markdown: one row per variant, then the per-layer choices of the auto file.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.pruning import layer_name
from deepcompression.format.allocation import encoder_inputs
from deepcompression.format.container import KIND_HUFFMAN, decode_model, encode_model, read_info
from deepcompression.report import markdown_table

MODELS = ("lenet_300_100", "lenet5")


def variants(root: Path, model: str) -> tuple[list[dict], list[dict]]:
    """Rows per variant (bytes, ratio, seconds to encode) and the auto file's per-layer rows."""
    on_disk = (root / "compressed" / f"{model}.dcz").read_bytes()
    info = read_info(on_disk)
    checkpoint = Checkpoint.from_bytes((root / "checkpoints" / model / "quantized.pt").read_bytes())
    fixed = {
        layer_name(layer.name): layer.index_bits
        for layer in info.layers
        if layer.kind == KIND_HUFFMAN
    }
    plans = [
        ("v2 as written today", fixed, 2),
        ("v3, same widths (removed units)", fixed, 3),
        ("v3, auto widths + removed units", dict.fromkeys(fixed), 3),
    ]
    rows, files = [], {}
    for label, widths, version in plans:
        quantized, raw = encoder_inputs(checkpoint, widths)
        start = time.perf_counter()
        data = encode_model(
            quantized, raw, checkpoint.arch, info.provenance, format_version=version
        )
        seconds = time.perf_counter() - start
        decoded = decode_model(data).state_dict
        assert all(torch.equal(decoded[k], v) for k, v in checkpoint.state_dict.items()), label
        files[label] = data
        rows.append(
            {
                "model": model,
                "file": label,
                "bytes": len(data),
                "ratio": f"{info.dense_bytes / len(data):.1f}x",
                "encode s": f"{seconds:.2f}",
            }
        )
    assert len(files["v2 as written today"]) == len(on_disk), "v2 re-encoding differs from disk"
    auto = read_info(files["v3, auto widths + removed units"])
    today = {layer.name: layer for layer in info.layers}
    layers = [
        {
            "model": model,
            "layer": layer.name,
            "shape": "x".join(map(str, layer.shape)),
            "kept": f"{100 * layer.nnz / layer.numel:.2f}%",
            "index bits (today -> auto)": f"{today[layer.name].index_bits} -> {layer.index_bits}",
            "units kept": "all" if layer.units is None else "x".join(map(str, layer.units)),
            "bytes (today -> auto)": f"{today[layer.name].total_bytes} -> {layer.total_bytes}",
        }
        for layer in auto.layers
        if layer.kind == KIND_HUFFMAN
    ]
    return rows, layers


def main(argv: list[str] | None = None) -> None:
    """Print the comparison tables for the requested models."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", default=".", type=Path)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows, layers = [], []
    for model in args.models:
        model_rows, model_layers = variants(args.root, model)
        rows += model_rows
        layers += model_layers
    print(markdown_table(rows))
    print()
    print(markdown_table(layers))


if __name__ == "__main__":
    main()
