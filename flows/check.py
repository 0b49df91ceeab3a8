"""DVC stage `check`: validate the params and the input files before any stage touches outputs.

DVC removes a stage's outputs before running it, so every fault found here (a typo in
params.yaml, a missing or corrupt data file, a checkpoint that does not fit its network) fails
before the last good outputs are gone. The stage runs at every `dvc repro` (always_changed: input
files are not DVC dependencies); its outputs are a constant marker every stage depends on, and per
model a record of the external files it reads (`checks/inputs/<model>.json`, the sha256 of its
`train.checkpoint`), which changes only when their content does: `train@<model>` depends on it.
The `schedule:` section is the scheduled reruns' (no stage reads it): `python -m runtime.schedule`
checks it when it serves or deploys.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from deepcompression.config import ConfigError, Params
from flows.inputs import InputError, check_data, check_inputs
from flows.params import read_params
from flows.template import new_model_text
from models import model_names

OK_FILE = Path("checks") / "params.ok"
OK_TEXT = "params.yaml is valid\n"
INPUTS_DIR = Path("checks") / "inputs"
"""Per model, the sha256 of the external files its stages read (the `train` stage's dep)."""


def write_records(folder: Path, records: dict[str, dict]) -> None:
    """One JSON record per model in `folder`, rewritten only when its content changes."""
    folder.mkdir(parents=True, exist_ok=True)
    for model, record in records.items():
        path = folder / f"{model}.json"
        text = json.dumps(record, sort_keys=True, indent=1) + "\n"
        if not path.exists() or path.read_text() != text:
            path.write_text(text)


def check_model(params: Params, model: str) -> None:
    """`model` must have a section under `models` (what `make run MODEL=...` reproduces)."""
    if model in params.models:
        return
    hint = (
        f"; {model} is a registered network: `python -m flows.check --new-model {model}` "
        "prints a section to add"
        if model in model_names()
        else ""
    )
    raise ConfigError(
        f"MODEL={model}: params.yaml has no section models.{model}; models there: "
        f"{', '.join(params.models)}{hint}"
    )


def check(params_path: str = "params.yaml", root: str = ".", model: str | None = None) -> int:
    """Validate the params (and that `model`, when given, is one of them) and the inputs; write
    the marker and the records on success, else print the error and return 2."""
    try:
        params = read_params(params_path)
        if model is not None:
            check_model(params, model)
        records = check_inputs(params, Path(root) / "data" / params.data.name)
    except (ConfigError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(root) / OK_FILE
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(OK_TEXT)
    write_records(Path(root) / INPUTS_DIR, records)
    return 0


def print_new_model(name: str, params_path: str = "params.yaml", root: str = ".") -> int:
    """Print a commented `models:` entry for registered network `name`, sized for the data of
    the params file; print the error and return 2 when it cannot be."""
    try:
        params = read_params(params_path)
        shape = check_data(params.data, Path(root) / "data" / params.data.name)
        if shape is None:
            raise ConfigError(
                f"--new-model {name}: the data's shape is known once it is prepared; run "
                "`dvc repro data` first"
            )
        base = yaml.safe_load(Path(params_path).read_text())["models"]
        print(new_model_text(name, next(iter(base.values())), shape), end="")
    except (ConfigError, InputError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m flows.check [PARAMS [ROOT]] [--model NAME] [--new-model NAME]`."""
    parser = argparse.ArgumentParser(prog="python -m flows.check", description=__doc__)
    parser.add_argument("params", nargs="?", default="params.yaml", help="the params file")
    parser.add_argument("root", nargs="?", default=".", help="the project folder")
    parser.add_argument(
        "--new-model",
        metavar="NAME",
        help="print a commented models: entry for registered network NAME, sized from the data "
        "and the network's layers (paste it under models: in params.yaml)",
    )
    parser.add_argument(
        "--model", metavar="NAME", help="also check that NAME is a section of models: (make run)"
    )
    args = parser.parse_args(argv)
    if args.new_model:
        return print_new_model(args.new_model, args.params, args.root)
    return check(args.params, args.root, args.model)


if __name__ == "__main__":
    sys.exit(main())
