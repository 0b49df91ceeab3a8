"""DVC stage `plots`: PNG figures of the stages, for `dvc plots show` (offline) and Prefect."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.context import FlowRunContext

from deepcompression.config import RunParams
from deepcompression.plan import LayerPlan
from flows.common import setup
from flows.skipped import skipped_png
from runtime.artifacts import artifact_key
from runtime.log import run_logger
from runtime.resilient import flow
from runtime.workspace import Workspace
from tasks.final_plots import plot_final_pareto
from tasks.io import load_checkpoint, write_bytes_atomic
from tasks.plots import (
    plot_error_vs_density,
    plot_training_curves,
    plot_weight_distributions,
    publish_plots_report,
    remove_stale_pngs,
)

WEIGHTS_DIR = "weights"
STAGES = ("dense", "pruned", "quantized")
FINAL_PARETO = "pareto_final.png"


def _call(task_obj: Task[..., Path], *args: Any) -> Path:
    """Run as a Prefect task inside a flow run (shown in the UI), as a plain call outside one."""
    if FlowRunContext.get() is not None:
        return task_obj(*args)
    return task_obj.fn(*args)


def weights_plot_name(layer: str) -> str:
    """`weights/<layer>.png`: one folder, so dvc.yaml need not list the layers of each model."""
    return f"{WEIGHTS_DIR}/{layer}.png"


def write_plots(
    params: RunParams, plan: dict[str, LayerPlan], workspace: Workspace
) -> dict[str, Path]:
    """Write curves, error-vs-density, one weight plot per layer and, after a search, the final
    Pareto figure; returns {name: path} with names relative to the model's plots folder."""
    checkpoints = {stage: load_checkpoint(workspace.checkpoint(stage)) for stage in STAGES}
    for checkpoint in checkpoints.values():
        checkpoint.expect_model(params.model.name)
    train_csv, prune_csv = workspace.plot("train.csv"), workspace.plot("prune.csv")
    written = {
        "curves.png": _call(plot_training_curves, train_csv, workspace.plot("curves.png")),
        "error_vs_density.png": _call(
            plot_error_vs_density, prune_csv, train_csv, workspace.plot("error_vs_density.png")
        ),
    }
    for layer in plan:
        name = weights_plot_name(layer)
        written[name] = _call(
            plot_weight_distributions,
            layer,
            checkpoints["dense"],
            checkpoints["pruned"],
            checkpoints["quantized"],
            workspace.plot(name),
        )
    remove_stale_pngs(workspace.plot(WEIGHTS_DIR), set(written.values()))
    final = write_final_pareto(workspace)
    if final is not None:
        written[FINAL_PARETO] = final
    return written


def write_final_pareto(workspace: Workspace) -> Path | None:
    """The search's front with the final file at its test and validation errors, when both search
    (search_front.json) and evaluate (evaluate.json) have run; else None, noted in the log."""
    front, evaluation = workspace.metrics("search_front"), workspace.metrics("evaluate")
    missing = [path for path in (front, evaluation) if not path.is_file()]
    if missing:
        run_logger().info(
            "%s not written: %s not found (run the search and evaluate stages first)",
            FINAL_PARETO, ", ".join(str(path) for path in missing),
        )  # fmt: skip
        return None
    out = workspace.plot(FINAL_PARETO)
    if (reason := json.loads(front.read_text()).get("skipped")) is not None:
        write_bytes_atomic(out, skipped_png(reason))  # allocation: params, no search front
        return out
    return _call(plot_final_pareto, workspace.model, front, evaluation, out)


@flow(name="plots", flow_run_name="plots-{model}")
def plots_flow(params_path: str, root: str, model: str) -> dict:
    """Render plots/<model>/*.png from the stages' CSVs and checkpoints; attach them as a report."""
    params, plan, workspace = setup(params_path, root, model)
    written = write_plots(params, plan, workspace)
    run_logger().info("wrote %d figures under %s", len(written), workspace.plot(""))
    publish_plots_report(written, artifact_key(model, "plots"))
    return {"model": model, "plots": list(written)}
