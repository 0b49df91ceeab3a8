"""torchvision classifiers (untrained), with a stem for small inputs, and a tiny BatchNorm CNN.

torchvision is imported inside the factories: it takes seconds to import, and every pipeline
stage imports `models`.
"""

import torch
from torch import nn

from .registry import register_model

SMALL_INPUT_MAX = 64  # image_size up to this gets a stride-1 stem (CIFAR-style)


def _stem_conv(in_channels: int, like: nn.Conv2d, kernel: int, stride: int) -> nn.Conv2d:
    """A bias-free first conv with `like`'s width, initialised as torchvision does (He, fan_out)."""
    conv = nn.Conv2d(
        in_channels, like.out_channels, kernel, stride=stride, padding=kernel // 2, bias=False
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


@register_model("resnet18")
def resnet18(*, in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Module:
    """torchvision ResNet-18; for image_size <= 64 conv1 is 3x3 stride 1 and maxpool is dropped."""
    from torchvision.models import resnet18 as tv_resnet18

    model = tv_resnet18(weights=None, num_classes=num_classes)
    if image_size <= SMALL_INPUT_MAX:
        model.conv1 = _stem_conv(in_channels, model.conv1, kernel=3, stride=1)
        model.maxpool = nn.Identity()
    elif in_channels != model.conv1.in_channels:
        model.conv1 = _stem_conv(in_channels, model.conv1, kernel=7, stride=2)
    return model


@register_model("mobilenet_v2")
def mobilenet_v2(*, in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Module:
    """torchvision MobileNetV2; for image_size <= 64 the first conv has stride 1."""
    from torchvision.models import mobilenet_v2 as tv_mobilenet_v2

    model = tv_mobilenet_v2(weights=None, num_classes=num_classes)
    first: nn.Conv2d = model.features[0][0]
    stride = 1 if image_size <= SMALL_INPUT_MAX else 2
    if stride != first.stride[0] or in_channels != first.in_channels:
        model.features[0][0] = _stem_conv(in_channels, first, kernel=3, stride=stride)
    return model


def _conv_bn(conv: nn.Conv2d) -> nn.Sequential:
    """conv -> BatchNorm -> ReLU."""
    return nn.Sequential(conv, nn.BatchNorm2d(conv.out_channels), nn.ReLU(inplace=True))


@register_model("small_bn_cnn")
class SmallBnCnn(nn.Module):
    """A cheap test CNN: conv, depthwise conv, grouped conv (each with BatchNorm), pool, fc."""

    def __init__(
        self, *, in_channels: int = 1, image_size: int = 28, num_classes: int = 10, width: int = 8
    ) -> None:
        super().__init__()  # image_size is unused: global pooling fits any input size
        self.features = nn.Sequential(
            _conv_bn(nn.Conv2d(in_channels, width, 3, padding=1, bias=False)),
            _conv_bn(nn.Conv2d(width, width, 3, stride=2, padding=1, groups=width, bias=False)),
            _conv_bn(nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, groups=2, bias=False)),
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(self.features(x)).flatten(1))
