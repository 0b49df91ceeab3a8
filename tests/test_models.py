"""The paper's networks: parameter counts of Table 1 and the registry."""

import pytest
import torch

from models import UnknownModelError, build_model, model_names, register_model


@pytest.mark.parametrize(("name", "count"), [("lenet_300_100", 266_610), ("lenet5", 431_080)])
def test_parameter_counts_match_the_paper(name, count):
    model = build_model(name)
    assert sum(p.numel() for p in model.parameters()) == count
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


def test_unknown_model_lists_the_registered_ones():
    with pytest.raises(UnknownModelError, match="lenet5, lenet_300_100"):
        build_model("vgg")


def test_registering_a_name_twice_is_refused():
    assert "lenet5" in model_names()
    with pytest.raises(ValueError, match="already registered"):
        register_model("lenet5")(lambda: torch.nn.Linear(1, 1))
