"""DVC stage `prune`: iterative pruning, one Prefect task run per prune -> retrain iteration.

Each completed iteration is saved under `runs/<model>/resume/prune/` with a key of its inputs,
so rerunning a killed stage resumes after the last completed iteration and ends with the same
bytes as an uninterrupted run (every iteration seeds its own RNG).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.pruning import weight_stds
from deepcompression.compress.schedule import iteration_targets, unit_targets, units_kept
from deepcompression.config import RunParams
from deepcompression.report import percent
from deepcompression.schema import to_dict
from flows.allocation import effective_params
from flows.common import load_data, setup, warn_on_error_jump
from flows.provenance import numerics
from runtime.artifacts import artifact_key, publish_report, publish_table
from runtime.log import run_logger
from runtime.resilient import flow
from tasks.io import load_checkpoint, save_checkpoint, write_bytes_atomic, write_csv, write_json
from tasks.prune import IterationResult, prune_iteration


def resume_key(params: RunParams, dense: bytes) -> str:
    """What the iterations depend on: the dense checkpoint, prune/run/data/distill params (not
    the code: resume state is dropped when the stage finishes, so it never outlives a code
    change)."""
    inputs = {k: to_dict(getattr(params, k)) for k in ("run", "data", "prune")}
    if params.distill is not None:
        inputs["distill"] = to_dict(params.distill)
    digest = hashlib.sha256(dense)
    digest.update(json.dumps(inputs, sort_keys=True).encode())
    return digest.hexdigest()


def load_progress(folder: Path, key: str) -> tuple[Checkpoint | None, list[IterationResult]]:
    """The last completed iteration saved for `key` and every result before it, else nothing."""
    state = folder / "state.json"
    if not state.is_file():
        return None, []
    saved = json.loads(state.read_text())
    if saved.get("key") != key:
        return None, []
    results = [IterationResult.from_dict(r) for r in saved["results"]]
    checkpoint = load_checkpoint(folder / f"iteration-{len(results)}.pt")
    return checkpoint, results


def save_progress(
    folder: Path, key: str, checkpoint: Checkpoint, results: list[IterationResult]
) -> None:
    """Persist a completed iteration: its checkpoint first, then the state that points at it."""
    save_checkpoint(folder / f"iteration-{len(results)}.pt", checkpoint)
    state = {"key": key, "results": [r.to_dict() for r in results]}
    write_bytes_atomic(folder / "state.json", json.dumps(state).encode())
    stale = folder / f"iteration-{len(results) - 1}.pt"
    stale.unlink(missing_ok=True)


def iteration_rows(results: list[IterationResult]) -> list[dict]:
    """One row per iteration: density and validation error before and after retraining."""
    return [
        {
            "iteration": r.iteration,
            "density": r.density,
            "error_after_prune": r.error_after_prune,
            "val_error": r.val_error,
            **{f"density_{k}": v for k, v in r.densities.items()},
        }
        for r in results
    ]


@flow(name="prune", flow_run_name="prune-{model}")
def prune_flow(params_path: str, root: str, model: str) -> dict:
    """Prune the dense checkpoint in `prune.iterations` steps; writes checkpoint and metrics."""
    params, plan, workspace = setup(params_path, root, model)
    params, plan = effective_params(params, plan, root)
    dense_path = workspace.checkpoint("dense")
    checkpoint = load_checkpoint(dense_path)
    checkpoint.expect_model(model)
    teacher = checkpoint if params.distill is not None else None
    data = load_data(params, workspace)
    stds = weight_stds(checkpoint.build()) if params.prune.method == "threshold" else None
    units, consumers = unit_targets(checkpoint, plan)
    folder, key = workspace.resume("prune"), resume_key(params, dense_path.read_bytes())
    resumed, results = load_progress(folder, key)
    if resumed is not None:
        checkpoint = resumed
        run_logger().info("resuming after completed iteration %d", len(results))
    for iteration, targets in enumerate(iteration_targets(params.prune, plan), start=1):
        if iteration <= len(results):
            continue
        checkpoint, result = prune_iteration(
            iteration, checkpoint, targets, params.prune.method, params.prune.retrain,
            params.run, data, stds, units, consumers, teacher, params.distill,
        )  # fmt: skip
        results.append(result)
        save_progress(folder, key, checkpoint, results)
    final = results[-1]
    kept = units_kept(checkpoint)
    layers = [
        {
            "layer": name,
            "weights": p.numel,
            "kept": percent(final.densities[name]),
            "target": p.prune_target,
            "units kept": f"{kept[name][0]}/{kept[name][1]}",
        }
        for name, p in plan.items()
    ]
    metrics = {
        "model": model,
        "method": params.prune.method,
        "iterations": len(results),
        "density": final.density,
        "val_error": final.val_error,
        "layers": {
            name: {
                "density": d,
                "units_kept": kept[name][0],
                "units": kept[name][1],
                "units_target": units.get(name, kept[name][1]),
            }
            for name, d in final.densities.items()
        },
    }
    rows = iteration_rows(results)
    save_checkpoint(workspace.checkpoint("pruned"), checkpoint)
    write_json(workspace.metrics("prune"), metrics | {"numerics": numerics(params)})
    write_csv(workspace.plot("prune.csv"), rows)
    shutil.rmtree(folder, ignore_errors=True)
    warn_on_error_jump("prune", workspace, final.val_error)
    run_logger().info(
        "pruned %s to %.2f%% density: validation error %.2f%%",
        model,
        100 * final.density,
        100 * final.val_error,
    )
    publish_report(artifact_key(model, "prune"), f"Pruning {model}", layers, metrics)
    publish_table(
        artifact_key(model, "prune-iterations"),
        [
            {
                "iteration": r["iteration"],
                "density": f"{100 * r['density']:.2f}%",
                "val error after prune": f"{100 * r['error_after_prune']:.2f}%",
                "val error after retrain": f"{100 * r['val_error']:.2f}%",
            }
            for r in rows
        ],
        f"prune {model}: density and validation error per iteration",
    )
    return metrics
