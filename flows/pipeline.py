"""The whole pipeline as one Prefect flow, for runs started from Prefect (UI, deployments).

Each DVC stage's flow runs as a subflow, in dvc.yaml's order, over the same files; pruning
iterations show as task runs inside the `prune` subflow. `dvc repro` runs the same flows one by one.
"""

from __future__ import annotations

from prefect import flow

from flows.data import data_flow
from flows.encode import encode_flow
from flows.evaluate import evaluate_flow
from flows.plots import plots_flow
from flows.prune import prune_flow
from flows.quantize import quantize_flow
from flows.train import train_flow


@flow(name="deep-compression")
def pipeline_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    """data -> train -> prune -> quantize -> encode -> evaluate -> plots; returns the headlines."""
    data_flow(params_path, root)
    train = train_flow(params_path, root)
    prune = prune_flow(params_path, root)
    quantize = quantize_flow(params_path, root)
    encode = encode_flow(params_path, root)
    evaluate = evaluate_flow(params_path, root)
    plots_flow(params_path, root)
    return {
        "dense_test_error": train["test_error"],
        "pruned_test_error": prune["test_error"],
        "density": prune["density"],
        "quantized_test_error": quantize["test_error"],
        "file_test_error": evaluate["test_error"],
        "file_bytes": encode["file_bytes"],
        "file_ratio": encode["file_ratio"],
    }
