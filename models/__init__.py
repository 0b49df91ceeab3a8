"""Network definitions, built by name through one registry."""

from models.lenet import LeNet5, LeNet300100
from models.registry import UnknownModelError, build_model, model_names, register_model

__all__ = [
    "LeNet5",
    "LeNet300100",
    "UnknownModelError",
    "build_model",
    "model_names",
    "register_model",
]
