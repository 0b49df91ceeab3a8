"""DVC stage `sensitivity`: per-layer validation error against density and against weight bits
(the paper's Figures 5-7), one Prefect task run per point, from the dense checkpoint."""

from __future__ import annotations

import dataclasses

from prefect import tags

from deepcompression.config import SensitivityConfig
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


LARGE_NETWORK_LAYERS = 16
"""Over this many Linear/Conv2d layers, sensitivity is measured once per group of layers of one
kind and weight shape (the group's first layer stands for it) on every other value of each axis:
MobileNetV2's 53 layers make 28 groups x 6 points, 168 points instead of 53 x 12 = 636 (3.8x
fewer); ResNet-18's 21 make 12 groups. Each layer is still searched on its own: sensitivity only
seeds the search."""


def layer_groups(layers: dict[str, tuple[str, tuple[int, ...]]]) -> dict[str, list[str]]:
    """{measured layer: the layers it stands for}: each layer alone for a network of at most
    LARGE_NETWORK_LAYERS layers, else one per (kind, weight shape), in model order."""
    if len(layers) <= LARGE_NETWORK_LAYERS:
        return {layer: [layer] for layer in layers}
    first: dict[tuple[str, tuple[int, ...]], str] = {}
    groups: dict[str, list[str]] = {}
    for layer, key in layers.items():
        groups.setdefault(first.setdefault(key, layer), []).append(layer)
    return groups


def axis_values(cfg: SensitivityConfig, large: bool) -> list[tuple[str, float]]:
    """The (axis, value) points of a layer: every density then every bit width; every other one
    of each (first included) for a large network."""
    step = 2 if large else 1
    densities = [("density", float(v)) for v in cfg.densities[::step]]
    return densities + [("bits", b) for b in cfg.bits[::step]]


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
    shapes = {layer: tuple(dense.state_dict[f"{layer}.weight"].shape) for layer in plan}
    groups = layer_groups({layer: (p.kind, shapes[layer]) for layer, p in plan.items()})
    measured = []
    for layer in groups:
        for axis, value in axis_values(cfg, large=len(groups) != len(plan)):
            with tags(f"layer:{layer}", f"{axis}:{value:g}"):
                measured.append(
                    sensitivity_point(
                        layer, axis, value, dense, cfg, params.quantize, params.run, data
                    )
                )
    points = [dataclasses.replace(p, layer=member) for p in measured for member in groups[p.layer]]
    metrics = sensitivity_metrics(model, reference, points)
    if len(groups) != len(plan):
        metrics["measured_as"] = {m: rep for rep, members in groups.items() for m in members}
    figure = workspace.plot("sensitivity.png")
    write_json(workspace.metrics("sensitivity"), metrics | {"numerics": numerics(params)})
    write_bytes_atomic(figure, sensitivity_figure(points, reference, f"Sensitivity of {model}"))
    run_logger().info("%s: %d sensitivity points written", model, len(points))
    publish_plots_report({"sensitivity": figure}, key=artifact_key(model, "sensitivity"))
    return metrics
