"""The whole pipeline as one Prefect flow, for runs started from Prefect (UI, deployments).

Each DVC stage's flow runs as a subflow, in dvc.yaml's order, over the same files: the shared
data stage once, then every model's stages; pruning iterations show as task runs inside each
`prune` subflow. `dvc repro` runs the same flows one by one.
"""

from __future__ import annotations

from flows.confirm import confirm_flow
from flows.data import data_flow
from flows.encode import encode_flow
from flows.evaluate import evaluate_flow
from flows.params import load_params, read_params
from flows.plots import plots_flow
from flows.prune import prune_flow
from flows.quantize import quantize_flow
from flows.search import search_flow
from flows.sensitivity import sensitivity_flow
from flows.train import train_flow
from runtime.resilient import flow


def model_pipeline(params_path: str, root: str, model: str) -> dict:
    """train -> [sensitivity -> search -> confirm] -> prune -> quantize -> encode -> evaluate ->
    plots for one model (the bracket with `allocation: searched` only); its headlines."""
    train = train_flow(params_path, root, model)
    if load_params(params_path, model)[0].allocation == "searched":
        sensitivity_flow(params_path, root, model)
        search_flow(params_path, root, model)
        confirm_flow(params_path, root, model)
    prune = prune_flow(params_path, root, model)
    quantize = quantize_flow(params_path, root, model)
    encode = encode_flow(params_path, root, model)
    evaluate = evaluate_flow(params_path, root, model)
    plots_flow(params_path, root, model)
    return {
        "dense_val_error": train["val_error"],
        "pruned_val_error": prune["val_error"],
        "density": prune["density"],
        "quantized_val_error": quantize["val_error"],
        "file_val_error": evaluate["val_error"],
        "file_test_error": evaluate["test_error"],
        "file_bytes": encode["file_bytes"],
        "file_ratio": encode["file_ratio"],
    }


@flow(name="deep-compression", flow_run_name="pipeline")
def pipeline_flow(
    params_path: str = "params.yaml", root: str = ".", models: list[str] | None = None
) -> dict[str, dict]:
    """data, then every model's stages (all of params.yaml's models by default); headlines."""
    names = models if models is not None else list(read_params(params_path).models)
    data_flow(params_path, root)
    return {name: model_pipeline(params_path, root, name) for name in names}
