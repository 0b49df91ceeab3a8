"""DVC stage `sensitivity`: per-layer validation error against density and against weight bits
(the paper's Figures 5-7), one Prefect task run per point, from the dense checkpoint."""

from __future__ import annotations

from prefect import tags

from deepcompression.plots.search import sensitivity_figure
from deepcompression.search.sensitivity import SensitivityPoint
from flows.common import load_data, setup
from flows.params import model_section
from flows.provenance import numerics
from flows.skipped import skip_reason, skipped_png, skipped_record
from runtime.artifacts import artifact_key
from runtime.log import run_logger
from runtime.resilient import flow
from runtime.workspace import Workspace
from tasks.io import load_checkpoint, write_bytes_atomic, write_json
from tasks.plots import publish_plots_report
from tasks.sensitivity import dense_error, sensitivity_point


def sensitivity_metrics(model: str, dense: float, points: list[SensitivityPoint]) -> dict:
    """The stage's metrics: the dense error and every point, also as per-layer curves."""
    layers: dict[str, dict[str, dict[str, float]]] = {}
    for p in points:
        curve = layers.setdefault(p.layer, {"density": {}, "bits": {}})[p.axis]
        curve[f"{p.value:g}"] = p.val_error
    return {
        "model": model,
        "dense_val_error": dense,
        "points": [p.to_dict() for p in points],
        "layers": layers,
    }


def write_skipped(workspace: Workspace, reason: str) -> dict:
    """The stage's outputs when it does no work: a record saying why and a figure saying so."""
    metrics = skipped_record(workspace.model, reason)
    write_json(workspace.metrics("sensitivity"), metrics)
    write_bytes_atomic(workspace.plot("sensitivity.png"), skipped_png(reason))
    run_logger().info("%s", reason)
    return metrics


@flow(name="sensitivity", flow_run_name="sensitivity-{model}")
def sensitivity_flow(params_path: str, root: str, model: str) -> dict:
    """Each layer alone pruned to every density, and shared at every bit width; writes
    metrics/<model>/sensitivity.json and plots/<model>/sensitivity.png."""
    params, plan, workspace = setup(params_path, root, model)
    if (reason := skip_reason(params, "sensitivity")) is not None:
        return write_skipped(workspace, reason)
    cfg = model_section(params_path, model, "sensitivity").sensitivity
    dense = load_checkpoint(workspace.checkpoint("dense"))
    dense.expect_model(model)
    data = load_data(params, workspace)
    reference = dense_error(dense, params.run, data)
    points = []
    for layer in plan:
        axes = [("density", float(v)) for v in cfg.densities] + [("bits", b) for b in cfg.bits]
        for axis, value in axes:
            with tags(f"layer:{layer}", f"{axis}:{value:g}"):
                points.append(
                    sensitivity_point(
                        layer, axis, value, dense, cfg, params.quantize, params.run, data
                    )
                )
    metrics = sensitivity_metrics(model, reference, points)
    figure = workspace.plot("sensitivity.png")
    write_json(workspace.metrics("sensitivity"), metrics | {"numerics": numerics(params)})
    write_bytes_atomic(figure, sensitivity_figure(points, reference, f"Sensitivity of {model}"))
    run_logger().info("%s: %d sensitivity points written", model, len(points))
    publish_plots_report({"sensitivity": figure}, key=artifact_key(model, "sensitivity"))
    return metrics
