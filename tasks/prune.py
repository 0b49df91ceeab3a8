"""Prefect task: one pruning iteration (prune to this iteration's targets, then retrain)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.distill import teacher_from
from deepcompression.compress.pruning import densities, full_masks, overall_density, prune_
from deepcompression.compress.unit_pruning import apply_unit_masks_, unit_masks
from deepcompression.config import DistillConfig, OptimConfig, PruneMethod, RunConfig
from deepcompression.data.tensors import ImageTensors
from deepcompression.training import (
    EpochRecord,
    evaluate,
    fit,
    resolve_device,
    seed_everything,
)
from runtime.log import epoch_reporter, run_logger
from runtime.resilient import task
from tasks.diverged import name_the_fix


@dataclass(frozen=True)
class IterationResult:
    """What one prune -> retrain iteration reached."""

    iteration: int
    targets: dict[str, float]
    densities: dict[str, float]
    density: float
    error_after_prune: float
    val_error: float
    history: list[EpochRecord]

    def to_dict(self) -> dict:
        """Plain JSON-able dict (resume state and reports)."""
        return {**asdict(self), "history": [r.to_dict() for r in self.history]}

    @classmethod
    def from_dict(cls, data: dict) -> IterationResult:
        """Inverse of `to_dict`."""
        history = [EpochRecord(**r) for r in data["history"]]
        return cls(**{**data, "history": history})


@task(name="prune-iteration", task_run_name="prune-iteration-{iteration}", cache_policy=NO_CACHE)
def prune_iteration(
    iteration: int,
    checkpoint: Checkpoint,
    targets: dict[str, float],
    method: PruneMethod,
    retrain: OptimConfig,
    run: RunConfig,
    data: ImageTensors,
    stds: dict[str, float] | None = None,
    units: dict[str, int] | None = None,
    consumers: dict[str, str | None] | None = None,
    teacher: Checkpoint | None = None,
    distill: DistillConfig | None = None,
) -> tuple[Checkpoint, IterationResult]:
    """Prune from the checkpoint's masks to `targets` (density or quality), then retrain.

    `stds` (dense weights' std per layer) fixes the threshold rule's scale across iterations.
    `units` (units kept per layer, with the network's `consumers`) first drops the weakest output
    units by weight norm: their rows, their consumer's inputs and their biases (zeroed again after
    retraining); from the first iteration on, as removed units never come back. With a
    `teacher` (the dense checkpoint) and `distill`, retraining distills from it.
    """
    logger = run_logger()
    device = resolve_device(run.device)
    generator = seed_everything(run.seed + iteration)
    model = checkpoint.build(device)
    masks = {k: v.to(device) for k, v in checkpoint.masks.items()} or full_masks(model)
    kept_units = None
    if units:
        kept_units = unit_masks(model, units, consumers or {}, masks)
        apply_unit_masks_(model, kept_units)
        masks = kept_units.weights
    masks = prune_(model, masks, targets, method, stds)
    tensors = data.as_tuple(device)
    pruned = evaluate(model, tensors[2], tensors[3], run.eval_batch_size)
    logger.info(
        "iteration %d: density %.2f%%, validation error %.2f%% before retraining",
        iteration,
        100 * overall_density(masks),
        100 * pruned.error,
    )
    name = checkpoint.arch["name"]
    with name_the_fix(f"retraining {name} in iteration {iteration}",
                      f"models.{name}.prune.retrain.lr", run):  # fmt: skip
        history = fit(
            model,
            tensors,
            retrain,
            generator,
            masks=masks,
            on_epoch=epoch_reporter(f"retrain {iteration}", retrain.epochs),
            eval_batch_size=run.eval_batch_size,
            teacher=teacher_from(teacher, distill, device),
        )
    if kept_units is not None:
        apply_unit_masks_(model, kept_units)  # retraining moved the removed units' biases
    final = evaluate(model, tensors[2], tensors[3], run.eval_batch_size)
    result = IterationResult(
        iteration=iteration,
        targets=dict(targets),
        densities=densities(masks),
        density=overall_density(masks),
        error_after_prune=pruned.error,
        val_error=final.error,
        history=history,
    )
    return Checkpoint.of(model, checkpoint.arch, masks=masks), result
