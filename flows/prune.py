"""DVC stage `prune`: iterative pruning, one Prefect task run per prune -> retrain iteration."""

from __future__ import annotations

from prefect import flow

from deepcompression.config import Params
from deepcompression.plan import LayerPlan
from deepcompression.pruning import density_schedule, weight_stds
from deepcompression.report import percent
from flows.common import load_data, setup
from tasks.artifacts import publish_report
from tasks.io import load_checkpoint, save_checkpoint, write_csv, write_json
from tasks.prune import prune_iteration


def iteration_targets(params: Params, plan: dict[str, LayerPlan]) -> list[dict[str, float]]:
    """Per-iteration targets: scheduled densities (magnitude) or the quality (threshold)."""
    n = params.prune.iterations
    if params.prune.method == "threshold":
        return [{name: p.prune_target for name, p in plan.items()} for _ in range(n)]
    steps = {
        name: density_schedule(p.prune_target, n, params.prune.schedule) for name, p in plan.items()
    }
    return [{name: steps[name][i] for name in plan} for i in range(n)]


@flow(name="prune")
def prune_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    """Prune checkpoints/dense.pt in `prune.iterations` steps; writes checkpoint and metrics."""
    params, plan, workspace = setup(params_path, root)
    checkpoint = load_checkpoint(workspace.checkpoint("dense"))
    checkpoint.expect_model(params.model.name)
    data = load_data(params, workspace)
    stds = weight_stds(checkpoint.build()) if params.prune.method == "threshold" else None
    results = []
    for iteration, targets in enumerate(iteration_targets(params, plan), start=1):
        checkpoint, result = prune_iteration(
            iteration,
            checkpoint,
            targets,
            params.prune.method,
            params.prune.retrain,
            params.run,
            data,
            stds,
        )
        results.append(result)
    final = results[-1]
    layers = [
        {
            "layer": name,
            "weights": p.numel,
            "kept": percent(final.densities[name]),
            "target": p.prune_target,
        }
        for name, p in plan.items()
    ]
    metrics = {
        "model": params.model.name,
        "method": params.prune.method,
        "iterations": len(results),
        "density": final.density,
        "test_error": final.test_error,
        "layers": {name: {"density": d} for name, d in final.densities.items()},
    }
    rows = [
        {
            "iteration": r.iteration,
            "density": r.density,
            "error_after_prune": r.error_after_prune,
            "test_error": r.test_error,
            **{f"density_{k}": v for k, v in r.densities.items()},
        }
        for r in results
    ]
    save_checkpoint(workspace.checkpoint("pruned"), checkpoint)
    write_json(workspace.metrics("prune"), metrics)
    write_csv(workspace.plot("prune.csv"), rows)
    publish_report("prune", f"Pruning {params.model.name}", layers, metrics)
    return metrics
