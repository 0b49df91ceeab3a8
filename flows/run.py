"""Command-line entry for one DVC stage or the whole pipeline: `python -m flows.run STAGE`.

Points the process at the project's local Prefect server first (starting it when none answers), so
every stage's run is recorded in one place and shows in the UI; runs are tagged with the model
and a hash of the params.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from flows.server import ensure_api_url

STAGES = {
    "data": "flows.data:data_flow",
    "train": "flows.train:train_flow",
    "prune": "flows.prune:prune_flow",
    "quantize": "flows.quantize:quantize_flow",
    "encode": "flows.encode:encode_flow",
    "evaluate": "flows.evaluate:evaluate_flow",
    "plots": "flows.plots:plots_flow",
    "pipeline": "flows.pipeline:pipeline_flow",
}


def load_flow(stage: str):
    """Import the flow object of `stage` lazily (after the API URL is set)."""
    module, name = STAGES[stage].split(":")
    return getattr(importlib.import_module(module), name)


def main(argv: list[str] | None = None) -> int:
    """Validate params, then run the stage's flow under tags `model:<name>` and `params:<hash>`."""
    parser = argparse.ArgumentParser(prog="python -m flows.run", description=__doc__)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--root", default=".", help="folder the pipeline reads and writes under")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params key (e.g. model.name=lenet5); needs --root other than '.', "
        "where the merged params are written (use `dvc exp run -S` in the main workspace)",
    )
    args = parser.parse_args(argv)

    from deepcompression.config import ConfigError
    from flows.params import load_params, params_hash, write_overridden_params

    try:
        if args.set:
            if Path(args.root).resolve() == Path.cwd().resolve():
                raise ConfigError("--set needs --root DIR: the merged params go to DIR/params.yaml")
            args.params = str(write_overridden_params(args.params, args.set, Path(args.root)))
        params, _ = load_params(args.params)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    ensure_api_url()
    from prefect import tags

    with tags(f"model:{params.model.name}", f"params:{params_hash(params)}"):
        load_flow(args.stage)(params_path=args.params, root=args.root)
    return 0


if __name__ == "__main__":
    sys.exit(main())
