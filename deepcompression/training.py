"""Training and evaluation, shared by training, pruning retraining and centroid fine-tuning.

Images are preloaded tensors already on the device (batches are index slices of them) or, when
too large to preload, streamed through a DataLoader in the very same batches (`streaming`)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn

from deepcompression.config import Device, OptimConfig
from deepcompression.data.augment import random_shift
from deepcompression.data.streaming import StreamedImages, batches

if TYPE_CHECKING:  # dense training (the train stage) neither prunes nor distills
    from deepcompression.compress.distill import Teacher
    from deepcompression.compress.pruning import MaskGuard, Masks

Images = torch.Tensor | StreamedImages
"""A split's images: a preloaded float32 tensor, or streamed in batches."""

Splits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]
"""(train_x, train_y, val_x, val_y) on the model's device."""


@dataclass(frozen=True)
class EpochRecord:
    """One epoch's figures, for logs, the per-epoch CSV and plots."""

    epoch: int
    lr: float
    train_loss: float
    val_loss: float
    val_error: float
    seconds: float

    def to_dict(self) -> dict[str, float]:
        """Plain dict for CSV/JSON writers."""
        return asdict(self)


@dataclass(frozen=True)
class Evaluation:
    """A model's error and mean loss on one split (validation during runs, test at the end)."""

    error: float
    loss: float
    samples: int


def resolve_device(device: Device) -> torch.device:
    """`auto` picks CUDA when present, else CPU; asking for CUDA without one is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' was asked for but no CUDA device is present; use 'auto'")
    return torch.device(device)


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNG (weight init) and return a generator for batch shuffling."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def learning_rate(cfg: OptimConfig, epoch: int) -> float:
    """Learning rate for a 0-based epoch under the configured schedule."""
    if cfg.lr_schedule == "cosine" and cfg.epochs > 1:
        return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * epoch / cfg.epochs))
    if cfg.lr_schedule == "step":
        return cfg.lr * (0.1 ** (epoch // max(1, math.ceil(cfg.epochs / 3))))
    return cfg.lr


def make_optimizer(params: Iterable[nn.Parameter], cfg: OptimConfig) -> torch.optim.SGD:
    """SGD with momentum and L2 weight decay, as in the paper's Caffe runs."""
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


@torch.no_grad()
def evaluate(model: nn.Module, x: Images, y: torch.Tensor, batch_size: int = 1000) -> Evaluation:
    """Top-1 error and mean cross-entropy of `model` on (x, y)."""
    model.eval()
    wrong, loss_sum = 0, 0.0
    spans = _spans(len(x), batch_size)
    for span, inputs in zip(spans, batches(x, spans), strict=True):
        logits = model(inputs)
        target = y[span]
        loss_sum += nn.functional.cross_entropy(logits, target, reduction="sum").item()
        wrong += (logits.argmax(1) != target).sum().item()
    n = len(x)
    return Evaluation(error=wrong / max(n, 1), loss=loss_sum / max(n, 1), samples=n)


@torch.no_grad()
def predict_logits(model: nn.Module, x: Images, batch_size: int = 1000) -> torch.Tensor:
    """Logits of `model` on all of `x`, batched."""
    model.eval()
    return torch.cat([model(inputs) for inputs in batches(x, _spans(len(x), batch_size))])


def _spans(count: int, batch_size: int) -> list[slice]:
    """Consecutive batches of `batch_size` rows (the last one shorter) covering `count` rows."""
    return [slice(start, start + batch_size) for start in range(0, count, batch_size)]


def train_epoch(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    x: Images,
    y: torch.Tensor,
    batch_size: int,
    generator: torch.Generator,
    guard: MaskGuard | None = None,
    shift: int = 0,
    teacher: Teacher | None = None,
) -> float:
    """One pass over (x, y) in shuffled mini-batches; returns the mean training loss.

    With a mask `guard`, gradients of pruned weights are zeroed before the step and the weights
    re-zeroed after it, so neither momentum nor weight decay can revive a pruned connection.
    `shift` > 0 moves each image by a random offset of up to that many pixels (`augment`);
    a `teacher` adds its softened outputs on the same images as targets (`distill`).
    """
    model.train()
    order = torch.randperm(len(x), generator=generator).to(x.device)
    total = torch.zeros((), device=x.device)
    chunks = [order[start : start + batch_size] for start in range(0, len(x), batch_size)]
    for idx, inputs in zip(chunks, batches(x, chunks), strict=True):
        if shift:
            inputs = random_shift(inputs, shift, generator)
        logits = model(inputs)
        if teacher is None:
            loss = nn.functional.cross_entropy(logits, y[idx])
        else:
            loss = teacher.loss(logits, inputs, y[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if guard is not None:
            guard.zero_gradients_()
        optimizer.step()
        if guard is not None:
            guard.zero_weights_()
        total += loss.detach() * len(idx)
    return total.item() / max(len(x), 1)


def _mask_guard(model: nn.Module, masks: Masks) -> MaskGuard:
    """`masks` bound to `model` for retraining (pruning's module, imported by masked fits only)."""
    from deepcompression.compress.pruning import MaskGuard

    return MaskGuard(model, masks)


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite: the weights are lost, so training stops.
    ``what`` names the training and ``fix`` what to change (the stage that ran it knows)."""

    def __init__(
        self, epoch: int, loss: float, lr: float, what: str = "training", fix: str = ""
    ) -> None:
        message = f"{what} diverged in epoch {epoch}: the training loss is {loss} (lr {lr:g})"
        super().__init__(f"{message}; {fix}" if fix else message)
        self.epoch, self.loss, self.lr = epoch, loss, lr


def fit(
    model: nn.Module,
    data: tuple[Images, torch.Tensor, Images, torch.Tensor],
    cfg: OptimConfig,
    generator: torch.Generator,
    masks: Masks | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    eval_batch_size: int = 1000,
    teacher: Teacher | None = None,
) -> list[EpochRecord]:
    """Train for `cfg.epochs` epochs, evaluating on the validation split after each.

    `data` is (train_x, train_y, val_x, val_y), on the model's device (streamed images: sent
    there batch by batch). A `teacher` (on the same device) distills into the model. An epoch
    whose training loss is not finite is reported, then raises TrainingDiverged: nothing after
    it can recover, and every later stage would compress noise.
    """
    train_x, train_y, val_x, val_y = data
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], cfg)
    guard = _mask_guard(model, masks) if masks is not None else None
    history = []
    for epoch in range(cfg.epochs):
        lr = learning_rate(cfg, epoch)
        for group in optimizer.param_groups:
            group["lr"] = lr
        start = time.perf_counter()
        shift = cfg.augment_shift or 0
        train_loss = train_epoch(
            model, optimizer, train_x, train_y, cfg.batch_size, generator, guard, shift, teacher
        )
        seconds = time.perf_counter() - start
        result = evaluate(model, val_x, val_y, eval_batch_size)
        record = EpochRecord(epoch + 1, lr, train_loss, result.loss, result.error, seconds)
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if not math.isfinite(train_loss):
            raise TrainingDiverged(record.epoch, train_loss, lr)
    return history
