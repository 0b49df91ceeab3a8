"""Network definitions, built by name through one registry (how to add one: models/registry.py)."""

from models.lenet import LeNet5, LeNet300100
from models.registry import (
    DATA_KWARGS,
    UnknownModelError,
    build_model,
    model_arch,
    model_names,
    register_model,
)
from models.vision import SmallBnCnn

__all__ = [
    "DATA_KWARGS",
    "LeNet5",
    "LeNet300100",
    "SmallBnCnn",
    "UnknownModelError",
    "build_model",
    "model_arch",
    "model_names",
    "register_model",
]
