"""The shared training loop: it learns, it is repeatable, and masks keep pruned weights at +0.0."""

import torch

from deepcompression.checkpoint import Checkpoint, CheckpointError
from deepcompression.compress.pruning import full_masks, prune_
from deepcompression.config import OptimConfig
from deepcompression.training import evaluate, fit, learning_rate, resolve_device, seed_everything
from models import build_model


def _toy_data(n: int = 1024, n_val: int = 128) -> tuple[torch.Tensor, ...]:
    """Linearly separable 10-class data shaped like MNIST: (train_x, train_y, val_x, val_y), the
    validation samples drawn apart from the training ones."""
    g = torch.Generator().manual_seed(0)
    total = n + n_val
    y = torch.randint(0, 10, (total,), generator=g)
    x = torch.randn(total, 1, 28, 28, generator=g) * 0.1
    x[torch.arange(total), 0, y, :] += 1.0  # class k lights up row k
    return x[:n], y[:n], x[n:], y[n:]


def test_fit_learns_and_records_every_epoch():
    data = _toy_data()
    generator = seed_everything(0)
    model = build_model("lenet_300_100")
    before = evaluate(model, data[2], data[3]).error
    history = fit(model, data, OptimConfig(epochs=3, batch_size=32, lr=0.05), generator)
    assert [r.epoch for r in history] == [1, 2, 3]
    assert history[-1].val_error < before
    assert history[-1].val_error <= 0.1
    assert list(history[-1].to_dict()) == [
        "epoch",
        "lr",
        "train_loss",
        "val_loss",
        "val_error",
        "seconds",
    ]


def test_fit_records_the_validation_split_not_the_training_split():
    train_x, train_y, val_x, val_y = _toy_data()
    wrong_y = (val_y + 1) % 10  # validation labels the model cannot learn from the training data
    model = build_model("lenet_300_100")
    cfg = OptimConfig(epochs=2, batch_size=32, lr=0.05)
    history = fit(model, (train_x, train_y, val_x, wrong_y), cfg, seed_everything(0))
    on_val = evaluate(model, val_x, wrong_y)
    assert history[-1].val_error == on_val.error and history[-1].val_loss == on_val.loss
    assert history[-1].val_error >= 0.9
    assert evaluate(model, train_x, train_y).error <= 0.1


def test_seeded_runs_are_identical_on_cpu():
    def run() -> torch.Tensor:
        generator = seed_everything(7)
        model = build_model("lenet_300_100")
        fit(model, _toy_data(), OptimConfig(epochs=1, batch_size=64), generator)
        return model.fc1.weight.detach().clone()

    assert torch.equal(run(), run())


def test_masked_training_keeps_pruned_weights_exactly_zero():
    seed_everything(0)
    model = build_model("lenet_300_100")
    masks = prune_(model, full_masks(model), {"fc1": 0.1, "fc2": 0.2, "fc3": 0.5})
    cfg = OptimConfig(epochs=2, batch_size=32, lr=0.1, momentum=0.9, weight_decay=5e-4)
    fit(model, _toy_data(), cfg, seed_everything(1), masks=masks)
    for name, mask in masks.items():
        weight = dict(model.named_parameters())[name].detach()
        assert torch.all(weight[~mask] == 0.0)
        assert not torch.any(torch.signbit(weight[~mask]))
        assert torch.count_nonzero(weight[mask]) > 0


def test_cosine_schedule_starts_at_lr_and_decays():
    cfg = OptimConfig(epochs=4, lr=0.1, lr_schedule="cosine")
    rates = [learning_rate(cfg, e) for e in range(4)]
    assert rates[0] == 0.1 and rates == sorted(rates, reverse=True) and rates[-1] > 0


def test_auto_device_is_cuda_exactly_when_available():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected


def test_checkpoint_round_trip_and_wrong_model_is_refused():
    model = build_model("lenet_300_100")
    masks = full_masks(model)
    checkpoint = Checkpoint.of(model, {"name": "lenet_300_100", "kwargs": {}}, masks=masks)
    loaded = Checkpoint.from_bytes(checkpoint.to_bytes())
    rebuilt = loaded.build()
    assert torch.equal(rebuilt.fc1.weight, model.fc1.weight)
    assert torch.equal(loaded.masks["fc2.weight"], masks["fc2.weight"])
    try:
        loaded.expect_model("lenet5")
    except CheckpointError as err:
        assert "lenet_300_100" in str(err) and "lenet5" in str(err)
    else:
        raise AssertionError("a checkpoint of another model must be refused")
    wrong = Checkpoint({"name": "lenet5", "kwargs": {}}, checkpoint.state_dict)
    try:
        wrong.build()
    except CheckpointError as err:
        assert "do not fit model 'lenet5'" in str(err)
    else:
        raise AssertionError("weights of another model must not load")


def test_garbage_is_not_a_checkpoint():
    try:
        Checkpoint.from_bytes(b"not a checkpoint")
    except CheckpointError as err:
        assert "not a readable checkpoint" in str(err)
    else:
        raise AssertionError("garbage must be refused")
