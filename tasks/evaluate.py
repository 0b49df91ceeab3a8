"""Prefect tasks: decode a compressed-model file and measure it; measure the stages' checkpoints."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.format.loader import load
from deepcompression.training import evaluate, predict_logits
from runtime.resilient import task


@dataclass(frozen=True)
class FileEvaluation:
    """The decoded file's error and loss on one split; whether its logits equal the quantized
    model's."""

    error: float
    loss: float
    decode_seconds: float
    logits_equal_quantized: bool | None


@task(name="evaluate-checkpoints", cache_policy=NO_CACHE)
def evaluate_checkpoints(
    checkpoints: dict[str, Checkpoint],
    splits: dict[str, tuple[torch.Tensor, torch.Tensor]],
    device: torch.device,
    batch_size: int,
) -> dict[str, dict[str, float]]:
    """Error of each stage's checkpoint on each split: {stage: {split: error}}."""
    results: dict[str, dict[str, float]] = {}
    for stage, checkpoint in checkpoints.items():
        model = checkpoint.build(device)
        results[stage] = {
            split: evaluate(model, x.to(device), y.to(device), batch_size).error
            for split, (x, y) in splits.items()
        }
    return results


@task(name="evaluate-file", cache_policy=NO_CACHE)
def evaluate_file(
    data: bytes,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    batch_size: int,
    reference: Checkpoint | None = None,
) -> FileEvaluation:
    """Error of the decoded file on (images, labels); with `reference`, check logits bit for bit."""
    start = time.perf_counter()
    model = load(data, device)
    seconds = time.perf_counter() - start
    x, y = images.to(device), labels.to(device)
    result = evaluate(model, x, y, batch_size)
    equal = None
    if reference is not None:
        expected = predict_logits(reference.build(device), x, batch_size)
        equal = torch.equal(predict_logits(model, x, batch_size), expected)
    return FileEvaluation(result.error, result.loss, seconds, equal)
