"""``deepcompression predict FILE INPUT...``: decode a compressed-model file into its network and
print, per input image, the most probable class and the top probabilities.

Inputs are image files, uint8 IDX image files or folders of either (``cli.inputs``). How images
become the network's input (channels, side, mean and std) and the class names come from the
file's stored input spec (format version 4) first, else ``--data DIR``'s ``meta.json`` (a
prepared ``data/<name>`` folder); without either the file must be an MNIST network and MNIST's
normalisation is used (``deepcompression.inference``). Classes without names print as their
indices.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cli.errors import EXIT_OK, CliError, path_text
from cli.inputs import read_inputs
from cli.network import (
    DATA_HELP,
    check_default_data,
    data_kwargs,
    device_of,
    kwargs_text,
    load_network,
)
from cli.text import print_json, shown, write_line
from deepcompression.format.container import InputMeta
from deepcompression.inference import MNIST_INPUT, InputSpec, Prediction, mismatches, predict

DEFAULT_TOP = 3
DEFAULT_PREDICT_BATCH = 256


def spec_of_folder(root: Path) -> InputSpec:
    """The input spec of a data folder: a prepared one's meta.json, MNIST's for ``data/MNIST``
    (or ``data``, which holds it); anything else is a CliError naming the folder."""
    from deepcompression.data.errors import DataError
    from deepcompression.data.files import stage_reader
    from deepcompression.data.load import MNIST_RAW
    from deepcompression.data.prepared import META_FILE, read_meta

    if (root / META_FILE).is_file():
        try:
            return InputSpec.from_meta(read_meta(stage_reader(root), str(root)))
        except (OSError, DataError) as err:
            raise CliError(f"{path_text(root)}: {err}") from None
    if any((folder / MNIST_RAW).is_dir() for folder in (root, root / "MNIST")):
        return MNIST_INPUT
    raise CliError(
        f"--data {path_text(root)}: no {META_FILE} and no MNIST/raw there; pass --data DIR "
        f"({DATA_HELP}), the data the file was made for."
    )


def input_spec(
    path: Path,
    data: Path | None,
    kwargs: dict[str, Any],
    provenance: dict,
    stored: InputMeta | None = None,
) -> InputSpec:
    """The spec to predict with: the file's `stored` one, else --data's, else MNIST's for an
    MNIST network; a network built for another shape or class count than the spec's is a
    CliError."""
    if stored is not None:
        spec = InputSpec.from_stored(stored)
    elif data is None:
        check_default_data(path, kwargs, provenance)
        spec = MNIST_INPUT
    else:
        spec = spec_of_folder(data)
    wrong = mismatches(spec, kwargs)
    if wrong:
        raise CliError(
            f"{path_text(path)} holds a network built for {kwargs_text(kwargs)}, but the inputs "
            f"are described as {kwargs_text(spec.model_kwargs())} ({'; '.join(wrong)}); pass "
            "--data with the folder of the data the file was made for."
        )
    return spec


def _label(spec: InputSpec, index: int) -> str:
    """A class for display: ``3 (cat)`` when named, else ``3``."""
    name = spec.class_name(index)
    return str(index) if name is None else f"{index} ({shown(name, 40)})"


def format_prediction(name: str, prediction: Prediction, spec: InputSpec, top: int) -> str:
    """``digit.png: 7 (98.12%); top 3: 7 98.12%, 1 1.01%, 9 0.32%``."""
    best = prediction.best
    ranked = ", ".join(f"{_label(spec, c)} {100 * p:.2f}%" for c, p in prediction.top(top))
    return (
        f"{shown(name)}: {_label(spec, best)} {100 * prediction.probabilities[best]:.2f}%; "
        f"top {min(top, len(prediction.probabilities))}: {ranked}"
    )


def _as_json(name: str, prediction: Prediction, spec: InputSpec, top: int) -> dict[str, Any]:
    """One input's prediction as a JSON object (class names null when unknown)."""
    return {
        "input": name,
        "class": prediction.best,
        "name": spec.class_name(prediction.best),
        "probability": prediction.probabilities[prediction.best],
        "top": [
            {"class": c, "name": spec.class_name(c), "probability": p}
            for c, p in prediction.top(top)
        ],
    }


def run_predict(args: argparse.Namespace) -> int:
    """``predict``: the file's network on every input image, one line (or JSON entry) each."""
    device = device_of(args.device)
    model, decoded = load_network(args.file, device, args.max_decoded_bytes)
    kwargs = data_kwargs(model, decoded.arch)
    spec = input_spec(args.file, args.data, kwargs, decoded.provenance, decoded.input)
    inputs = read_inputs(args.inputs, spec)
    predictions = predict(model, inputs.images, spec, args.batch_size)
    pairs = list(zip(inputs.names, predictions, strict=True))
    if args.json:
        entries = [_as_json(name, p, spec, args.top) for name, p in pairs]
        print_json({"file": str(args.file), "predictions": entries}, sys.stdout)
        return EXIT_OK
    for name, prediction in pairs:
        write_line(format_prediction(name, prediction, spec, args.top), sys.stdout)
    return EXIT_OK
