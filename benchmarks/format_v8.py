"""File bytes of the committed LeNet models: format version 7 vs version 8.

    .venv/bin/python -m benchmarks.format_v8 [ROOT] [--models lenet_300_100 lenet5]

For each model, re-encodes checkpoints/<model>/quantized.pt (read-only; nothing is written) with
the input spec, bias storage and auto index widths of compressed/<model>.dcz: version 7 with
16-digit provenance hashes (as the pipeline wrote before version 8), version 8 with the same
hashes, and version 8 with the hashes cut to 8 digits (what the pipeline writes now). Every
variant is decoded and compared bit for bit with the file on disk. Prints markdown: bytes of the
file, its header and its unit masks, and what `zstd -19 --long` makes of it (when installed).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
from pathlib import Path

import torch

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.pruning import layer_name
from deepcompression.format.allocation import encoder_inputs
from deepcompression.format.container import decode_model, encode_model, read_info
from deepcompression.report import markdown_table

MODELS = ("lenet_300_100", "lenet5")


def _hashes(provenance: dict, digits: int) -> dict:
    """The provenance with every hash at ``digits`` hex digits (lengthened from its own digest
    when shorter, so the variants differ by their encoding only)."""
    def sized(value: object) -> object:
        if not isinstance(value, str):
            return value
        return (value + hashlib.sha256(value.encode()).hexdigest())[:digits]
    return {key: sized(value) for key, value in provenance.items()}


def _zstd(data: bytes) -> str:
    """zstd -19 --long's size change, as a signed percentage ('-' without the zstd command)."""
    if shutil.which("zstd") is None:
        return "-"
    packed = subprocess.run(
        ["zstd", "-19", "--long", "-c", "-q"], input=data, capture_output=True, check=True
    ).stdout
    return f"{100 * (len(packed) - len(data)) / len(data):+.1f}%"


def variants(root: Path, model: str) -> list[dict]:
    """One row per variant: file, header and unit-mask bytes, zstd's change."""
    on_disk = (root / "compressed" / f"{model}.dcz").read_bytes()
    info, decoded = read_info(on_disk), decode_model(on_disk)
    checkpoint = Checkpoint.from_bytes((root / "checkpoints" / model / "quantized.pt").read_bytes())
    widths = {layer_name(layer.name): None for layer in info.layers
              if layer.name.endswith(".weight")}  # fmt: skip
    coded = [layer for layer in info.layers if layer.name.endswith(".bias")]
    bias = "float32"  # as the quantize stage stored the biases: raw in their dtype, or k-means
    if coded:
        bias = coded[0].dtype if coded[0].kind == "raw" else str(coded[0].weight_bits)
    quantized, raw = encoder_inputs(checkpoint, widths, bias)
    rows = []
    for label, version, digits in (
        ("version 7, 16-digit hashes", 7, 16),
        ("version 8, 16-digit hashes", 8, 16),
        ("version 8, 8-digit hashes (the pipeline's)", 8, 8),
    ):
        data = encode_model(quantized, raw, checkpoint.arch, _hashes(decoded.provenance, digits),
                            input_spec=decoded.input, format_version=version)  # fmt: skip
        state = decode_model(data).state_dict
        for name, tensor in decoded.state_dict.items():
            assert torch.equal(state[name].view(torch.uint8), tensor.view(torch.uint8)), name
        written = read_info(data)
        rows.append({
            "model": model, "variant": label, "file B": len(data),
            "header B": written.header_bytes,
            "unit masks B": sum(layer.units_bytes for layer in written.layers),
            "zstd -19 --long": _zstd(data),
        })  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, default=Path("."))
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    rows = [row for model in args.models for row in variants(args.root, model)]
    print(markdown_table(rows))


if __name__ == "__main__":
    main()
