"""Prefect task: one point of a per-layer sensitivity curve (layer and value in the run's name)."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.config import QuantizeConfig, RunConfig, SensitivityConfig
from deepcompression.data.tensors import ImageTensors
from deepcompression.search.sensitivity import (
    Axis,
    SensitivityPoint,
    prune_layer_alone,
    share_layer_alone,
)
from deepcompression.training import evaluate, resolve_device
from runtime.log import run_logger
from runtime.resilient import task


@task(
    name="sensitivity-point",
    task_run_name="sensitivity-{layer}-{axis}-{value}",
    cache_policy=NO_CACHE,
)
def sensitivity_point(
    layer: str,
    axis: Axis,
    value: float,
    dense: Checkpoint,
    cfg: SensitivityConfig,
    quantize: QuantizeConfig,
    run: RunConfig,
    data: ImageTensors,
) -> SensitivityPoint:
    """Validation error with `layer` alone pruned to density `value` or shared at `value` bits."""
    device = resolve_device(run.device)
    splits = data.as_tuple(device)
    if axis == "density":
        error = prune_layer_alone(
            dense, layer, value, cfg.retrain, splits, run.seed, device, run.eval_batch_size
        )
    else:
        error = share_layer_alone(
            dense, layer, int(value), quantize.init, quantize.engine, splits, run.seed, device,
            run.eval_batch_size,
        )  # fmt: skip
    run_logger().info("%s at %s %g: validation error %.2f%%", layer, axis, value, 100 * error)
    return SensitivityPoint(layer=layer, axis=axis, value=value, val_error=error)


@task(name="dense-error", task_run_name="dense-error", cache_policy=NO_CACHE)
def dense_error(dense: Checkpoint, run: RunConfig, data: ImageTensors) -> float:
    """Validation error of the dense model: the reference every curve is read against."""
    device = resolve_device(run.device)
    model = dense.build(device)
    _, _, val_x, val_y = data.as_tuple(device)
    return evaluate(model, val_x, val_y, run.eval_batch_size).error
