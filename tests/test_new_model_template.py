"""`python -m flows.check --new-model NAME`: a commented models: entry for every registered
network, sized from the data and the network's layers, that passes the params check as pasted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from deepcompression.data.mnist import MNIST_SHAPE
from deepcompression.data.tensors import DataShape
from flows.check import main
from flows.params import check_raw
from flows.template import new_model_text
from models import model_names

ROOT = Path(__file__).parents[1]


def _pasted(text: str) -> dict:
    """params.yaml with `text` pasted under models: in place of its models."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["models"] = yaml.safe_load("models:\n" + text)["models"]
    return raw


def _base() -> dict:
    return next(iter(yaml.safe_load((ROOT / "params.yaml").read_text())["models"].values()))


@pytest.mark.parametrize("name", model_names())
def test_every_network_gets_a_section_that_passes_the_check(name):
    text = new_model_text(name, _base(), MNIST_SHAPE)
    assert text.startswith(f"# {name} for this data (1x28x28 inputs, 10 classes)")
    params, plans = check_raw(_pasted(text))
    assert list(params.models) == [name]
    assert params.models[name].allocation == "params"
    assert params.models[name].train.checkpoint is None
    assert plans[name], "every layer has a plan"


def test_the_section_is_sized_from_the_data_and_the_layers():
    shape = DataShape(channels=3, image_size=32, num_classes=7)
    text = new_model_text("mobilenet_v2", _base(), shape)
    assert "(3x32x32 inputs, 7 classes): 53 Linear/Conv2d layers, 52 conv" in text
    section = yaml.safe_load("models:\n" + text)["models"]["mobilenet_v2"]
    assert section["prune"]["density"] == {"conv": 0.4, "fc": 0.1, "classifier.1": 0.3}
    assert section["quantize"]["bits"] == {"conv": 8, "fc": 5}
    only_fc = yaml.safe_load("models:\n" + new_model_text("lenet_300_100", _base(), shape))
    assert set(only_fc["models"]["lenet_300_100"]["quantize"]["bits"]) == {"fc"}


def test_an_unknown_name_lists_the_registered_ones(capsys):
    assert main(["--new-model", "mobilenetv2"]) == 2
    err = capsys.readouterr().err
    assert "--new-model mobilenetv2: not a registered network" in err
    assert "mobilenet_v2" in err


def test_the_command_prints_the_section():
    done = subprocess.run(
        [sys.executable, "-m", "flows.check", "--new-model", "lenet5"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    check_raw(_pasted(done.stdout))
