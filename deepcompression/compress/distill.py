"""Knowledge distillation (Hinton et al. 2015): a teacher's softened outputs as extra targets.

The dense model teaches its pruned and weight-shared descendants while they retrain, so the
small network is pulled toward the function it approximates rather than toward the hard labels
alone; the teacher sees the very (augmented) batch the student sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from deepcompression.checkpoint import Checkpoint
from deepcompression.config import DistillConfig


def distillation_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, target: torch.Tensor, cfg: DistillConfig
) -> torch.Tensor:
    """(1 - w) x cross-entropy + w x T^2 x KL(teacher || student) on T-softened outputs.

    T^2 keeps the soft term's gradients on the scale of the hard one's whatever T is."""
    hard = F.cross_entropy(logits, target)
    if cfg.weight == 0.0:
        return hard
    t = cfg.temperature
    soft = F.kl_div(
        F.log_softmax(logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return (1.0 - cfg.weight) * hard + cfg.weight * t * t * soft


@dataclass(frozen=True)
class Teacher:
    """A frozen network and how strongly its outputs steer training."""

    model: nn.Module
    cfg: DistillConfig

    @classmethod
    def frozen(cls, model: nn.Module, cfg: DistillConfig) -> Teacher:
        """The teacher in eval mode with gradients off (its weights never change)."""
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        return cls(model, cfg)

    def loss(
        self, logits: torch.Tensor, inputs: torch.Tensor, target: torch.Tensor
    ) -> torch.Tensor:
        """The distillation loss of the student's `logits` on `inputs`."""
        with torch.no_grad():
            teacher_logits = self.model(inputs)
        return distillation_loss(logits, teacher_logits, target, self.cfg)


def teacher_from(
    checkpoint: Checkpoint | None, cfg: DistillConfig | None, device: torch.device | str
) -> Teacher | None:
    """The frozen teacher built from `checkpoint` on `device`; None unless both are given."""
    if checkpoint is None or cfg is None:
        return None
    return Teacher.frozen(checkpoint.build(device), cfg)
