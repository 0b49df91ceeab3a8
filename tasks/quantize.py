"""Prefect task: k-means weight sharing per layer, then fine-tuning of the shared centroids."""

from __future__ import annotations

from dataclasses import dataclass

from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.distill import teacher_from
from deepcompression.compress.finish import finish_quantized_
from deepcompression.compress.quantization import cluster_model, share_weights_
from deepcompression.config import DistillConfig, QuantizeConfig, RunConfig
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
class QuantizeResult:
    """Validation error before and after centroid fine-tuning, with its history."""

    error_after_clustering: float
    val_error: float
    history: list[EpochRecord]
    folded_units: dict[str, int]
    """Units with every input weight pruned folded into their consumer's bias, per layer."""


@task(name="quantize", cache_policy=NO_CACHE)
def quantize(
    checkpoint: Checkpoint,
    bits: dict[str, int],
    cfg: QuantizeConfig,
    run: RunConfig,
    data: ImageTensors,
    teacher: Checkpoint | None = None,
    distill: DistillConfig | None = None,
) -> tuple[Checkpoint, QuantizeResult]:
    """Cluster each layer's surviving weights into 2^bits values and fine-tune the centroids
    (distilling from `teacher` with `distill`, when given), then finish the model as the file
    holds it (`finish_quantized_`: constant units folded, biases rounded to `cfg.bias`); the
    validation error is the finished model's, the file's."""
    logger = run_logger()
    if not checkpoint.masks:
        raise ValueError("the checkpoint has no pruning masks: quantize a pruned checkpoint")
    device = resolve_device(run.device)
    generator = seed_everything(run.seed)
    model = checkpoint.build(device)
    masks = {k: v.to(device) for k, v in checkpoint.masks.items()}
    codebooks = cluster_model(model, masks, bits, init=cfg.init, seed=run.seed, engine=cfg.engine)
    share_weights_(model, codebooks)
    tensors = data.as_tuple(device)
    clustered = evaluate(model, tensors[2], tensors[3], run.eval_batch_size)
    logger.info(
        "after k-means (%s init, %s engine): validation error %.2f%%",
        cfg.init,
        cfg.engine,
        100 * clustered.error,
    )
    name = checkpoint.arch["name"]
    with name_the_fix(f"fine-tuning {name}'s centroids", f"models.{name}.quantize.finetune.lr",
                      run):  # fmt: skip
        history = fit(
            model,
            tensors,
            cfg.finetune,
            generator,
            on_epoch=epoch_reporter("fine-tune", cfg.finetune.epochs),
            eval_batch_size=run.eval_batch_size,
            teacher=teacher_from(teacher, distill, device),
        )
    finished = finish_quantized_(
        model, masks, bits, cfg.bias, tensors[2],
        codebook=cfg.codebook, init=cfg.init, seed=run.seed, engine=cfg.engine,
    )  # fmt: skip
    final_books, masks = finished.books, finished.masks
    final = evaluate(model, tensors[2], tensors[3], run.eval_batch_size)
    result = QuantizeResult(clustered.error, final.error, history, finished.folded)
    quantized = Checkpoint.of(
        model,
        checkpoint.arch,
        masks={k: v.cpu() for k, v in masks.items()},
        centroids={k: b.centroids.detach().cpu() for k, b in final_books.items()},
        labels={k: b.labels.cpu() for k, b in final_books.items()},
        bits={k: bits[k.rsplit(".", 1)[0]] for k in final_books},
    )
    return quantized, result
