"""Command-line entry for one DVC stage or the whole pipeline: `python -m flows.run STAGE`.

Points the process at the project's local Prefect server first (starting it when none answers), so
every stage's run is recorded in one place and shows in the UI; runs are tagged with the model
and a hash of the params. A Prefect outage never stops the stage (runtime/guard.py): it computes and
writes its outputs, warns once, and its records are caught up when the server is back.
When the warm runner of `python -m runtime.server start` answers (runtime/warm.py), the stage runs
forked from it, torch and Prefect already imported; this process imports neither, passes it its
stdio and relays signals and the exit status (runtime/handoff.py).
The pinned numerics (deepcompression/numerics.py) are set in the environment before anything
imports torch, and torch's threads from `run.threads` before the stage runs.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from deepcompression.numerics import pin_environment

pin_environment(os.environ)  # before torch is imported: ATen, MKL and oneDNN read it as they load

from runtime.guard import connect, run_stage  # noqa: E402
from runtime.handoff import Request, hand_off  # noqa: E402
from runtime.timing import StageClock, timing_path, write_record  # noqa: E402

IMPORTED_AT = time.perf_counter()
"""When this module and its imports (no torch, no Prefect) were loaded: the `imports` mark."""

STAGES = {
    "data": "flows.data:data_flow",
    "train": "flows.train:train_flow",
    "prune": "flows.prune:prune_flow",
    "quantize": "flows.quantize:quantize_flow",
    "encode": "flows.encode:encode_flow",
    "evaluate": "flows.evaluate:evaluate_flow",
    "plots": "flows.plots:plots_flow",
    "sensitivity": "flows.sensitivity:sensitivity_flow",
    "search": "flows.search:search_flow",
    "confirm": "flows.confirm:confirm_flow",
    "pipeline": "flows.pipeline:pipeline_flow",
}
SHARED_STAGES = ("data", "pipeline")
"""Stages that are not run per model."""


def load_flow(stage: str):
    """Import the flow object of `stage` lazily (after the API URL is set)."""
    module, name = STAGES[stage].split(":")
    return getattr(importlib.import_module(module), name)


def run_timed(
    stage: str, model: str | None, clock: StageClock, kwargs: dict[str, Any], threads: int
) -> None:
    """Run the stage's flow with `kwargs` on `threads` torch threads (deterministic algorithms
    on); write its timing record however it ends."""
    from deepcompression.numerics import pin_torch
    from runtime.stageflow import staged

    stage_flow = staged(load_flow(stage), clock)
    pin_torch(threads)
    clock.mark("flow_import")
    completed = False
    try:
        run_stage(stage_flow, **kwargs)
        completed = True
    finally:
        clock.mark("ended")
        record = clock.record(stage, model, completed)
        write_record(timing_path(kwargs["root"], stage, model), record)


def build_parser() -> argparse.ArgumentParser:
    """The command line: STAGE [--params FILE] [--root DIR] [--model NAME] [--set KEY=VALUE]."""
    parser = argparse.ArgumentParser(prog="python -m flows.run", description=__doc__)
    parser.add_argument("stage", choices=sorted(STAGES))
    parser.add_argument("--params", default="params.yaml", help="params file (default params.yaml)")
    parser.add_argument("--root", default=".", help="folder the pipeline reads and writes under")
    parser.add_argument(
        "--model",
        help="the model whose stage runs (a key of params.yaml's `models`); required for every "
        "stage but data and pipeline (where it restricts the pipeline to one model)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a params key (e.g. models.lenet5.train.epochs=5); needs --root other than "
        "'.', "
        "where the merged params are written (use `dvc exp run -S` in the main workspace)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Hand the stage to the warm runner (runtime/warm.py) and relay how it ended; when there is
    none or it refuses, run the stage in this process."""
    clock = StageClock.since_process_start()
    clock.mark("imports", at=IMPORTED_AT)
    arguments = sys.argv[1:] if argv is None else list(argv)
    build_parser().parse_args(arguments)  # usage errors answer here, at once
    request = Request.from_caller(arguments, clock.started_at, clock.marks["imports"])
    outcome = hand_off(request)
    if outcome.ran:
        return outcome.exit_status()
    clock.runner_note = outcome.reason
    return run_command(arguments, clock)


def run_command(arguments: list[str], clock: StageClock, parent_pid: int | None = None) -> int:
    """Validate params, then run the stage's flow tagged with its model, params hash, stage and
    the `dvc repro` invocation that started it (an ancestor of `parent_pid`, by default this
    process's parent); its timing goes to runs/ (runtime/timing.py)."""
    args = build_parser().parse_args(arguments)

    from deepcompression.config import ConfigError
    from flows.params import load_params, params_hash, write_overridden_params

    try:
        if args.set:
            if Path(args.root).resolve() == Path.cwd().resolve():
                raise ConfigError("--set needs --root DIR: the merged params go to DIR/params.yaml")
            args.params = str(write_overridden_params(args.params, args.set, Path(args.root)))
        if args.model is None and args.stage not in SHARED_STAGES:
            raise ConfigError(f"stage {args.stage!r} needs --model NAME (a key of `models`)")
        params, _ = load_params(args.params, args.model)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    clock.mark("params")
    connect()
    clock.mark("connect")
    from prefect import tags

    quiet_console_failures()
    try:
        with tags(*stage_tags(args, params_hash(params), parent_pid)):
            run_timed(args.stage, args.model, clock, flow_kwargs(args), params.run.threads)
    except Exception as exc:  # every failure of the stage: said once, its traceback to a file
        return report_failure(args, exc)
    return 0


class _NoFailureEcho(logging.Filter):
    """Keeps Prefect's flow/task run failure records (traceback, 'Finished in state Failed')
    off the console: the stage says the error once; the records still reach the Prefect API."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(("prefect.flow_runs", "prefect.task_runs")):
            return True
        return not (record.exc_info or str(record.msg).startswith("Finished in state Failed"))


def quiet_console_failures() -> None:
    """Add `_NoFailureEcho` to the console handlers Prefect's logging set up (once)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler) and not any(
            isinstance(f, _NoFailureEcho) for f in handler.filters
        ):
            handler.addFilter(_NoFailureEcho())


def error_log_path(root: str, stage: str, model: str | None) -> Path:
    """`runs/<model>/<stage>-error.log` (`runs/shared/...` without a model): the last failure's
    traceback."""
    return Path(root) / "runs" / (model or "shared") / f"{stage}-error.log"


def report_failure(args: argparse.Namespace, exc: Exception) -> int:
    """Write the traceback to the error log; print the error once, where the traceback is and
    how to get the stage's previous outputs back. Returns the exit status, 1."""
    path = error_log_path(args.root, args.stage, args.model)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(traceback.format_exception(exc)))
        where = f"traceback in {path}"
    except OSError as err:
        where = f"traceback not written to {path}: {err.strerror or err}"
    text = str(exc) if isinstance(exc, ValueError) else f"{type(exc).__name__}: {exc}"
    name = args.stage if args.model is None else f"{args.stage}@{args.model}"
    print(
        f"error: {name}: {text}\n  ({where}. DVC removes a stage's outputs before running it: "
        f"`dvc checkout {name}` restores the previous ones from its cache.)",
        file=sys.stderr,
    )
    return 1


def stage_tags(
    args: argparse.Namespace, params_tag: str, parent_pid: int | None = None
) -> list[str]:
    """Run tags: params hash, stage, model and the `dvc repro` invocation, when known."""
    from runtime.runinfo import invocation_tag

    run_tags = [f"params:{params_tag}", f"stage:{args.stage}"]
    if args.model is not None:
        run_tags.append(f"model:{args.model}")
    if (repro := invocation_tag(parent_pid)) is not None:
        run_tags.append(repro)
    return run_tags


def flow_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The flow's arguments: params file, root and the model (the pipeline: a list of one)."""
    kwargs: dict[str, Any] = {"params_path": args.params, "root": args.root}
    if args.model is not None:
        kwargs["models" if args.stage == "pipeline" else "model"] = (
            [args.model] if args.stage == "pipeline" else args.model
        )
    return kwargs


if __name__ == "__main__":
    try:
        sys.exit(main())
    finally:
        # The exit's final garbage collections skip what the imports made (torch, Prefect):
        # ~1-3 s less per stage process; every object is still freed by its reference count.
        gc.freeze()
