"""DVC stage `train`: the dense reference network, its metrics and its training curve."""

from __future__ import annotations

from prefect import flow

from deepcompression.training import resolve_device
from flows.common import load_data, setup
from tasks.artifacts import publish_report
from tasks.io import save_checkpoint, write_csv, write_json
from tasks.train import train_dense


@flow(name="train")
def train_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    """Train `model.name` with `train.*`; writes checkpoints/dense.pt, metrics/train.json, plots."""
    params, _, workspace = setup(params_path, root)
    data = load_data(params, workspace)
    checkpoint, history = train_dense(params.model.name, params.train, params.run, data)
    seconds = sum(r.seconds for r in history)
    final = history[-1] if history else None
    metrics = {
        "model": params.model.name,
        "device": str(resolve_device(params.run.device)),
        "epochs": len(history),
        "test_error": final.test_error if final else None,
        "test_loss": final.test_loss if final else None,
        "train_seconds": round(seconds, 2),
        "seconds_per_epoch": round(seconds / max(len(history), 1), 3),
        "train_samples": len(data.train_y),
        "test_samples": len(data.test_y),
    }
    save_checkpoint(workspace.checkpoint("dense"), checkpoint)
    write_json(workspace.metrics("train"), metrics)
    write_csv(workspace.plot("train.csv"), [r.to_dict() for r in history])
    publish_report(
        "train", f"Training {params.model.name}", [r.to_dict() for r in history], metrics
    )
    return metrics
