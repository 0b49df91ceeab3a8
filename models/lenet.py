"""The two MNIST networks of the Deep Compression paper (Table 1)."""

import torch
from torch import nn

from models.registry import register_model


@register_model("lenet_300_100")
class LeNet300100(nn.Module):
    """LeNet-300-100: a 784-300-100-10 MLP with ReLU (266,610 parameters)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (B, 784)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


@register_model("lenet5")
class LeNet5(nn.Module):
    """LeNet-5, Caffe variant: conv 20@5x5, pool, conv 50@5x5, pool, fc 500, fc 10 (431,080)."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.max_pool2d(self.conv1(x), 2)  # (B, 20, 12, 12)
        x = nn.functional.max_pool2d(self.conv2(x), 2)  # (B, 50, 4, 4)
        x = torch.relu(self.fc1(x.flatten(1)))  # (B, 500)
        return self.fc2(x)
