"""Knowledge distillation: the loss's limits, a frozen teacher, and training toward its outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import yaml
from torch.nn import functional

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.distill import Teacher, distillation_loss, teacher_from
from deepcompression.compress.pruning import full_masks, prune_
from deepcompression.config import ConfigError, DistillConfig, OptimConfig, Params
from deepcompression.schema import from_dict
from deepcompression.training import fit, predict_logits, seed_everything
from models import build_model


def _kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """KL(teacher || student) of T-softened outputs, batch mean, from the definition."""
    p = torch.softmax(teacher / t, dim=1)
    return (p * (p.log() - torch.log_softmax(student / t, dim=1))).sum(1).mean()


def test_weight_zero_is_plain_cross_entropy() -> None:
    logits, teacher, target = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    loss = distillation_loss(logits, teacher, target, DistillConfig(weight=0.0, temperature=3.0))
    assert torch.equal(loss, functional.cross_entropy(logits, target))


@pytest.mark.parametrize("weight, t", [(1.0, 4.0), (0.3, 2.0), (0.7, 1.0)])
def test_the_loss_mixes_cross_entropy_and_scaled_kl(weight: float, t: float) -> None:
    logits, teacher, target = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    loss = distillation_loss(logits, teacher, target, DistillConfig(weight=weight, temperature=t))
    hard = functional.cross_entropy(logits, target)
    expected = (1 - weight) * hard + weight * t * t * _kl(logits, teacher, t)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_the_soft_term_vanishes_when_the_student_matches_the_teacher() -> None:
    logits, target = torch.randn(8, 10), torch.randint(0, 10, (8,))
    loss = distillation_loss(logits, logits.clone(), target, DistillConfig(1.0, 4.0))
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_a_frozen_teacher_has_no_gradients_and_is_in_eval_mode() -> None:
    model = build_model("lenet_300_100")
    teacher = Teacher.frozen(model, DistillConfig())
    assert not teacher.model.training
    assert not any(p.requires_grad for p in teacher.model.parameters())


def test_teacher_from_needs_both_a_checkpoint_and_a_config() -> None:
    torch.manual_seed(0)
    checkpoint = Checkpoint.of(build_model("lenet_300_100"), {"name": "lenet_300_100"})
    assert teacher_from(None, DistillConfig(), "cpu") is None
    assert teacher_from(checkpoint, None, "cpu") is None
    teacher = teacher_from(checkpoint, DistillConfig(0.4, 2.0), "cpu")
    assert teacher is not None and teacher.cfg == DistillConfig(0.4, 2.0)
    x = torch.randn(3, 1, 28, 28)
    assert torch.equal(teacher.model(x), checkpoint.build("cpu")(x))


def _data(n: int = 256) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(3)
    x = torch.randn(n, 1, 28, 28, generator=generator)
    y = torch.randint(0, 10, (n,), generator=generator)
    return x, y, x[:64], y[:64]


def test_training_with_a_teacher_pulls_the_student_toward_it_and_keeps_masks() -> None:
    """With weight 1 the student learns the teacher's outputs, not the (random) labels; the
    teacher's weights never change and pruned weights stay zero."""
    torch.manual_seed(0)
    teacher_model = build_model("lenet_300_100")
    before = {k: v.clone() for k, v in teacher_model.state_dict().items()}
    teacher = Teacher.frozen(teacher_model, DistillConfig(weight=1.0, temperature=2.0))
    torch.manual_seed(1)
    student = build_model("lenet_300_100")
    masks = prune_(student, full_masks(student), {"fc1": 0.3, "fc2": 0.5, "fc3": 0.8})
    x, *_ = data = _data()
    gap_before = _kl(predict_logits(student, x), predict_logits(teacher_model, x), 1.0).item()
    cfg = OptimConfig(epochs=3, batch_size=32, lr=0.05, weight_decay=0.0)
    fit(student, data, cfg, seed_everything(0), masks=masks, teacher=teacher)
    gap_after = _kl(predict_logits(student, x), predict_logits(teacher_model, x), 1.0).item()
    assert gap_after < 0.5 * gap_before
    for name, value in teacher_model.state_dict().items():
        assert torch.equal(value, before[name]), name
    weights = dict(student.named_parameters())
    for name, mask in masks.items():
        assert torch.all(weights[name][~mask] == 0), name


def test_a_teacher_changes_training_and_repeats_with_the_seed() -> None:
    def run(teacher: Teacher | None) -> torch.Tensor:
        torch.manual_seed(5)
        student = build_model("lenet_300_100")
        cfg = OptimConfig(epochs=1, batch_size=64, lr=0.05)
        fit(student, _data(), cfg, seed_everything(0), teacher=teacher)
        return student.fc1.weight.detach().clone()

    torch.manual_seed(0)
    teacher = Teacher.frozen(build_model("lenet_300_100"), DistillConfig(0.5, 4.0))
    assert torch.equal(run(teacher), run(teacher))
    assert not torch.equal(run(teacher), run(None))


def _shipped(model: str, distill: dict | None) -> dict:
    """The shipped params.yaml's stage sections with `models.<model>.distill` set."""
    raw = yaml.safe_load((Path(__file__).parents[1] / "params.yaml").read_text())
    del raw["schedule"]
    raw["models"][model]["distill"] = distill
    return raw


@pytest.mark.parametrize(
    "section, problem",
    [
        ({"weight": 1.5, "temperature": 4.0}, "weight"),
        ({"weight": 0.5, "temperature": 0}, "temperature"),
    ],
)
def test_bad_distill_values_name_the_key(section: dict, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"models\.lenet5\.distill\.{problem}.*out of range"):
        from_dict(Params, _shipped("lenet5", section)).validate()


def test_distill_is_optional_and_reaches_the_model_view() -> None:
    raw = _shipped("lenet5", None)
    del raw["models"]["lenet5"]["distill"]
    assert from_dict(Params, raw).select("lenet5").distill is None
    taught = from_dict(Params, _shipped("lenet5", {"weight": 0.6, "temperature": 3}))
    assert taught.select("lenet5").distill == DistillConfig(weight=0.6, temperature=3.0)
