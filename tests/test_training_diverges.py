"""A training whose loss turns NaN stops at that epoch with an error naming the fix, rather than
handing a noise model to every later stage (LeNet-5 at lr 0.05 diverged with run.seed 1). The
guard is in `training.fit`, so dense training, retraining, fine-tuning and trials all have it."""

from __future__ import annotations

import pytest
import torch

from deepcompression.checkpoint import Checkpoint
from deepcompression.config import OptimConfig, RunConfig, TrainConfig
from deepcompression.data.tensors import ImageTensors
from deepcompression.search.sensitivity import prune_layer_alone
from deepcompression.training import TrainingDiverged, fit
from models import build_model
from tasks.diverged import name_the_fix
from tasks.train import train_dense

RUN = RunConfig(seed=3, device="cpu", eval_batch_size=100)


def _data() -> ImageTensors:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(24, 3, 8, 8, generator=generator)
    y = torch.arange(24) % 3
    return ImageTensors(x[:18], y[:18], x[18:], y[18:], num_classes=3)


ABSURD = OptimConfig(epochs=5, batch_size=6, lr=1e30, momentum=0.9, lr_schedule="constant")


def test_fit_reports_the_diverged_epoch_then_stops() -> None:
    model = build_model("small_bn_cnn", num_classes=3, in_channels=3, image_size=8)
    seen: list[float] = []
    with pytest.raises(TrainingDiverged) as info:
        fit(model, _data().as_tuple("cpu"), ABSURD, torch.Generator().manual_seed(0),
            on_epoch=lambda r: seen.append(r.train_loss))  # fmt: skip
    assert len(seen) == info.value.epoch == 1, "the epoch is reported before the stop"
    assert str(info.value).startswith("training diverged in epoch 1") and "lr 1e+30" in str(
        info.value
    )


def test_a_stage_names_the_setting_to_lower() -> None:
    with pytest.raises(TrainingDiverged) as info, name_the_fix(
        "training lenet5", "models.lenet5.train.lr", RUN
    ):
        raise TrainingDiverged(4, float("nan"), 0.05)
    message = str(info.value)
    assert message.startswith("training lenet5 diverged in epoch 4: the training loss is nan")
    assert "lr 0.05" in message and "run.seed 3" in message
    assert "Lower models.lenet5.train.lr" in message and info.value.epoch == 4


def test_a_real_training_at_an_absurd_rate_stops_in_its_first_epoch() -> None:
    cfg = TrainConfig(epochs=5, batch_size=6, lr=1e30, momentum=0.9, lr_schedule="constant")
    with pytest.raises(TrainingDiverged, match="training small_bn_cnn diverged in epoch 1"):
        train_dense.fn("small_bn_cnn", cfg, RUN, _data())


def test_a_diverged_sensitivity_retraining_counts_as_unusable() -> None:
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(24, 1, 28, 28, generator=generator), torch.arange(24) % 10
    dense = Checkpoint.of(build_model("lenet_300_100"), {"name": "lenet_300_100", "kwargs": {}})
    data = (x[:18], y[:18], x[18:], y[18:])
    assert prune_layer_alone(dense, "fc1", 0.5, ABSURD, data, seed=0) == 1.0
