"""Prefect task: train the dense reference network, or take your own trained weights instead."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Any

import torch
from prefect.cache_policies import NO_CACHE
from torch import nn

from deepcompression.checkpoint import Checkpoint
from deepcompression.config import RunConfig, TrainConfig
from deepcompression.data.mnist import MNIST_SHAPE
from deepcompression.data.tensors import DataShape, ImageTensors
from deepcompression.pretrained import PretrainedError, load_pretrained_, state_dict_from_bytes
from deepcompression.training import (
    EpochRecord,
    evaluate,
    fit,
    resolve_device,
    seed_everything,
)
from models import build_model, model_arch
from runtime.log import epoch_reporter, run_logger
from runtime.resilient import task
from tasks.diverged import name_the_fix


def dense_arch(model: nn.Module, shape: DataShape) -> dict[str, Any]:
    """The arch a checkpoint records: `model_arch`, or ``{"name", "kwargs": {}}`` for MNIST-shaped
    data (1x28x28, 10 classes: every model's defaults), so MNIST files keep their bytes."""
    arch = model_arch(model)
    return {"name": arch["name"], "kwargs": {}} if shape == MNIST_SHAPE else arch


def import_weights(
    model: nn.Module,
    path: Path,
    tensors: tuple[torch.Tensor, ...],
    batch_size: int,
) -> EpochRecord:
    """Load the state_dict file at `path` into `model`; returns its figures as epoch 0 (train
    loss measured on the training split, validation loss and error)."""
    start = time.perf_counter()
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise PretrainedError(
            f"models.<name>.train.checkpoint: {path} cannot be read ({exc.strerror or exc})"
        ) from None
    load_pretrained_(model, state_dict_from_bytes(data, str(path)), str(path))
    train_x, train_y, val_x, val_y = tensors
    train = evaluate(model, train_x, train_y, batch_size)
    val = evaluate(model, val_x, val_y, batch_size)
    run_logger().info(
        "took the weights of %s (sha256 %s) instead of training: validation error %.2f%%",
        path,
        hashlib.sha256(data).hexdigest(),
        100 * val.error,
    )
    return EpochRecord(0, 0.0, train.loss, val.loss, val.error, time.perf_counter() - start)


@task(name="train-dense", task_run_name="train-{model_name}", cache_policy=NO_CACHE)
def train_dense(
    model_name: str, cfg: TrainConfig, run: RunConfig, data: ImageTensors
) -> tuple[Checkpoint, list[EpochRecord]]:
    """Train `model_name`, built for the data's shape, from a seeded init; returns its checkpoint
    and per-epoch history. With `cfg.checkpoint` set, its weights are taken instead of training
    and the history is one record, epoch 0: the imported weights measured."""
    logger = run_logger()
    device = resolve_device(run.device)
    generator = seed_everything(run.seed)
    shape = data.shape
    model = build_model(model_name, **shape.model_kwargs()).to(device)
    arch = dense_arch(model, shape)
    tensors = data.as_tuple(device)
    if cfg.checkpoint is not None:
        record = import_weights(model, Path(cfg.checkpoint), tensors, run.eval_batch_size)
        return Checkpoint.of(model, arch), [record]
    logger.info("training %s on %s for %d epochs", model_name, device, cfg.epochs)
    with name_the_fix(f"training {model_name}", f"models.{model_name}.train.lr", run):
        history = fit(
            model,
            tensors,
            cfg,
            generator,
            on_epoch=epoch_reporter("train", cfg.epochs),
            eval_batch_size=run.eval_batch_size,
        )
    return Checkpoint.of(model, arch), history


