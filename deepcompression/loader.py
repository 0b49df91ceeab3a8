"""From compressed-file bytes to a working network: decode, build the named model, load weights."""

from __future__ import annotations

import torch
from torch import nn

from deepcompression.container import DecodedModel, decode_model
from models import build_model


class ModelBuildError(ValueError):
    """A file decoded, but its weights do not fit the network its header names."""


def load_model(data: bytes, device: torch.device | str = "cpu") -> tuple[nn.Module, DecodedModel]:
    """Decode `data`, build the registered model named in its header and load the weights strictly.

    Raises FormatError for a bad file, UnknownModelError for an unregistered architecture and
    ModelBuildError when the decoded tensors do not match the network's parameters.
    """
    decoded = decode_model(data)
    arch = decoded.arch
    name, kwargs = arch.get("name"), arch.get("kwargs", {})
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ModelBuildError(f"header arch must be {{'name': str, 'kwargs': dict}}, got {arch!r}")
    try:
        model = build_model(name, **kwargs)
        model.load_state_dict(decoded.state_dict, strict=True)
    except (TypeError, RuntimeError) as err:
        raise ModelBuildError(f"weights do not fit model {name!r}: {err}") from None
    return model.to(device), decoded
