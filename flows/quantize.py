"""DVC stage `quantize`: k-means weight sharing per layer and centroid fine-tuning."""

from __future__ import annotations

from prefect import flow

from deepcompression.pruning import densities
from deepcompression.report import percent
from deepcompression.sizes import pq_layer_report
from flows.common import load_data, setup
from tasks.artifacts import publish_report
from tasks.io import load_checkpoint, save_checkpoint, write_csv, write_json
from tasks.quantize import quantize


@flow(name="quantize")
def quantize_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    """Quantize checkpoints/pruned.pt with `quantize.*`; writes the checkpoint and metrics."""
    params, plan, workspace = setup(params_path, root)
    pruned = load_checkpoint(workspace.checkpoint("pruned"))
    pruned.expect_model(params.model.name)
    data = load_data(params, workspace)
    bits = {name: p.weight_bits for name, p in plan.items()}
    checkpoint, result = quantize(pruned, bits, params.quantize, params.run, data)
    kept = densities(checkpoint.masks)
    report = pq_layer_report(checkpoint, {name: p.index_bits for name, p in plan.items()})
    layers = [
        {
            "layer": name,
            "weights": p.numel,
            "kept": percent(kept[name]),
            "weight_bits": p.weight_bits,
            "index_bits": p.index_bits,
            "P+Q ratio": report.layers[name].pq_ratio,
        }
        for name, p in plan.items()
    ]
    metrics = {
        "model": params.model.name,
        "init": params.quantize.init,
        "engine": params.quantize.engine,
        "error_after_clustering": result.error_after_clustering,
        "test_error": result.test_error,
        "pq_ratio": report.pq_ratio,
        "layers": {
            name: {
                "density": kept[name],
                "weight_bits": p.weight_bits,
                "index_bits": p.index_bits,
                "pq_ratio": report.layers[name].pq_ratio,
            }
            for name, p in plan.items()
        },
    }
    save_checkpoint(workspace.checkpoint("quantized"), checkpoint)
    write_json(workspace.metrics("quantize"), metrics)
    write_csv(workspace.plot("quantize.csv"), [r.to_dict() for r in result.history])
    publish_report("quantize", f"Trained quantization of {params.model.name}", layers, metrics)
    return metrics
