"""DVC stage `quantize`: k-means weight sharing per layer and centroid fine-tuning."""

from __future__ import annotations

from deepcompression.compress.pruning import densities
from deepcompression.format.sizes import pq_layer_report
from deepcompression.report import percent
from flows.allocation import effective_params
from flows.common import load_data, setup, warn_on_error_jump
from flows.provenance import numerics
from runtime.artifacts import artifact_key, publish_report
from runtime.log import run_logger
from runtime.resilient import flow
from tasks.io import load_checkpoint, save_checkpoint, write_csv, write_json
from tasks.quantize import quantize


@flow(name="quantize", flow_run_name="quantize-{model}")
def quantize_flow(params_path: str, root: str, model: str) -> dict:
    """Quantize the pruned checkpoint with its `quantize` section; writes checkpoint and metrics.

    With `distill` set, the dense checkpoint teaches the centroid fine-tuning."""
    params, plan, workspace = setup(params_path, root, model)
    params, plan = effective_params(params, plan, root)
    pruned = load_checkpoint(workspace.checkpoint("pruned"))
    pruned.expect_model(model)
    data = load_data(params, workspace)
    bits = {name: p.weight_bits for name, p in plan.items()}
    teacher = None
    if params.distill is not None:
        teacher = load_checkpoint(workspace.checkpoint("dense"))
        teacher.expect_model(model)
    checkpoint, result = quantize(
        pruned, bits, params.quantize, params.run, data, teacher, params.distill
    )
    kept = densities(checkpoint.masks)
    report = pq_layer_report(checkpoint, {name: p.index_bits for name, p in plan.items()})
    layers = [
        {
            "layer": name,
            "weights": p.numel,
            "kept": percent(kept[name]),
            "weight_bits": p.weight_bits,
            "index_bits": report.layers[name].index_bits,
            "P+Q ratio": report.layers[name].pq_ratio,
        }
        for name, p in plan.items()
    ]
    metrics = {
        "model": params.model.name,
        "init": params.quantize.init,
        "engine": params.quantize.engine,
        "bias": params.quantize.bias,
        "codebook": params.quantize.codebook,
        "folded_units": result.folded_units,
        "error_after_clustering": result.error_after_clustering,
        "val_error": result.val_error,
        "pq_ratio": report.pq_ratio,
        "layers": {
            name: {
                "density": kept[name],
                "weight_bits": p.weight_bits,
                "index_bits": report.layers[name].index_bits,
                "pq_ratio": report.layers[name].pq_ratio,
            }
            for name, p in plan.items()
        },
    }
    save_checkpoint(workspace.checkpoint("quantized"), checkpoint)
    write_json(workspace.metrics("quantize"), metrics | {"numerics": numerics(params)})
    curve = [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in result.history]
    write_csv(workspace.plot("quantize.csv"), curve)  # wall times go to the timing file
    write_json(
        workspace.timing("quantize"),
        {"epoch_seconds": [round(r.seconds, 3) for r in result.history]},
    )
    warn_on_error_jump("quantize", workspace, result.val_error)
    run_logger().info(
        "quantized %s: validation error %.2f%% (%.2f%% before fine-tuning), P+Q ratio %.1fx",
        model,
        100 * result.val_error,
        100 * result.error_after_clustering,
        report.pq_ratio,
    )
    publish_report(
        artifact_key(model, "quantize"), f"Trained quantization of {model}", layers, metrics
    )
    return metrics
