"""Print the headline figures of finished pipeline runs as a markdown table (for BENCHMARKS.md).

    .venv/bin/python -m benchmarks.results [ROOT ...] [--models lenet_300_100 lenet5]
Each ROOT (default: .) is a workspace root holding metrics/<model>/*.json from `dvc repro` or
`flows.run pipeline`; without --models every model with metrics under a root is listed. Errors
up to P+Q are on the validation split; the file's error is given on validation and test (only the
evaluate stage reads the test set). After the summary comes a per-layer table (the paper's Tables
2-3) for each model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepcompression.report import markdown_table, percent
from runtime.workspace import Workspace

STAGES = ("train", "prune", "quantize", "encode", "evaluate")


def _percent(value: float | None) -> str:
    return "n/a" if value is None else percent(value)


def workspaces(root: Path, models: list[str] | None) -> list[Workspace]:
    """The models' workspaces under `root`: those named, else every model with train metrics."""
    if models is None:
        models = sorted(path.parent.name for path in (root / "metrics").glob("*/train.json"))
        if not models:
            raise SystemExit(
                f"{root / 'metrics'} holds no metrics/<model>/train.json: run dvc repro"
            )
    return [Workspace(root, model) for model in models]


def metrics(workspace: Workspace) -> dict[str, dict]:
    """{stage: metrics} of one model; a missing file names the stage to run."""
    found = {}
    for stage in STAGES:
        path = workspace.metrics(stage)
        if not path.is_file():
            raise SystemExit(f"{path} not found: run `dvc repro {stage}@{workspace.model}`")
        found[stage] = json.loads(path.read_text())
    return found


def row(workspace: Workspace) -> dict:
    """One run's figures: errors per stage, density, file size and ratios, decode time."""
    stages = metrics(workspace)
    encode, evaluate = stages["encode"], stages["evaluate"]
    timing = workspace.timing("evaluate")  # untracked: absent after a `dvc pull`
    decode = json.loads(timing.read_text())["decode_seconds"] if timing.is_file() else None
    return {
        "model": workspace.model,
        "dense val error": _percent(stages["train"]["val_error"]),
        "pruned val error": _percent(stages["prune"]["val_error"]),
        "weights kept": percent(stages["prune"]["density"]),
        "P+Q val error": _percent(stages["quantize"]["val_error"]),
        "file val error": _percent(evaluate["val_error"]),
        "file test error": _percent(evaluate["test_error"]),
        "dense KB": f"{encode['dense_bytes'] / 1000:.0f}",
        "file KB": f"{encode['file_bytes'] / 1000:.1f}",
        "file ratio": f"{encode['file_ratio']:.1f}x",
        "P+Q ratio": f"{encode['pq_ratio']:.1f}x",
        "P+Q+H ratio": f"{encode['pqh_ratio']:.1f}x",
        "decode ms": "n/a" if decode is None else f"{1000 * decode:.1f}",
        "logits equal": evaluate["logits_equal_quantized"],
    }


def bits(value: float | None) -> str:
    """Bits per entry to 2 decimals; '-' for a layer with no such stream (a bias stored over its
    layer's kept rows has no index stream)."""
    return "-" if value is None else f"{value:.2f}"


def layer_rows(workspace: Workspace) -> list[dict]:
    """Per-layer rows in the shape of the paper's Tables 2-3, from metrics/<model>/encode.json."""
    sizes = json.loads(workspace.metrics("encode").read_text())["sizes"]
    return [
        {
            "layer": layer["name"],
            "weights": layer["numel"],
            "kept": f"{layer['kept_percent']:.1f}%",
            "weight bits (P+Q)": layer["weight_bits"],
            "weight bits (H)": f"{layer['huffman_weight_bits']:.2f}",
            "index bits (P+Q)": layer["index_bits"],
            "index bits (H)": bits(layer["huffman_index_bits"]),
            "P+Q": f"{layer['pq_ratio']:.1f}x",
            "P+Q+H": f"{layer['pqh_ratio']:.1f}x",
        }
        for layer in sizes["layers"]
    ]


def main(argv: list[str] | None = None) -> None:
    """Print the summary table, then a per-layer table for each model of each root."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("roots", nargs="*", type=Path, default=[Path(".")])
    parser.add_argument("--models", nargs="+", help="default: every model with metrics")
    args = parser.parse_args(argv)
    found = [w for root in args.roots for w in workspaces(root, args.models)]
    print(markdown_table([row(w) for w in found]))
    for workspace in found:
        print(f"### {workspace.model} ({workspace.root})\n")
        print(markdown_table(layer_rows(workspace)))


if __name__ == "__main__":
    main()
