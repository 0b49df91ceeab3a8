"""The paper's networks: parameter counts of Table 1, data-sized models and the registry."""

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from models import (
    DATA_KWARGS,
    UnknownModelError,
    build_model,
    model_arch,
    model_names,
    register_model,
)


class _LegacyLeNet300100(nn.Module):
    """LeNet-300-100 exactly as defined before models took their size from the data."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)


class _LegacyLeNet5(nn.Module):
    """LeNet-5 exactly as defined before models took their size from the data."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)


@pytest.mark.parametrize(("name", "count"), [("lenet_300_100", 266_610), ("lenet5", 431_080)])
def test_parameter_counts_match_the_paper(name, count):
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == count
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize(
    ("name", "legacy"), [("lenet_300_100", _LegacyLeNet300100), ("lenet5", _LegacyLeNet5)]
)
def test_defaults_reproduce_the_legacy_networks_and_their_seeded_init(name, legacy):
    torch.manual_seed(7)
    old = legacy().state_dict()
    torch.manual_seed(7)
    new = build_model(name).state_dict()
    assert list(new) == list(old)
    for key, value in old.items():
        assert torch.equal(new[key], value), key


def test_lenet_300_100_flattens_any_input():
    model = build_model("lenet_300_100", in_channels=3, image_size=32, num_classes=5)
    assert model.fc1.in_features == 3 * 32 * 32
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 5)


@pytest.mark.parametrize(("size", "side"), [(16, 1), (28, 4), (32, 5)])
def test_lenet5_sizes_fc1_from_the_input(size, side):
    model = build_model("lenet5", in_channels=3, image_size=size, num_classes=4)
    assert model.fc1.in_features == 50 * side * side
    assert model(torch.zeros(2, 3, size, size)).shape == (2, 4)


def test_lenet5_names_the_minimum_input_size():
    with pytest.raises(ValueError, match="image_size >= 16.*got 15"):
        build_model("lenet5", image_size=15)


@pytest.mark.parametrize(("key", "value"), [("image_size", 0), ("num_classes", True)])
def test_data_kwargs_must_be_positive_ints(key, value):
    with pytest.raises(ValueError, match=f"{key} must be an int >= 1"):
        build_model("lenet_300_100", **{key: value})


def test_every_model_takes_the_data_kwargs_and_fits_a_small_input():
    for name in model_names():
        model = build_model(name, in_channels=2, image_size=20, num_classes=3).eval()
        with torch.no_grad():
            assert model(torch.zeros(1, 2, 20, 20)).shape == (1, 3), name


def test_small_input_stems():
    resnet = build_model("resnet18", in_channels=3, image_size=32)
    assert (resnet.conv1.kernel_size, resnet.conv1.stride) == ((3, 3), (1, 1))
    assert isinstance(resnet.maxpool, nn.Identity)
    assert build_model("mobilenet_v2", image_size=64).features[0][0].stride == (1, 1)


def test_large_inputs_keep_the_imagenet_stems():
    resnet = build_model("resnet18", in_channels=1, image_size=96)
    assert (resnet.conv1.in_channels, resnet.conv1.kernel_size, resnet.conv1.stride) == (
        1,
        (7, 7),
        (2, 2),
    )
    assert isinstance(resnet.maxpool, nn.MaxPool2d)
    first = build_model("mobilenet_v2", in_channels=3, image_size=96).features[0][0]
    assert (first.in_channels, first.stride) == (3, (2, 2))


def test_small_bn_cnn_has_depthwise_and_grouped_convs():
    convs = [
        m for m in build_model("small_bn_cnn", in_channels=3).modules() if isinstance(m, nn.Conv2d)
    ]
    assert [c.groups for c in convs] == [1, convs[1].in_channels, 2]
    assert convs[0].in_channels == 3


def test_importing_models_does_not_import_torchvision():
    code = "import sys, models; print('torchvision' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_model_arch_records_resolved_kwargs_and_rebuilds_the_model():
    model = build_model("lenet5", in_channels=3, image_size=32)
    arch = model_arch(model)
    assert arch == {
        "name": "lenet5",
        "kwargs": {"num_classes": 10, "in_channels": 3, "image_size": 32},
    }
    arch = json.loads(json.dumps(arch))  # as stored in a compressed file's header
    rebuilt = build_model(arch["name"], **arch["kwargs"])
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {
        k: v.shape for k, v in model.state_dict().items()
    }
    assert "dc_arch" not in model.state_dict()


def test_model_arch_keeps_extra_kwargs_and_is_a_copy():
    model = build_model("small_bn_cnn", width=4)
    arch = model_arch(model)
    assert arch["kwargs"] == {"in_channels": 1, "image_size": 28, "num_classes": 10, "width": 4}
    arch["kwargs"]["width"] = 99
    assert model_arch(model)["kwargs"]["width"] == 4


def test_model_arch_of_a_model_not_built_by_the_registry():
    with pytest.raises(ValueError, match="not built by build_model"):
        model_arch(nn.Linear(1, 1))


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(UnknownModelError, match="lenet5, lenet_300_100"):
        build_model("vgg")


def test_registering_a_name_twice_is_refused():
    assert "lenet5" in model_names()
    with pytest.raises(ValueError, match="already registered"):
        register_model("lenet5")(lambda: torch.nn.Linear(1, 1))


def test_registering_a_factory_without_the_data_kwargs_is_refused():
    with pytest.raises(TypeError, match=", ".join(DATA_KWARGS)):
        register_model("no_kwargs_net")(lambda num_classes=10: torch.nn.Linear(1, num_classes))
    assert "no_kwargs_net" not in model_names()
