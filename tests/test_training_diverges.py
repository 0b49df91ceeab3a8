"""A dense training whose loss turns NaN stops at that epoch with an error naming the fix, rather
than handing a noise model to every later stage (LeNet-5 at lr 0.05 diverged with run.seed 1)."""

from __future__ import annotations

import math

import pytest
import torch

from deepcompression.config import RunConfig, TrainConfig
from deepcompression.data.tensors import ImageTensors
from deepcompression.training import EpochRecord
from tasks.train import TrainingDiverged, stop_if_diverged, train_dense

RUN = RunConfig(seed=3, device="cpu", eval_batch_size=100)


def _record(epoch: int, loss: float) -> EpochRecord:
    return EpochRecord(epoch, 0.1, loss, loss, 0.5, 0.0)


def test_finite_epochs_pass_and_are_reported():
    seen: list[int] = []
    check = stop_if_diverged(lambda r: seen.append(r.epoch), "m", TrainConfig(lr=0.05), RUN)
    check(_record(1, 2.3))
    check(_record(2, 0.4))
    assert seen == [1, 2]


@pytest.mark.parametrize("loss", [math.nan, math.inf])
def test_the_first_non_finite_epoch_stops_with_the_fix(loss):
    seen: list[int] = []
    check = stop_if_diverged(lambda r: seen.append(r.epoch), "lenet5", TrainConfig(lr=0.05), RUN)
    with pytest.raises(TrainingDiverged) as info:
        check(_record(4, loss))
    assert seen == [4], "the epoch is logged before the stop"
    message = str(info.value)
    assert "diverged in epoch 4" in message and "lr 0.05" in message and "run.seed 3" in message
    assert "models.lenet5.train.lr" in message


def test_a_real_training_at_an_absurd_rate_stops_in_its_first_epoch():
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, 8, 8, generator=generator)
    y = torch.arange(24) % 3
    data = ImageTensors(x[:18], y[:18], x[18:], y[18:], num_classes=3)
    cfg = TrainConfig(epochs=5, batch_size=6, lr=1e30, momentum=0.9, lr_schedule="constant")
    with pytest.raises(TrainingDiverged, match="diverged in epoch 1"):
        train_dense.fn("small_bn_cnn", cfg, RUN, data)
