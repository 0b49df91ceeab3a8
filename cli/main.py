"""The ``deepcompression`` command line: inspect a compressed-model file (``cli.inspect``),
evaluate it on its data (``cli.evaluate``), predict the classes of images (``cli.predict``) or
export its network to ONNX (``cli.export``).

An application edge: it reads files and prints, while all logic lives in the library. Every error
ends as one ``deepcompression: error: ...`` line on stderr (``cli.errors``) and a non-zero exit
code; text from a file or the command line is printed escaped (``cli.text``).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import re
import sys
import tomllib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TextIO

from cli.errors import (
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    PROG,
    CliError,
    error_line,
)
from cli.evaluate import DATA_HELP, DEFAULT_BATCH_SIZE, DEFAULT_DATA, run_eval
from cli.export import run_export
from cli.inspect import DEFAULT_MAX_ROWS, run_inspect
from cli.predict import DEFAULT_PREDICT_BATCH, DEFAULT_TOP, run_predict
from cli.text import printable, write_line
from deepcompression.format.container import DEFAULT_MAX_DECODED_BYTES

DISTRIBUTION = "deep-compression"
Subcommands = argparse._SubParsersAction  # what add_subparsers returns


def package_version() -> str:
    """The installed distribution's version, else the version in the source tree's pyproject."""
    try:
        return importlib.metadata.version(DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        pass
    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        project = tomllib.loads(pyproject.read_text(encoding="utf-8")).get("project", {})
    except (OSError, tomllib.TOMLDecodeError):
        return "unknown"
    if project.get("name") != DISTRIBUTION:
        return "unknown"
    return str(project.get("version", "unknown"))


_SIZE = re.compile(r"\s*(\d+)\s*(b|kb|mb|gb|tb|kib|mib|gib|tib)?\s*", re.IGNORECASE | re.ASCII)
_UNITS = {"b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12}
_UNITS |= {"kib": 1 << 10, "mib": 1 << 20, "gib": 1 << 30, "tib": 1 << 40}


def byte_size(text: str) -> int:
    """argparse type for a byte count: ``1000000``, ``512MiB``, ``2GiB`` or ``1GB``."""
    match = _SIZE.fullmatch(text)
    if not match:
        raise argparse.ArgumentTypeError(
            f"expected a byte count such as 1000000, 512MiB or 2GiB, got {printable(text)!r}"
        )
    return int(match[1]) * _UNITS[(match[2] or "b").lower()]


def _positive_int(text: str) -> int:
    """argparse type for counts that must be at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, got {printable(text)!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for ``deepcompression`` and its commands."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Inspect, evaluate, predict with or export Deep Compression model files.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {package_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    inspect = commands.add_parser(
        "inspect", help="per-layer sizes and compression ratios of a compressed file"
    )
    inspect.add_argument("file", type=Path, metavar="FILE", help="compressed-model file")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")
    inspect.add_argument(
        "--all",
        action="store_true",
        help=f"list every tensor (default: the first {DEFAULT_MAX_ROWS}, then a count)",
    )
    inspect.set_defaults(handler=run_inspect)

    evaluate = commands.add_parser(
        "eval",
        help="decode a file and measure it on a test set (MNIST or a prepared data/<name> folder)",
    )
    evaluate.add_argument("file", type=Path, metavar="FILE", help="compressed-model file")
    evaluate.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"{DATA_HELP} (default: {DEFAULT_DATA}, i.e. {DEFAULT_DATA}/MNIST/raw)",
    )
    evaluate.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    evaluate.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_BATCH_SIZE,
        metavar="N",
        help="evaluation batch size (default: %(default)s)",
    )
    _add_max_decoded_bytes(evaluate)
    evaluate.add_argument(
        "--max-preload-bytes",
        type=byte_size,
        default=None,
        metavar="SIZE",
        help="stream the test images from their file when they take more than SIZE bytes as "
        "float32 (default: params.yaml's data.max_preload_bytes default, 2000000000)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=run_eval)
    _add_predict(commands)
    _add_export(commands)
    return parser


def _add_max_decoded_bytes(parser: argparse.ArgumentParser) -> None:
    """--max-decoded-bytes, the decoder's limit on what a file may allocate."""
    parser.add_argument(
        "--max-decoded-bytes",
        type=byte_size,
        default=DEFAULT_MAX_DECODED_BYTES,
        metavar="SIZE",
        help="refuse files whose tensors decode to more than SIZE bytes, e.g. 2GiB "
        "(default: %(default)s)",
    )


def _add_predict(commands: Subcommands) -> None:
    """The ``predict`` command: top classes of images, IDX files or folders of them."""
    predict = commands.add_parser(
        "predict", help="decode a file and print the top classes of images (PNG/JPEG, IDX, folders)"
    )
    predict.add_argument("file", type=Path, metavar="FILE", help="compressed-model file")
    predict.add_argument(
        "inputs",
        type=Path,
        nargs="+",
        metavar="INPUT",
        help="image file (PNG, JPEG...), uint8 IDX image file, or a folder of them",
    )
    predict.add_argument(
        "--data",
        type=Path,
        default=None,
        metavar="DIR",
        help=f"{DATA_HELP}, giving the inputs' normalisation and class names when the file stores "
        "none (default: the file's own, else MNIST's for a file made for MNIST)",
    )
    predict.add_argument(
        "--top",
        type=_positive_int,
        default=DEFAULT_TOP,
        metavar="K",
        help="classes listed per input (default: %(default)s)",
    )
    predict.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    predict.add_argument(
        "--batch-size",
        type=_positive_int,
        default=DEFAULT_PREDICT_BATCH,
        metavar="N",
        help="images per forward pass (default: %(default)s)",
    )
    _add_max_decoded_bytes(predict)
    predict.add_argument("--json", action="store_true", help="print one JSON object")
    predict.set_defaults(handler=run_predict)


def _add_export(commands: Subcommands) -> None:
    """The ``export`` command: the decoded network as an ONNX model."""
    export = commands.add_parser("export", help="write a file's decoded network as an ONNX model")
    export.add_argument("file", type=Path, metavar="FILE", help="compressed-model file")
    export.add_argument(
        "--onnx",
        type=Path,
        required=True,
        metavar="OUT",
        help="ONNX file to write (input 'input' float32 (batch, C, S, S), output 'logits'); "
        "needs pip install 'deep-compression[export]'",
    )
    _add_max_decoded_bytes(export)
    export.set_defaults(handler=run_export)


def _report_error(message: str, err: TextIO) -> None:
    write_line(error_line(message), err)


def _parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace | int:
    """Parse arguments; argparse's own exits (usage errors, --help, --version) become a code."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_:
        code = exit_.code
        return code if isinstance(code, int) else EXIT_USAGE


def _silence_stdout() -> None:
    """After a closed pipe (``inspect --all | head``), send the rest of stdout to /dev/null."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: sys.argv[1:]) and return the exit code."""
    parsed = _parse(build_parser(), argv)
    if isinstance(parsed, int):
        return parsed
    handler: Callable[[argparse.Namespace], int] = parsed.handler
    try:
        return handler(parsed)
    except CliError as err:
        _report_error(str(err), sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        _report_error("interrupted", sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_FAILURE
    except Exception as err:  # the command line never shows a traceback
        _report_error(f"unexpected {type(err).__name__}: {err}", sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
