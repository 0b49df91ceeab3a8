"""From a compressed file to a working network: decode, build the named model, load weights.

``load(path or bytes)`` is the one call for inference: the network in eval mode, on the device
asked for. ``load_with_info`` also returns the decoded file (arch, provenance, tensors), and
``deepcompression.format.decoder.read_info`` describes a file without decoding it. The network
classes come from the project's registry whatever the caller's sys.path holds
(``deepcompression.networks``).
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import nn

from deepcompression.format.decoder import decode_model
from deepcompression.format.info import DecodedModel
from deepcompression.format.spec import DEFAULT_MAX_DECODED_BYTES
from deepcompression.networks import UnknownModelError, build_model

Source = bytes | bytearray | memoryview | str | os.PathLike[str]
"""A compressed file: its bytes, or the path to read them from."""


class ModelBuildError(ValueError):
    """A file decoded, but its weights do not fit the network its header names."""


def load(
    source: Source,
    device: torch.device | str = "cpu",
    *,
    max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES,
) -> nn.Module:
    """The network a compressed file holds, weights loaded and in eval mode: ready to predict.

    ``source`` is the file's bytes or its path; errors are those of ``load_with_info``.
    """
    return load_with_info(source, device, max_decoded_bytes=max_decoded_bytes)[0]


def load_with_info(
    source: Source,
    device: torch.device | str = "cpu",
    *,
    max_decoded_bytes: int | None = DEFAULT_MAX_DECODED_BYTES,
) -> tuple[nn.Module, DecodedModel]:
    """Decode a file, build the registered model its header names with the header's kwargs.

    ``arch = {"name": registry name, "kwargs": constructor keyword arguments}`` (kwargs optional).
    Weights load strictly; a raw tensor stored in another dtype (e.g. a float16 bias) is cast to
    the parameter's dtype; the model is returned in eval mode. Raises OSError for an unreadable
    path, FormatError for a bad file (DecodedTooLarge above ``max_decoded_bytes``),
    UnknownModelError for an unregistered architecture and ModelBuildError when the network
    cannot be built with the kwargs or the tensors do not fit.
    """
    decoded = decode_model(_file_bytes(source), max_decoded_bytes=max_decoded_bytes)
    name, kwargs = _arch(decoded.arch)
    _check_fit_on_meta(name, kwargs, decoded.state_dict)
    model = _build(name, kwargs, device=None)
    try:
        model.load_state_dict(decoded.state_dict, strict=True)
    except RuntimeError as err:
        raise ModelBuildError(f"weights do not fit model {name!r}: {err}") from None
    return model.to(device).eval(), decoded


def _file_bytes(source: Source) -> bytes:
    """The bytes of ``source``: itself when bytes-like, else the file at that path."""
    if isinstance(source, bytes | bytearray | memoryview):
        return bytes(source)
    if isinstance(source, str | os.PathLike):
        with open(source, "rb") as handle:
            return handle.read()
    raise TypeError(
        f"expected the file's bytes or its path, got {type(source).__name__}; pass "
        "Path('model.dcz') or its bytes"
    )


def _arch(arch: dict) -> tuple[str, dict[str, Any]]:
    """The registry name and constructor kwargs a header's ``arch`` names."""
    name, kwargs = arch.get("name"), arch.get("kwargs", {})
    if not isinstance(name, str) or not isinstance(kwargs, dict):
        raise ModelBuildError(
            f"header arch must be {{'name': str, 'kwargs': dict}}, got {_short(repr(arch))}"
        )
    return name, kwargs


def _build(name: str, kwargs: dict[str, Any], device: str | None) -> nn.Module:
    """``build_model(name, **kwargs)`` (on ``device`` if given), any failure a ModelBuildError."""
    try:
        if device is None:
            return build_model(name, **kwargs)
        with torch.device(device):
            return build_model(name, **kwargs)
    except UnknownModelError:
        raise
    except Exception as err:  # a constructor may reject hostile kwargs in any way
        raise ModelBuildError(
            f"cannot build model {name!r} with kwargs {_short(repr(kwargs))}: "
            f"{type(err).__name__}: {err}"
        ) from None


def _check_fit_on_meta(name: str, kwargs: dict[str, Any], state: dict[str, torch.Tensor]) -> None:
    """Compare names and shapes on a storage-free meta-device build before allocating the model.

    Keeps kwargs from a file (``{"num_classes": 10**9}``) from allocating a huge network. A
    model that cannot be built on the meta device skips this check (the real build decides).
    """
    try:
        meta = _build(name, kwargs, device="meta")
    except ModelBuildError:
        return
    expected = {key: tuple(value.shape) for key, value in meta.state_dict().items()}
    stored = {key: tuple(value.shape) for key, value in state.items()}
    if expected == stored:
        return
    missing = [key for key in expected if key not in stored]
    unexpected = [key for key in stored if key not in expected]
    mismatched = [
        f"{key}: file {stored[key]}, model {shape}"
        for key, shape in expected.items()
        if key in stored and stored[key] != shape
    ]
    raise ModelBuildError(
        f"weights do not fit model {name!r}: missing {_short(repr(missing))}, "
        f"unexpected {_short(repr(unexpected))}, shape mismatches {_short(repr(mismatched))}"
    )


def _short(text: str, limit: int = 300) -> str:
    """``text`` cut to ``limit`` characters so messages stay readable."""
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"
