"""Print the headline figures of finished pipeline runs as a markdown table (for BENCHMARKS.md).

    .venv/bin/python -m benchmarks.results . runs/lenet5
Each argument is a workspace root holding metrics/*.json from `dvc repro` or `flows.run pipeline`;
after the summary comes a per-layer table (the paper's Tables 2-3) for each root.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from deepcompression.report import markdown_table, percent


def row(root: Path) -> dict:
    """One run's figures: errors per stage, density, file size and ratios, decode time."""
    metrics = {
        stage: json.loads((root / "metrics" / f"{stage}.json").read_text())
        for stage in ("train", "prune", "quantize", "encode", "evaluate")
    }
    encode, evaluate = metrics["encode"], metrics["evaluate"]
    return {
        "model": metrics["train"]["model"],
        "dense error": percent(metrics["train"]["test_error"]),
        "pruned error": percent(metrics["prune"]["test_error"]),
        "weights kept": percent(metrics["prune"]["density"]),
        "P+Q error": percent(metrics["quantize"]["test_error"]),
        "file error": percent(evaluate["test_error"]),
        "dense KB": f"{encode['dense_bytes'] / 1000:.0f}",
        "file KB": f"{encode['file_bytes'] / 1000:.1f}",
        "file ratio": f"{encode['file_ratio']:.1f}x",
        "P+Q ratio": f"{encode['pq_ratio']:.1f}x",
        "P+Q+H ratio": f"{encode['pqh_ratio']:.1f}x",
        "decode ms": f"{1000 * evaluate['decode_seconds']:.1f}",
        "logits equal": evaluate["logits_equal_quantized"],
    }


def layer_rows(root: Path) -> list[dict]:
    """Per-layer rows in the shape of the paper's Tables 2-3, from metrics/encode.json."""
    sizes = json.loads((root / "metrics" / "encode.json").read_text())["sizes"]
    return [
        {
            "layer": layer["name"],
            "weights": layer["numel"],
            "kept": f"{layer['kept_percent']:.1f}%",
            "weight bits (P+Q)": layer["weight_bits"],
            "weight bits (H)": f"{layer['huffman_weight_bits']:.2f}",
            "index bits (P+Q)": layer["index_bits"],
            "index bits (H)": f"{layer['huffman_index_bits']:.2f}",
            "P+Q": f"{layer['pq_ratio']:.1f}x",
            "P+Q+H": f"{layer['pqh_ratio']:.1f}x",
        }
        for layer in sizes["layers"]
    ]


def main(argv: list[str]) -> None:
    """Print the summary table, then a per-layer table for each workspace root given."""
    roots = [Path(root) for root in argv or ["."]]
    print(markdown_table([row(root) for root in roots]))
    for root in roots:
        print(markdown_table(layer_rows(root)))


if __name__ == "__main__":
    main(sys.argv[1:])
