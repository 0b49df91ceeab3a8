"""``deepcompression inspect``: per-layer sizes, compression ratios and stream coders (Huffman or
arithmetic) of a compressed-model file, and the input spec it stores (format version 4), read
from its header alone, as an aligned table or one JSON object."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from cli.errors import EXIT_OK, not_a_model, read_input
from cli.text import key_values, print_json, shown, write_line
from deepcompression.format.container import (
    KIND_HUFFMAN,
    FileInfo,
    FormatError,
    InputMeta,
    LayerInfo,
    read_info,
)
from deepcompression.format.sizes import ModelSizes, model_sizes

DEFAULT_MAX_ROWS = 100
"""Tensors ``inspect`` lists before summarising the rest (``--all`` lists every one)."""
MAX_CELL_CHARS = 64


def _density(layer: LayerInfo) -> float | None:
    """Fraction of the layer's elements that are stored (None for an empty tensor)."""
    return layer.nnz / layer.numel if layer.numel else None


def _layer_row(layer: LayerInfo, sizes: ModelSizes) -> dict[str, Any]:
    """One layer of the inspect report; ratios are None for raw tensors."""
    coded = sizes.layers.get(layer.name) if layer.kind == KIND_HUFFMAN else None
    return {
        "name": layer.name,
        "kind": layer.kind,
        "dtype": layer.dtype,
        "shape": list(layer.shape),
        "numel": layer.numel,
        "nnz": layer.nnz,
        "density": _density(layer),
        "weight_bits": layer.weight_bits,
        "index_bits": layer.index_bits,
        "codebook_size": layer.codebook_size,
        "kept_units": None if layer.units is None else list(layer.units),
        "index_coder": layer.index_coder if layer.kind == KIND_HUFFMAN else None,
        "weight_coder": layer.weight_coder if layer.kind == KIND_HUFFMAN else None,
        "bytes": layer.total_bytes,
        "pq_ratio": None if coded is None else coded.pq_ratio,
        "pqh_ratio": None if coded is None else coded.pqh_ratio,
    }


def _input_report(spec: InputMeta | None) -> dict[str, Any] | None:
    """The stored input spec as JSON (None when the file stores none)."""
    if spec is None:
        return None
    return {
        "channels": spec.channels,
        "image_size": spec.image_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "num_classes": spec.num_classes,
        "classes": None if spec.classes is None else list(spec.classes),
    }


def inspect_report(info: FileInfo, max_rows: int | None = None) -> dict[str, Any]:
    """JSON-able description of a compressed file: arch, revision, input spec, layer rows and
    totals.

    Lists the first ``max_rows`` tensors (all if None); ``tensor_count`` and
    ``omitted_tensors`` say how many there are and how many were left out.
    """
    sizes = model_sizes(info)
    shown = info.layers if max_rows is None else info.layers[:max_rows]
    return {
        "arch": info.arch.get("name"),
        "git_revision": info.provenance.get("git_revision"),
        "format_version": info.version,
        "input": _input_report(info.input),
        "tensor_count": len(info.layers),
        "omitted_tensors": len(info.layers) - len(shown),
        "layers": [_layer_row(layer, sizes) for layer in shown],
        "totals": {
            "file_bytes": info.file_bytes,
            "overhead_bytes": info.overhead_bytes,
            "preamble_bytes": info.preamble_bytes,
            "header_bytes": info.header_bytes,
            "payload_bytes": info.payload_bytes,
            "dense_bytes": info.dense_bytes,
            "decoded_bytes": info.decoded_bytes,
            "ratio": sizes.file_ratio,
            "pq_ratio": sizes.pq_ratio,
            "pqh_ratio": sizes.pqh_ratio,
        },
    }


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1f}x"


def _percent_text(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100.0 * fraction:.2f}%"


_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("layer", False),
    ("kind", False),
    ("dtype", False),
    ("shape", False),
    ("density", True),
    ("w bits", True),
    ("idx bits", True),
    ("k", True),
    ("units kept", True),
    ("coders", False),
    ("bytes", True),
    ("P+Q", True),
    ("P+Q+H", True),
)
"""Table header and whether the column is right-aligned (numbers)."""


def _table_cells(row: dict[str, Any]) -> list[str]:
    """The human table's cells for one layer row; '-' where a field does not apply."""
    coded = row["kind"] == KIND_HUFFMAN
    return [
        shown(row["name"], MAX_CELL_CHARS),
        row["kind"],
        row["dtype"],
        "x".join(str(d) for d in row["shape"]) or "scalar",
        _percent_text(row["density"]),
        str(row["weight_bits"]),
        str(row["index_bits"]) if coded else "-",
        str(row["codebook_size"]) if coded else "-",
        "-" if row["kept_units"] is None else "x".join(map(str, row["kept_units"])),
        f"{row['index_coder']}/{row['weight_coder']}" if coded else "-",
        str(row["bytes"]),
        _ratio_text(row["pq_ratio"]),
        _ratio_text(row["pqh_ratio"]),
    ]


def _align(rows: list[list[str]]) -> list[str]:
    """Pad cells to common column widths, numbers right-aligned, and join with two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, (_, right) in zip(row, widths, _COLUMNS, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _omitted_line(report: dict[str, Any]) -> list[str]:
    """The summary line for tensors left out of the table, if any."""
    omitted = report.get("omitted_tensors", 0)
    if not omitted:
        return []
    return [f"... and {omitted} more tensors (use --all to list them)"]


def _input_lines(spec: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The header block's input-spec lines: shape, normalisation and class names."""
    if spec is None:
        return [("input", "not stored")]
    classes = spec["classes"]
    names = "unnamed" if classes is None else ", ".join(shown(name, 40) for name in classes)
    side = spec["image_size"]
    return [
        ("input", f"{spec['channels']}x{side}x{side}"),
        ("  mean", ", ".join(f"{value:g}" for value in spec["mean"])),
        ("  std", ", ".join(f"{value:g}" for value in spec["std"])),
        (f"  classes ({spec['num_classes']})", shown(names, 400)),
    ]


def format_inspect(report: dict[str, Any], file: str) -> str:
    """Human-readable inspect output: a header block (input spec included), the aligned layer
    table (each coded tensor's index/weight coder: huffman or arith) and totals.

    Values from the file are escaped and cut (names to 64 characters; ``--json`` has them whole).
    """
    totals = report["totals"]
    header = key_values(
        [
            ("file", shown(file)),
            ("arch", shown(report["arch"] or "unknown")),
            ("git revision", shown(report["git_revision"] or "unknown")),
            ("format version", str(report["format_version"])),
            *_input_lines(report.get("input")),
        ]
    )
    table = _align(
        [[title for title, _ in _COLUMNS]] + [_table_cells(row) for row in report["layers"]]
    )
    summary = key_values(
        [
            ("file bytes", str(totals["file_bytes"])),
            ("  preamble bytes", str(totals["preamble_bytes"])),
            ("  header bytes", str(totals["header_bytes"])),
            ("  payload bytes", str(totals["payload_bytes"])),
            ("dense float32 bytes", str(totals["dense_bytes"])),
            ("decoded bytes", str(totals["decoded_bytes"])),
            ("file ratio", _ratio_text(totals["ratio"])),
            ("P+Q ratio (coded layers)", _ratio_text(totals["pq_ratio"])),
            ("P+Q+H ratio (coded layers)", _ratio_text(totals["pqh_ratio"])),
        ]
    )
    return "\n".join([*header, "", *table, *_omitted_line(report), "", *summary])


def run_inspect(args: argparse.Namespace) -> int:
    """``inspect``: read the file's header and print sizes and ratios."""
    try:
        info = read_info(read_input(args.file))
    except FormatError as err:
        raise not_a_model(args.file, err) from None
    report = inspect_report(info, None if args.all else DEFAULT_MAX_ROWS)
    if args.json:
        print_json({"file": str(args.file), **report}, sys.stdout)
    else:
        write_line(format_inspect(report, str(args.file)), sys.stdout)
    return EXIT_OK
