"""A name -> constructor registry, so params.yaml and compressed files can name a network.

Kwargs convention
-----------------
Every registered factory takes its input shape and class count from the data, as keyword
arguments with these defaults (MNIST, so a bare ``build_model(name)`` is today's network)::

    in_channels: int = 1     # C of the (C, H, W) input
    image_size: int = 28     # side of the square input, H == W
    num_classes: int = 10    # outputs of the last layer

A factory may take further keyword arguments of its own. All kwargs must be plain JSON values
(int, float, str, bool, None, lists/dicts of them): they are written into checkpoints and into the
compressed file's header, and a file is rebuilt by calling the factory with them again.

Adding your own network
-----------------------
Any ``nn.Module`` works; pruning and weight sharing act on each ``nn.Linear`` / ``nn.Conv2d``
(grouped and depthwise included), everything else (BatchNorm, ...) is stored as is::

    from torch import nn
    from models.registry import register_model

    @register_model("my_net")
    def my_net(*, in_channels: int = 1, image_size: int = 28, num_classes: int = 10) -> nn.Module:
        \"\"\"A tiny MLP.\"\"\"
        return nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size**2, 64), nn.ReLU(),
            nn.Linear(64, num_classes),
        )

A class works as well (decorate the class; its ``__init__`` takes the same kwargs). Import the
module that registers it from ``models/__init__.py``; import heavy dependencies (torchvision)
inside the factory so that importing ``models`` stays fast. Registration refuses a factory that
does not accept the three conventional kwargs.

Rebuilding a model
------------------
``build_model(name, **kwargs)`` records on the module ``dc_arch = {"name": name, "kwargs": {...}}``
with every named parameter of the factory resolved (defaults filled in). ``model_arch(model)``
returns a copy of it; store it next to the weights and ``build_model(arch["name"],
**arch["kwargs"])`` rebuilds the same network.
"""

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

ModelFactory = Callable[..., nn.Module]

DATA_KWARGS: tuple[str, ...] = ("in_channels", "image_size", "num_classes")
ARCH_ATTR = "dc_arch"

_REGISTRY: dict[str, ModelFactory] = {}


class UnknownModelError(ValueError):
    """Raised when a model name is not in the registry."""


def _accepts_data_kwargs(factory: ModelFactory) -> bool:
    """True if `factory` can be called with every conventional data kwarg by keyword."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return True
    named = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
    return set(DATA_KWARGS) <= named


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    """Decorator adding a model constructor under `name`; adding a network is one entry here."""

    def add(factory: ModelFactory) -> ModelFactory:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered")
        if not _accepts_data_kwargs(factory):
            raise TypeError(
                f"model {name!r}: the factory must accept the keyword arguments "
                f"{', '.join(DATA_KWARGS)} (see models/registry.py)"
            )
        _REGISTRY[name] = factory
        return factory

    return add


def model_names() -> list[str]:
    """All registered model names, sorted."""
    return sorted(_REGISTRY)


def _resolved_kwargs(factory: ModelFactory, kwargs: dict[str, Any]) -> dict[str, Any]:
    """`kwargs` plus the defaults of the factory's other named parameters."""
    bound = inspect.signature(factory).bind_partial(**kwargs)
    bound.apply_defaults()
    resolved: dict[str, Any] = {}
    for key, value in bound.arguments.items():
        kind = bound.signature.parameters[key].kind
        if kind is inspect.Parameter.VAR_KEYWORD:
            resolved.update(value)
        elif kind is not inspect.Parameter.VAR_POSITIONAL:
            resolved[key] = value
    return resolved


def _check_data_kwargs(name: str, kwargs: dict[str, Any]) -> None:
    """Raise ValueError unless every given data kwarg is an int >= 1."""
    for key in DATA_KWARGS:
        value = kwargs.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"model {name!r}: {key} must be an int >= 1, got {value!r}")


def build_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model and record its name and kwargs on it (see `model_arch`)."""
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(model_names())}"
        ) from None
    _check_data_kwargs(name, kwargs)
    model = factory(**kwargs)
    setattr(model, ARCH_ATTR, {"name": name, "kwargs": _resolved_kwargs(factory, kwargs)})
    return model


def model_arch(model: nn.Module) -> dict[str, Any]:
    """A copy of {"name", "kwargs"} that `build_model` recorded; rebuilds the same network."""
    arch = getattr(model, ARCH_ATTR, None)
    if not isinstance(arch, dict):
        raise ValueError(
            f"{type(model).__name__} was not built by build_model, so its arch is unknown; "
            "build it with models.build_model(name, **kwargs)"
        )
    return {"name": arch["name"], "kwargs": dict(arch["kwargs"])}
