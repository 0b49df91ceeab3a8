"""DVC stage `train`: the dense reference network, its metrics and its training curve."""

from __future__ import annotations

from deepcompression.training import resolve_device
from flows.common import chance_warning, load_data, setup
from flows.provenance import numerics
from runtime.artifacts import artifact_key, publish_report
from runtime.log import run_logger
from runtime.resilient import flow
from tasks.io import save_checkpoint, write_csv, write_json
from tasks.train import train_dense


@flow(name="train", flow_run_name="train-{model}")
def train_flow(params_path: str, root: str, model: str) -> dict:
    """Train `model` with its `train` section; writes the dense checkpoint, metrics and curve."""
    params, _, workspace = setup(params_path, root, model)
    data = load_data(params, workspace)
    checkpoint, history = train_dense(model, params.train, params.run, data)
    seconds = sum(r.seconds for r in history)
    final = history[-1] if history else None
    metrics = {
        "model": model,
        "epochs": 0 if params.train.checkpoint else len(history),
        "val_error": final.val_error if final else None,
        "val_loss": final.val_loss if final else None,
        "train_samples": len(data.train_y),
        "val_samples": len(data.val_y),
    }
    save_checkpoint(workspace.checkpoint("dense"), checkpoint)
    write_json(workspace.metrics("train"), metrics | {"numerics": numerics(params)})
    curve = [{k: v for k, v in r.to_dict().items() if k != "seconds"} for r in history]
    write_csv(workspace.plot("train.csv"), curve)  # no wall times: same inputs, same bytes
    write_json(
        workspace.timing("train"),
        {
            "device": str(resolve_device(params.run.device)),
            "train_seconds": round(seconds, 2),
            "seconds_per_epoch": round(seconds / max(len(history), 1), 3),
            "epoch_seconds": [round(r.seconds, 3) for r in history],
        },
    )
    classes = data.shape.num_classes
    if final is not None and (warning := chance_warning(model, final.val_error, classes)):
        run_logger().warning("%s", warning)
    run_logger().info(
        "dense %s: validation error %.2f%% after %d epochs",
        model,
        100 * (metrics["val_error"] or 0.0),
        len(history),
    )
    publish_report(
        artifact_key(model, "train"),
        f"Training {model}: validation figures per epoch",
        [r.to_dict() for r in history],
        metrics,
    )
    return metrics
