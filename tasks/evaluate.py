"""Prefect task: decode a compressed-model file into a network and measure it on the test set."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.loader import load_model
from deepcompression.training import evaluate, predict_logits


@dataclass(frozen=True)
class FileEvaluation:
    """The decoded file's test figures; whether its logits equal the quantized model's."""

    test_error: float
    test_loss: float
    decode_seconds: float
    logits_equal_quantized: bool | None


@task(name="evaluate-file", cache_policy=NO_CACHE)
def evaluate_file(
    data: bytes,
    test_x: torch.Tensor,
    test_y: torch.Tensor,
    device: torch.device,
    batch_size: int,
    reference: Checkpoint | None = None,
) -> FileEvaluation:
    """Test error of the decoded file; with `reference`, also check its logits are bitwise equal."""
    start = time.perf_counter()
    model, _ = load_model(data, device)
    seconds = time.perf_counter() - start
    x, y = test_x.to(device), test_y.to(device)
    result = evaluate(model, x, y, batch_size)
    equal = None
    if reference is not None:
        expected = predict_logits(reference.build(device), x, batch_size)
        equal = torch.equal(predict_logits(model, x, batch_size), expected)
    return FileEvaluation(result.error, result.loss, seconds, equal)
