"""A name -> constructor registry, so params.yaml and compressed files can name a network."""

from collections.abc import Callable
from typing import Any

from torch import nn

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


class UnknownModelError(ValueError):
    """Raised when a model name is not in the registry."""


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding a model constructor under `name`; adding a network is one entry here."""

    def add(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        _REGISTRY[name] = factory
        return factory

    return add


def model_names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; an unknown name lists the registered ones."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(model_names())}"
        ) from None
    return factory(**kwargs)
