"""A compressed file as the command line uses it (``eval``, ``predict``, ``export``): the device,
the file decoded into its network in eval mode with one-line errors, the data shape it was built
for, and the refusal to use MNIST for a file made for other data."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cli.errors import CliError, not_a_model, path_text, read_input
from cli.text import shown
from deepcompression.format.container import DecodedModel, FormatError

DEFAULT_DATA = Path("data")
DATA_HELP = "folder holding MNIST/raw, or a prepared data/<name> folder (meta.json)"


def device_of(name: str) -> torch.device:
    """The torch device for ``--device`` (auto, cpu or cuda); an unusable one is a CliError."""
    from deepcompression.training import resolve_device

    try:
        return resolve_device(name)
    except RuntimeError as err:
        raise CliError(str(err)) from None


def load_network(
    path: Path, device: torch.device | str, max_decoded_bytes: int | None
) -> tuple[nn.Module, DecodedModel]:
    """The file at `path` decoded into its network (eval mode, on `device`) and the decoded
    file; a bad file, an unknown architecture or weights that do not fit are a CliError."""
    from deepcompression.format.loader import ModelBuildError, UnknownModelError, load_with_info

    data = read_input(path)
    try:
        return load_with_info(data, device, max_decoded_bytes=max_decoded_bytes)
    except FormatError as err:
        raise not_a_model(path, err) from None
    except (UnknownModelError, ModelBuildError) as err:
        raise CliError(f"{path_text(path)}: {err}") from None


def data_kwargs(model: Any, arch: dict) -> dict[str, Any]:
    """in_channels, image_size and num_classes the network was built with: the header's
    arch.kwargs, the model factory's defaults where the header leaves one out."""
    from deepcompression.networks import DATA_KWARGS, model_arch

    try:
        built = model_arch(model)["kwargs"]
    except (ValueError, KeyError, TypeError):
        built = {}
    given = arch.get("kwargs")
    recorded = given if isinstance(given, dict) else {}
    merged = {**built, **recorded}
    return {key: merged[key] for key in DATA_KWARGS if key in merged}


def kwargs_text(kwargs: dict[str, Any]) -> str:
    """``in_channels=3, image_size=32, num_classes=10``, values from a file shown escaped."""
    return ", ".join(f"{key}={shown(repr(value), 40)}" for key, value in kwargs.items())


def _recorded_data_name(provenance: dict) -> str | None:
    """The data.name of a non-MNIST dataset the file's provenance records (the pipeline's), if
    any: its prepared folder is ``data/<name>``. None for MNIST or when nothing usable is there."""
    from deepcompression.config import DataConfig

    params = provenance.get("params")
    data = params.get("data") if isinstance(params, dict) else None
    if not isinstance(data, dict):
        return None
    name, source, dataset = data.get("name"), data.get("source"), data.get("dataset")
    if not isinstance(name, str) or not isinstance(source, str):
        return None
    if DataConfig(source=source, dataset=str(dataset)).is_mnist:  # type: ignore[arg-type]
        return None
    plain = re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name)
    return name if plain else None


def check_default_data(path: Path, kwargs: dict[str, Any], provenance: dict) -> None:
    """Without --data, refuse a file made for other data than MNIST, naming the folder to pass."""
    from deepcompression.data.mnist import MNIST_SHAPE

    mnist = MNIST_SHAPE.model_kwargs()
    name = _recorded_data_name(provenance)
    differs = {key: value for key, value in kwargs.items() if mnist.get(key) != value}
    if not differs and name is None:
        return
    made_for = f"data of {kwargs_text(kwargs)}" if differs else f"the data set {name!r}"
    folder = f"--data {DEFAULT_DATA / name}" if name is not None else "--data data/<name>"
    raise CliError(
        f"{path_text(path)} was made for {made_for}, not MNIST (the default test set): pass the "
        f"prepared folder of the data it was made for, {folder} (a folder holding meta.json)."
    )
