"""``deepcompression export FILE --onnx OUT``: decode a compressed-model file into its network and
write it as an ONNX model (``deepcompression.export``), input ``input`` float32 (batch, C, S, S)
normalised as in training, output ``logits``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cli.errors import EXIT_FAILURE, EXIT_OK, CliError, path_text
from cli.network import data_kwargs, load_network
from cli.text import write_line


def _input_shape(path: Path, kwargs: dict[str, object]) -> tuple[int, int, int]:
    """(C, S, S) the network reads, from its data kwargs; a CliError when they are not known."""
    channels, side = kwargs.get("in_channels"), kwargs.get("image_size")
    if not isinstance(channels, int) or not isinstance(side, int):
        raise CliError(
            f"{path_text(path)}: the header's arch.kwargs give no in_channels and image_size, so "
            "the input shape to export with is unknown; rebuild the file with a registered model."
        )
    return channels, side, side


def _write(out: Path, data: bytes) -> None:
    """Write `data` to `out` through a temporary file, so a failure leaves no partial model."""
    partial = out.with_name(out.name + ".partial")
    try:
        partial.write_bytes(data)
        partial.replace(out)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise CliError(
            f"{path_text(out)}: cannot write: {err.strerror or err}", EXIT_FAILURE
        ) from None


def run_export(args: argparse.Namespace) -> int:
    """``export``: the file's network as an ONNX model at ``--onnx OUT``."""
    from deepcompression.export import INPUT_NAME, OUTPUT_NAME, ExportError, onnx_bytes

    model, decoded = load_network(args.file, "cpu", args.max_decoded_bytes)
    shape = _input_shape(args.file, data_kwargs(model, decoded.arch))
    try:
        data = onnx_bytes(model, shape)
    except ExportError as err:
        raise CliError(f"{path_text(args.file)}: {err}", EXIT_FAILURE) from None
    _write(args.onnx, data)
    dims = ", ".join(map(str, shape))
    write_line(
        f"wrote {path_text(args.onnx)} ({len(data):,} bytes): {INPUT_NAME} float32 "
        f"(batch, {dims}) normalised as in training -> {OUTPUT_NAME} (batch, classes)",
        sys.stdout,
    )
    return EXIT_OK
