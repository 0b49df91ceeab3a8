"""Network definitions, built by name through one registry (how to add one: models/registry.py).

Imports inside this package are relative, so that the library can import it under a private name
when the caller has a `models` package of its own (deepcompression/networks.py).
"""

from .lenet import LeNet5, LeNet300100
from .registry import (
    DATA_KWARGS,
    UnknownModelError,
    build_model,
    model_arch,
    model_names,
    register_model,
)
from .vision import SmallBnCnn

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
