"""Random-shift augmentation: each image is its own translation of the input, seeded runs repeat."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional

from deepcompression.config import ConfigError, OptimConfig
from deepcompression.data.augment import random_shift
from deepcompression.training import fit, seed_everything
from models import build_model


def _translations(image: torch.Tensor, max_shift: int) -> list[torch.Tensor]:
    """Every translation of one (C, H, W) image by up to max_shift, borders replicated."""
    padded = functional.pad(image.unsqueeze(0), (max_shift,) * 4, mode="replicate")[0]
    _, height, width = image.shape
    span = 2 * max_shift + 1
    return [padded[:, r : r + height, c : c + width] for r in range(span) for c in range(span)]


@pytest.mark.parametrize("max_shift", [1, 2, 3])
def test_each_image_is_a_translation_of_its_input(max_shift: int) -> None:
    images = torch.randn(16, 3, 7, 9)
    moved = random_shift(images, max_shift, torch.Generator().manual_seed(1))
    assert moved.shape == images.shape
    for before, after in zip(images, moved, strict=True):
        assert any(torch.equal(after, t) for t in _translations(before, max_shift))


def test_offsets_cover_the_range_and_vary_per_image() -> None:
    images = torch.arange(25, dtype=torch.float32).view(1, 1, 5, 5).repeat(400, 1, 1, 1)
    moved = random_shift(images, 1, torch.Generator().manual_seed(0))
    # The centre pixel's new value tells the offset: 12 + 5 * dr + dc.
    seen = {int(v) - 12 for v in moved[:, 0, 2, 2]}
    assert seen == {5 * dr + dc for dr in (-1, 0, 1) for dc in (-1, 0, 1)}


def test_zero_shift_is_identity_and_seeded_shifts_repeat() -> None:
    images = torch.randn(8, 1, 6, 6)
    assert random_shift(images, 0, torch.Generator()) is images
    first = random_shift(images, 2, torch.Generator().manual_seed(5))
    again = random_shift(images, 2, torch.Generator().manual_seed(5))
    assert torch.equal(first, again)


def test_border_is_replicated_not_zero_filled() -> None:
    images = torch.full((32, 1, 4, 4), -0.42)  # a normalised background, not 0
    moved = random_shift(images, 2, torch.Generator().manual_seed(3))
    assert torch.equal(moved, images)


def test_rejects_flat_batches() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        random_shift(torch.zeros(4, 784), 1, torch.Generator())


def test_config_range_is_checked() -> None:
    OptimConfig(augment_shift=2).validate("train")
    with pytest.raises(ConfigError, match="augment_shift"):
        OptimConfig(augment_shift=-1).validate("train")


def test_fit_with_shift_repeats_exactly_and_differs_from_no_shift() -> None:
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    data = (x, y, x[:16], y[:16])

    def run(shift: int | None) -> torch.Tensor:
        generator = seed_everything(0)
        model = build_model("lenet_300_100")
        cfg = OptimConfig(epochs=1, batch_size=16, lr=0.05, augment_shift=shift)
        fit(model, data, cfg, generator)
        return model.fc1.weight.detach().clone()

    assert torch.equal(run(2), run(2))
    assert not torch.equal(run(2), run(0))
    assert torch.equal(run(0), run(None))
