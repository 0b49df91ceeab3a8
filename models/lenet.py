"""The two MNIST networks of the Deep Compression paper (Table 1), sized from the data."""

import torch
from torch import nn

from .registry import register_model

_LENET5_KERNEL = 5
_LENET5_POOL = 2


@register_model("lenet_300_100")
class LeNet300100(nn.Module):
    """LeNet-300-100: a (C*H*W)-300-100-classes MLP with ReLU (266,610 parameters on MNIST)."""

    def __init__(
        self, num_classes: int = 10, *, in_channels: int = 1, image_size: int = 28
    ) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, C*H*W)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def _conv_pool_side(side: int) -> int:
    """Side after a 5x5 valid conv and a 2x2 max pool (0 when nothing is left)."""
    return max(side - _LENET5_KERNEL + 1, 0) // _LENET5_POOL


def lenet5_feature_side(image_size: int) -> int:
    """Side of LeNet-5's last feature map; raises ValueError naming the minimum input size."""
    side = _conv_pool_side(_conv_pool_side(image_size))
    if side < 1:
        minimum = next(s for s in range(1, 64) if _conv_pool_side(_conv_pool_side(s)) >= 1)
        raise ValueError(
            f"lenet5 needs image_size >= {minimum} (two 5x5 convs and two 2x2 pools), "
            f"got {image_size}"
        )
    return side


@register_model("lenet5")
class LeNet5(nn.Module):
    """LeNet-5, Caffe variant: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc (431,080 MNIST)."""

    def __init__(
        self, num_classes: int = 10, *, in_channels: int = 1, image_size: int = 28
    ) -> None:
        super().__init__()
        side = lenet5_feature_side(image_size)  # 4 for 28x28
        self.conv1 = nn.Conv2d(in_channels, 20, kernel_size=_LENET5_KERNEL)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=_LENET5_KERNEL)
        self.fc1 = nn.Linear(50 * side * side, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(self.conv1(x), _LENET5_POOL)  # (B, 20, 12, 12) on MNIST
        x = nn.functional.max_pool2d(self.conv2(x), _LENET5_POOL)  # (B, 50, 4, 4) on MNIST
        x = torch.relu(self.fc1(x.flatten(1)))  # (B, 500)
        return self.fc2(x)
