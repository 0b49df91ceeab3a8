"""Prefect task: decode a compressed-model file into a network and measure it on the test set."""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.container import decode_model
from deepcompression.training import evaluate, predict_logits
from models import build_model


@dataclass(frozen=True)
class FileEvaluation:
    """The decoded file's test figures; whether its logits equal the quantized model's."""

    test_error: float
    test_loss: float
    decode_seconds: float
    logits_equal_quantized: bool | None


def load_compressed(data: bytes, device: torch.device) -> tuple[torch.nn.Module, float]:
    """Decode file bytes and build the network its header names; returns (model, seconds)."""
    start = time.perf_counter()
    decoded = decode_model(data)
    model = build_model(decoded.arch["name"], **decoded.arch.get("kwargs", {}))
    model.load_state_dict(decoded.state_dict, strict=True)
    return model.to(device), time.perf_counter() - start


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
    model, seconds = load_compressed(data, device)
    x, y = test_x.to(device), test_y.to(device)
    result = evaluate(model, x, y, batch_size)
    equal = None
    if reference is not None:
        expected = predict_logits(reference.build(device), x, batch_size)
        equal = torch.equal(predict_logits(model, x, batch_size), expected)
    return FileEvaluation(result.error, result.loss, seconds, equal)
