"""The ``deepcompression`` command line: inspect a compressed-model file or evaluate it on its data.

An application edge: it reads files and prints, while all logic lives in the library. Every error
ends as one ``deepcompression: error: ...`` line on stderr (at most 500 characters) and a non-zero
exit code. Text from a file (tensor names, arch, provenance) or the command line is printed with
control characters, surrogates and other non-printables escaped, so a hostile file cannot drive
the terminal or crash the output. ``eval`` imports the models, training and data readers lazily
(library code only, never Prefect), so ``inspect`` and ``--version`` start quickly.

``eval --data DIR`` finds the test set in ``DIR``: a prepared ``data/<name>`` folder
(``DIR/meta.json``, any image data), else MNIST's four IDX files in ``DIR/raw`` (the data stage's
``data/MNIST``) or in ``DIR/MNIST/raw`` (the default ``--data data``). A test set whose images
take over ``--max-preload-bytes`` as float32 is streamed from its file in batches.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import re
import sys
import time
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from deepcompression.format.container import (
    DEFAULT_MAX_DECODED_BYTES,
    KIND_HUFFMAN,
    DecodedTooLarge,
    FileInfo,
    FormatError,
    LayerInfo,
    read_info,
)
from deepcompression.format.sizes import ModelSizes, model_sizes

PROG = "deepcompression"
DISTRIBUTION = "deep-compression"
DEFAULT_DATA = Path("data")
DATA_HELP = "folder holding MNIST/raw, or a prepared data/<name> folder (meta.json)"
DEFAULT_BATCH_SIZE = 1000
DEFAULT_MAX_ROWS = 100
"""Tensors ``inspect`` lists before summarising the rest (``--all`` lists every one)."""
MAX_ERROR_CHARS = 500
MAX_CELL_CHARS = 64
MAX_VALUE_CHARS = 200
TRUNCATED = "... (truncated)"
EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

__all__ = [
    "CliError",
    "DEFAULT_MAX_ROWS",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "MAX_ERROR_CHARS",
    "build_parser",
    "byte_size",
    "error_line",
    "format_eval",
    "format_inspect",
    "inspect_report",
    "main",
    "package_version",
    "printable",
]


class CliError(Exception):
    """A failure to report as one stderr line with ``exit_code`` (2: bad usage or bad input)."""

    def __init__(self, message: str, exit_code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.exit_code = exit_code


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


def printable(text: str) -> str:
    """``text`` with every non-printable character (controls, surrogates...) as an escape.

    ESC becomes ``\\x1b``, a newline ``\\x0a``, a lone surrogate ``\\ud800``; printable Unicode
    (accents, CJK, emoji) stays as it is.
    """
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else _escape(char) for char in text)


def _escape(char: str) -> str:
    """The ``\\xNN`` / ``\\uNNNN`` / ``\\UNNNNNNNN`` escape of one character."""
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _clip(text: str, limit: int, cut: bool = False) -> str:
    """``text`` in at most ``limit`` characters, ending with '... (truncated)' if (already) cut."""
    if len(text) <= limit and not cut:
        return text
    return text[: limit - len(TRUNCATED)] + TRUNCATED


def _shown(value: object, limit: int = MAX_VALUE_CHARS) -> str:
    """A value from a file as escaped display text of at most ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    head = text[: 2 * limit]  # escaping only lengthens, so this prefix is enough
    return _clip(printable(head), limit, cut=len(head) < len(text))


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
    """The argument parser for ``deepcompression`` and its ``inspect`` and ``eval`` commands."""
    parser = argparse.ArgumentParser(
        prog=PROG, description="Inspect or evaluate Deep Compression model files."
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
    inspect.set_defaults(handler=_run_inspect)

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
    evaluate.add_argument(
        "--max-decoded-bytes",
        type=byte_size,
        default=DEFAULT_MAX_DECODED_BYTES,
        metavar="SIZE",
        help="refuse files whose tensors decode to more than SIZE bytes, e.g. 2GiB "
        "(default: %(default)s)",
    )
    evaluate.add_argument(
        "--max-preload-bytes",
        type=byte_size,
        default=None,
        metavar="SIZE",
        help="stream the test images from their file when they take more than SIZE bytes as "
        "float32 (default: params.yaml's data.max_preload_bytes default, 2000000000)",
    )
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.set_defaults(handler=_run_eval)
    return parser


def _path(path: Path) -> str:
    """A path for messages, escaped (a newline in a file name stays visible as \\x0a)."""
    return printable(str(path))


def _read_bytes(path: Path) -> bytes:
    """Read a whole input file, turning OS errors into a CliError that names the file."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise CliError(f"{_path(path)}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{_path(path)}: is a directory, expected a compressed-model file") from None
    except OSError as err:
        raise CliError(f"{_path(path)}: cannot read: {err.strerror or err}") from None


def _not_a_model(path: Path, err: FormatError) -> CliError:
    """The error for bytes that fail to parse or decode as a compressed-model file."""
    if isinstance(err, DecodedTooLarge):
        return CliError(
            f"{_path(path)}: tensors decode to {err.decoded_bytes} bytes, over the limit of "
            f"{err.limit} bytes; if you trust the file, rerun with a larger --max-decoded-bytes "
            "(e.g. --max-decoded-bytes 2GiB)"
        )
    return CliError(
        f"{_path(path)}: not a valid compressed-model file ({type(err).__name__}: {err})"
    )


def _density(layer: LayerInfo) -> float | None:
    """Fraction of the layer's elements that are stored (None for an empty tensor)."""
    return layer.nnz / layer.numel if layer.numel else None


def _layer_row(layer: LayerInfo, sizes: ModelSizes) -> dict[str, Any]:
    """One layer of the inspect report; ratios are None for raw tensors."""
    coded = sizes.layers.get(layer.name) if layer.kind == KIND_HUFFMAN else None
    return {
        "name": layer.name,
        "kind": layer.kind,
        "dtype": layer.dtype,
        "shape": list(layer.shape),
        "numel": layer.numel,
        "nnz": layer.nnz,
        "density": _density(layer),
        "weight_bits": layer.weight_bits,
        "index_bits": layer.index_bits,
        "codebook_size": layer.codebook_size,
        "kept_units": None if layer.units is None else list(layer.units),
        "bytes": layer.total_bytes,
        "pq_ratio": None if coded is None else coded.pq_ratio,
        "pqh_ratio": None if coded is None else coded.pqh_ratio,
    }


def inspect_report(info: FileInfo, max_rows: int | None = None) -> dict[str, Any]:
    """JSON-able description of a compressed file: arch, revision, layer rows and totals.

    Lists the first ``max_rows`` tensors (all if None); ``tensor_count`` and
    ``omitted_tensors`` say how many there are and how many were left out.
    """
    sizes = model_sizes(info)
    shown = info.layers if max_rows is None else info.layers[:max_rows]
    return {
        "arch": info.arch.get("name"),
        "git_revision": info.provenance.get("git_revision"),
        "format_version": info.version,
        "tensor_count": len(info.layers),
        "omitted_tensors": len(info.layers) - len(shown),
        "layers": [_layer_row(layer, sizes) for layer in shown],
        "totals": {
            "file_bytes": info.file_bytes,
            "overhead_bytes": info.overhead_bytes,
            "payload_bytes": info.payload_bytes,
            "dense_bytes": info.dense_bytes,
            "decoded_bytes": info.decoded_bytes,
            "ratio": sizes.file_ratio,
            "pq_ratio": sizes.pq_ratio,
            "pqh_ratio": sizes.pqh_ratio,
        },
    }


def _ratio_text(ratio: float | None) -> str:
    return "-" if ratio is None else f"{ratio:.1f}x"


def _percent_text(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100.0 * fraction:.2f}%"


_COLUMNS: tuple[tuple[str, bool], ...] = (
    ("layer", False),
    ("kind", False),
    ("dtype", False),
    ("shape", False),
    ("density", True),
    ("w bits", True),
    ("idx bits", True),
    ("k", True),
    ("units kept", True),
    ("bytes", True),
    ("P+Q", True),
    ("P+Q+H", True),
)
"""Table header and whether the column is right-aligned (numbers)."""


def _table_cells(row: dict[str, Any]) -> list[str]:
    """The human table's cells for one layer row; '-' where a field does not apply."""
    coded = row["kind"] == KIND_HUFFMAN
    return [
        _shown(row["name"], MAX_CELL_CHARS),
        row["kind"],
        row["dtype"],
        "x".join(str(d) for d in row["shape"]) or "scalar",
        _percent_text(row["density"]),
        str(row["weight_bits"]),
        str(row["index_bits"]) if coded else "-",
        str(row["codebook_size"]) if coded else "-",
        "-" if row["kept_units"] is None else "x".join(map(str, row["kept_units"])),
        str(row["bytes"]),
        _ratio_text(row["pq_ratio"]),
        _ratio_text(row["pqh_ratio"]),
    ]


def _align(rows: list[list[str]]) -> list[str]:
    """Pad cells to common column widths, numbers right-aligned, and join with two spaces."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(_COLUMNS))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if right else cell.ljust(width)
            for cell, width, (_, right) in zip(row, widths, _COLUMNS, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return lines


def _key_values(pairs: list[tuple[str, str]]) -> list[str]:
    """Left-aligned ``key  value`` lines."""
    width = max(len(key) for key, _ in pairs)
    return [f"{key.ljust(width)}  {value}" for key, value in pairs]


def _omitted_line(report: dict[str, Any]) -> list[str]:
    """The summary line for tensors left out of the table, if any."""
    omitted = report.get("omitted_tensors", 0)
    if not omitted:
        return []
    return [f"... and {omitted} more tensors (use --all to list them)"]


def format_inspect(report: dict[str, Any], file: str) -> str:
    """Human-readable inspect output: a header block, the aligned layer table and totals.

    Values from the file are escaped and cut (names to 64 characters; ``--json`` has them whole).
    """
    totals = report["totals"]
    header = _key_values(
        [
            ("file", _shown(file)),
            ("arch", _shown(report["arch"] or "unknown")),
            ("git revision", _shown(report["git_revision"] or "unknown")),
            ("format version", str(report["format_version"])),
        ]
    )
    table = _align(
        [[title for title, _ in _COLUMNS]] + [_table_cells(row) for row in report["layers"]]
    )
    summary = _key_values(
        [
            ("file bytes", str(totals["file_bytes"])),
            ("  header bytes", str(totals["overhead_bytes"])),
            ("  payload bytes", str(totals["payload_bytes"])),
            ("dense float32 bytes", str(totals["dense_bytes"])),
            ("decoded bytes", str(totals["decoded_bytes"])),
            ("file ratio", _ratio_text(totals["ratio"])),
            ("P+Q ratio (coded layers)", _ratio_text(totals["pq_ratio"])),
            ("P+Q+H ratio (coded layers)", _ratio_text(totals["pqh_ratio"])),
        ]
    )
    return "\n".join([*header, "", *table, *_omitted_line(report), "", *summary])


def format_eval(result: dict[str, Any]) -> str:
    """Human-readable eval output: the test set, error, sample count and timings."""
    return "\n".join(
        _key_values(
            [
                ("file", _shown(result["file"])),
                ("arch", _shown(result["arch"] or "unknown")),
                ("data", f"{_shown(result['data'])} ({_shown(result['data_folder'])})"),
                ("device", result["device"]),
                ("test error", f"{100.0 * result['test_error']:.2f}%"),
                ("test loss", f"{result['test_loss']:.4f}"),
                ("test samples", str(result["test_samples"])),
                ("decode seconds", f"{result['decode_seconds']:.3f}"),
                ("eval seconds", f"{result['eval_seconds']:.3f}"),
            ]
        )
    )


def _write(text: str, out: TextIO) -> None:
    """Write ``text`` and a newline; what the stream's encoding lacks becomes an escape."""
    encoding = getattr(out, "encoding", None) or "utf-8"
    out.write(text.encode(encoding, "backslashreplace").decode(encoding) + "\n")


def _print_json(obj: dict[str, Any], out: TextIO) -> None:
    """Write exactly one ASCII JSON object (lone surrogates as \\ud800 escapes) and a newline."""
    _write(json.dumps(obj, ensure_ascii=True, allow_nan=False), out)


def _run_inspect(args: argparse.Namespace) -> int:
    """``inspect``: read the file's header and print sizes and ratios."""
    try:
        info = read_info(_read_bytes(args.file))
    except FormatError as err:
        raise _not_a_model(args.file, err) from None
    report = inspect_report(info, None if args.all else DEFAULT_MAX_ROWS)
    if args.json:
        _print_json({"file": str(args.file), **report}, sys.stdout)
    else:
        _write(format_inspect(report, str(args.file)), sys.stdout)
    return EXIT_OK


@dataclass(frozen=True)
class _TestSet:
    """A located test set: its name, folder, data shape (as model kwargs) and its loader."""

    name: str
    folder: Path
    kwargs: dict[str, int]
    load: Callable[[], tuple[Any, Any]]


def _file_reader(folder: Path) -> Callable[[str], bytes]:
    """read(file name) -> bytes of a prepared folder, for deepcompression.data.datasets' loaders."""
    return lambda name: (folder / name).read_bytes()


def _file_opener(folder: Path) -> Callable[[str], BinaryIO]:
    """open(file name) of a prepared folder, for the test images deepcompression streams."""
    return lambda name: open(folder / name, "rb")


def _data_problem(where: Path, err: Exception) -> CliError:
    """The one-line error for unreadable or invalid data files under ``where``."""
    detail = str(err)
    if isinstance(err, OSError):
        name = printable(str(err.filename)) if err.filename else _path(where)
        detail = f"{name}: {err.strerror or err}"
    return CliError(
        f"test set not usable under {_path(where)}: {detail}. Run `dvc repro data` to prepare "
        f"it, or pass --data DIR ({DATA_HELP})."
    )


def _mnist_files_in(raw: Path) -> bool:
    """Whether ``raw`` holds MNIST's four IDX files (the data stage's ``data/<name>/raw``)."""
    from deepcompression.data.mnist import IDX_FILES

    return all((raw / name).is_file() for name in IDX_FILES)


def _mnist_test(raw: Path, max_preload_bytes: int) -> tuple[Any, Any]:
    """The verified MNIST test images and labels in ``raw`` (the images streamed when over
    `max_preload_bytes` as float32), or a CliError saying how to fix."""
    from deepcompression.data.datasets import streams
    from deepcompression.data.mnist import (
        TEST_IMAGES,
        TEST_LABELS,
        DataError,
        mnist_test_set,
        mnist_test_stream,
        read_idx_header,
    )

    try:
        with open(raw / TEST_IMAGES, "rb") as images:
            _, shape, _ = read_idx_header(images)
            if streams(shape[0], shape[1:], max_preload_bytes):
                return mnist_test_stream(images, (raw / TEST_LABELS).read_bytes())
        return mnist_test_set((raw / TEST_IMAGES).read_bytes(), (raw / TEST_LABELS).read_bytes())
    except (OSError, DataError) as err:
        raise CliError(
            f"MNIST test set not usable under {_path(raw)}: {err}. Run `dvc repro data` to fetch "
            f"it, or pass --data DIR ({DATA_HELP})."
        ) from None


def _locate_test_set(root: Path, max_preload_bytes: int) -> _TestSet:
    """The test set under ``root``: prepared (meta.json), else MNIST in raw/, else MNIST/raw/.

    Reads only meta.json here; the test files are read by ``load`` (images over
    `max_preload_bytes` as float32 streamed). A bad meta.json is a CliError naming it.
    """
    from deepcompression.data.datasets import META_FILE, load_prepared_test, read_meta
    from deepcompression.data.mnist import MNIST_SHAPE, TEST_IMAGES, TEST_LABELS, DataError

    if (root / META_FILE).is_file():
        read, where = _file_reader(root), str(root)
        try:
            meta = read_meta(read, where)
        except (OSError, DataError) as err:
            raise _data_problem(root, err) from None

        def load() -> tuple[Any, Any]:
            try:
                return load_prepared_test(read, where, _file_opener(root), max_preload_bytes)
            except (OSError, DataError) as err:
                raise _data_problem(root, err) from None

        return _TestSet(meta.name, root, meta.shape.model_kwargs(), load)
    raw = root / "raw" if _mnist_files_in(root / "raw") else root / "MNIST" / "raw"
    missing = [name for name in (TEST_IMAGES, TEST_LABELS) if not (raw / name).is_file()]
    if missing:
        where = "no such folder" if not root.is_dir() else f"no {META_FILE}"
        raise CliError(
            f"no test set under {_path(root)} ({where}): MNIST test set not usable under "
            f"{_path(raw)}: {', '.join(missing)} missing. Run `dvc repro data` to fetch it, or "
            f"pass --data DIR ({DATA_HELP})."
        )
    return _TestSet(
        "MNIST", raw, MNIST_SHAPE.model_kwargs(), lambda: _mnist_test(raw, max_preload_bytes)
    )


def _data_kwargs(model: Any, arch: dict) -> dict[str, Any]:
    """in_channels, image_size and num_classes the network was built with: the header's
    arch.kwargs, the model factory's defaults where the header leaves one out."""
    from models import DATA_KWARGS, model_arch

    try:
        built = model_arch(model)["kwargs"]
    except (ValueError, KeyError, TypeError):
        built = {}
    given = arch.get("kwargs")
    recorded = given if isinstance(given, dict) else {}
    merged = {**built, **recorded}
    return {key: merged[key] for key in DATA_KWARGS if key in merged}


def _kwargs_text(kwargs: dict[str, Any]) -> str:
    """``in_channels=3, image_size=32, num_classes=10``, values from a file shown escaped."""
    return ", ".join(f"{key}={_shown(repr(value), 40)}" for key, value in kwargs.items())


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


def _check_default_data(path: Path, kwargs: dict[str, Any], provenance: dict) -> None:
    """Without --data, refuse a file made for other data than MNIST, naming the folder to pass."""
    from deepcompression.data.mnist import MNIST_SHAPE

    mnist = MNIST_SHAPE.model_kwargs()
    name = _recorded_data_name(provenance)
    differs = {key: value for key, value in kwargs.items() if mnist.get(key) != value}
    if not differs and name is None:
        return
    made_for = f"data of {_kwargs_text(kwargs)}" if differs else f"the data set {name!r}"
    folder = f"--data {DEFAULT_DATA / name}" if name is not None else "--data data/<name>"
    raise CliError(
        f"{_path(path)} was made for {made_for}, not MNIST (the default test set): pass the "
        f"prepared folder of the data it was made for, {folder} (a folder holding meta.json)."
    )


def _check_fits(path: Path, kwargs: dict[str, Any], test_set: _TestSet) -> None:
    """Refuse data whose shape differs from what the file's network was built for."""
    differs = [
        key for key, value in test_set.kwargs.items() if key in kwargs and kwargs[key] != value
    ]
    if not differs:
        return
    raise CliError(
        f"{_path(path)} holds a network built for {_kwargs_text(kwargs)} (arch.kwargs), but "
        f"{_path(test_set.folder)} ({_shown(test_set.name, 64)}) holds data of "
        f"{_kwargs_text(test_set.kwargs)}; pass --data with the folder of the data the file was "
        "made for."
    )


def _max_preload_bytes(args: argparse.Namespace) -> int:
    """--max-preload-bytes, else the default of params.yaml's data.max_preload_bytes."""
    from deepcompression.config import DataConfig

    return (
        DataConfig().max_preload_bytes if args.max_preload_bytes is None else args.max_preload_bytes
    )


def _run_eval(args: argparse.Namespace) -> int:
    """``eval``: decode the file into its network and measure test error on its test set."""
    from deepcompression.format.loader import ModelBuildError, load_model
    from deepcompression.training import evaluate, resolve_device
    from models import UnknownModelError

    try:
        device = resolve_device(args.device)
    except RuntimeError as err:
        raise CliError(str(err)) from None
    data = _read_bytes(args.file)
    try:
        start = time.perf_counter()
        model, decoded = load_model(data, device, max_decoded_bytes=args.max_decoded_bytes)
        decode_seconds = time.perf_counter() - start
    except FormatError as err:
        raise _not_a_model(args.file, err) from None
    except (UnknownModelError, ModelBuildError) as err:
        raise CliError(f"{_path(args.file)}: {err}") from None
    kwargs = _data_kwargs(model, decoded.arch)
    if args.data is None:
        _check_default_data(args.file, kwargs, decoded.provenance)
    test_set = _locate_test_set(
        DEFAULT_DATA if args.data is None else args.data, _max_preload_bytes(args)
    )
    _check_fits(args.file, kwargs, test_set)
    test_x, test_y = test_set.load()
    start = time.perf_counter()
    result = evaluate(model, test_x.to(device), test_y.to(device), args.batch_size)
    eval_seconds = time.perf_counter() - start
    report = {
        "file": str(args.file),
        "arch": decoded.arch.get("name"),
        "data": test_set.name,
        "data_folder": str(test_set.folder),
        "device": str(device),
        "batch_size": args.batch_size,
        "test_error": result.error,
        "test_loss": result.loss,
        "test_samples": result.samples,
        "decode_seconds": decode_seconds,
        "eval_seconds": eval_seconds,
    }
    if args.json:
        _print_json(report, sys.stdout)
    else:
        _write(format_eval(report), sys.stdout)
    return EXIT_OK


def _one_line(text: str) -> str:
    """Collapse a message onto one line so stderr carries exactly one error line."""
    return " ".join(text.split())


def error_line(message: str) -> str:
    """The single stderr line for ``message``: one line, escaped, at most 500 characters."""
    head = message[: 2 * MAX_ERROR_CHARS]
    line = printable(_one_line(head))
    return f"{PROG}: error: {_clip(line, MAX_ERROR_CHARS, cut=len(head) < len(message))}"


def _report_error(message: str, err: TextIO) -> None:
    _write(error_line(message), err)


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
