"""Prefect task: train the dense reference network."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.config import RunConfig, TrainConfig
from deepcompression.data import MnistTensors
from deepcompression.training import EpochRecord, fit, resolve_device, seed_everything
from models import build_model
from tasks.log import epoch_reporter, run_logger


@task(name="train-dense", task_run_name="train-{model_name}", cache_policy=NO_CACHE)
def train_dense(
    model_name: str, cfg: TrainConfig, run: RunConfig, data: MnistTensors
) -> tuple[Checkpoint, list[EpochRecord]]:
    """Train `model_name` from a seeded init; returns its checkpoint and per-epoch history."""
    logger = run_logger()
    device = resolve_device(run.device)
    generator = seed_everything(run.seed)
    model = build_model(model_name).to(device)
    tensors = data.as_tuple(device)
    logger.info("training %s on %s for %d epochs", model_name, device, cfg.epochs)
    history = fit(
        model,
        tensors,
        cfg,
        generator,
        on_epoch=epoch_reporter("train", cfg.epochs),
        eval_batch_size=run.eval_batch_size,
    )
    return Checkpoint.of(model, {"name": model_name, "kwargs": {}}), history
