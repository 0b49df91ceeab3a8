"""``deepcompression eval``: decode a compressed-model file into its network and measure it on a
test set. ``--data DIR`` finds the test set in ``DIR``: a prepared ``data/<name>`` folder
(``DIR/meta.json``, any image data), else MNIST's four IDX files in ``DIR/raw`` (the data stage's
``data/MNIST``) or in ``DIR/MNIST/raw`` (the default ``--data data``). A test set whose images take
over ``--max-preload-bytes`` as float32 is streamed from its file in batches. A file that stores
its input spec (format version 4) is measured only on data of that spec: the same shape, mean and
std, and class names. Models, training and data readers are imported here, lazily (library code
only, never Prefect), so that ``inspect`` and ``--version`` start quickly."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cli.errors import EXIT_OK, CliError, path_text
from cli.network import (
    DATA_HELP,
    DEFAULT_DATA,
    check_default_data,
    data_kwargs,
    device_of,
    kwargs_text,
    load_network,
)
from cli.text import key_values, print_json, printable, shown, write_line
from deepcompression.format.container import InputMeta

DEFAULT_BATCH_SIZE = 1000


def format_eval(result: dict[str, Any]) -> str:
    """Human-readable eval output: the test set, error, sample count and timings."""
    return "\n".join(
        key_values(
            [
                ("file", shown(result["file"])),
                ("arch", shown(result["arch"] or "unknown")),
                ("data", f"{shown(result['data'])} ({shown(result['data_folder'])})"),
                ("device", result["device"]),
                ("test error", f"{100.0 * result['test_error']:.2f}%"),
                ("test loss", f"{result['test_loss']:.4f}"),
                ("test samples", str(result["test_samples"])),
                ("decode seconds", f"{result['decode_seconds']:.3f}"),
                ("eval seconds", f"{result['eval_seconds']:.3f}"),
            ]
        )
    )


@dataclass(frozen=True)
class _TestSet:
    """A located test set: its name, folder, data shape (as model kwargs), its loader and its
    input spec as a file stores it (class names included)."""

    name: str
    folder: Path
    kwargs: dict[str, int]
    load: Callable[[], tuple[Any, Any]]
    spec: InputMeta


def _data_problem(where: Path, err: Exception, what: str = "test set") -> CliError:
    """The one-line error for unreadable or invalid data files under ``where``."""
    detail = str(err)
    if isinstance(err, OSError):
        name = printable(str(err.filename)) if err.filename else path_text(where)
        detail = f"{name}: {err.strerror or err}"
    return CliError(
        f"{what} not usable under {path_text(where)}: {detail}. Run `dvc repro data` to prepare "
        f"it, or pass --data DIR ({DATA_HELP})."
    )


def _mnist_files_in(raw: Path) -> bool:
    """Whether ``raw`` holds MNIST's four IDX files (the data stage's ``data/<name>/raw``)."""
    from deepcompression.data.mnist import IDX_FILES

    return all((raw / name).is_file() for name in IDX_FILES)


def _loader(folder: Path, mnist: bool, max_preload_bytes: int, what: str) -> Callable[[], Any]:
    """Loads the test set of the data folder `folder` with the pipeline's own loader (images over
    `max_preload_bytes` as float32 streamed); a problem with its files is a CliError."""
    from deepcompression.data.errors import DataError
    from deepcompression.data.load import MNIST_RAW, load_test

    def load() -> tuple[Any, Any]:
        try:
            return load_test(folder, max_preload_bytes, mnist=mnist)
        except (OSError, DataError) as err:
            raise _data_problem(folder / MNIST_RAW if mnist else folder, err, what) from None

    return load


def _locate_test_set(root: Path, max_preload_bytes: int) -> _TestSet:
    """The test set under ``root``: prepared (meta.json), else MNIST in raw/, else MNIST/raw/.

    Reads only meta.json here; the test files are read by ``load`` (images over
    `max_preload_bytes` as float32 streamed). A bad meta.json is a CliError naming it.
    """
    from deepcompression.data.errors import DataError
    from deepcompression.data.files import stage_reader
    from deepcompression.data.load import MNIST_RAW
    from deepcompression.data.mnist import MNIST_SHAPE, TEST_IMAGES, TEST_LABELS
    from deepcompression.data.prepared import META_FILE, read_meta

    if (root / META_FILE).is_file():
        try:
            meta = read_meta(stage_reader(root), str(root))
        except (OSError, DataError) as err:
            raise _data_problem(root, err) from None
        load = _loader(root, False, max_preload_bytes, "test set")
        spec = InputMeta(meta.channels, meta.image_size, meta.mean, meta.std, meta.num_classes,
                         meta.classes)  # fmt: skip
        return _TestSet(meta.name, root, meta.shape.model_kwargs(), load, spec)
    folder = root if _mnist_files_in(root / MNIST_RAW) else root / "MNIST"
    raw = folder / MNIST_RAW
    missing = [name for name in (TEST_IMAGES, TEST_LABELS) if not (raw / name).is_file()]
    if missing:
        where = "no such folder" if not root.is_dir() else f"no {META_FILE}"
        raise CliError(
            f"no test set under {path_text(root)} ({where}): MNIST test set not usable under "
            f"{path_text(raw)}: {', '.join(missing)} missing. Run `dvc repro data` to fetch it, or "
            f"pass --data DIR ({DATA_HELP})."
        )
    load = _loader(folder, True, max_preload_bytes, "MNIST test set")
    return _TestSet("MNIST", raw, MNIST_SHAPE.model_kwargs(), load, _mnist_meta())


def _mnist_meta() -> InputMeta:
    """MNIST's input spec as the encode stage stores it (classes "0".."9")."""
    from deepcompression.inference import stored_input

    return stored_input(Path("."), mnist=True)


def _check_spec(path: Path, stored: InputMeta | None, test_set: _TestSet) -> None:
    """Refuse data whose class names, mean or std differ from the input spec the file stores."""
    if stored is None:
        return
    data = test_set.spec
    where = f"{path_text(test_set.folder)} ({shown(test_set.name, 64)})"
    if stored.classes is not None and tuple(stored.classes) != tuple(data.classes or ()):
        raise CliError(
            f"{path_text(path)} was made for classes {_names(stored.classes)}, but {where} "
            f"holds classes {_names(data.classes)}; pass --data with the folder of the data the "
            "file was made for."
        )
    if (tuple(stored.mean), tuple(stored.std)) != (tuple(data.mean), tuple(data.std)):
        raise CliError(
            f"{path_text(path)} was made for inputs normalised with mean {list(stored.mean)} and "
            f"std {list(stored.std)}, but {where} is normalised with mean {list(data.mean)} and "
            f"std {list(data.std)}; pass --data with the folder of the data the file was made for."
        )


def _names(classes: tuple[str, ...] | None) -> str:
    """Class names for an error: ``['cat', 'dog']``, cut to 200 characters."""
    return "unnamed" if classes is None else shown(repr(list(classes)), 200)


def _check_fits(path: Path, kwargs: dict[str, Any], test_set: _TestSet) -> None:
    """Refuse data whose shape differs from what the file's network was built for."""
    differs = [
        key for key, value in test_set.kwargs.items() if key in kwargs and kwargs[key] != value
    ]
    if not differs:
        return
    raise CliError(
        f"{path_text(path)} holds a network built for {kwargs_text(kwargs)} (arch.kwargs), but "
        f"{path_text(test_set.folder)} ({shown(test_set.name, 64)}) holds data of "
        f"{kwargs_text(test_set.kwargs)}; pass --data with the folder of the data the file was "
        "made for."
    )


def _max_preload_bytes(args: argparse.Namespace) -> int:
    """--max-preload-bytes, else the default of params.yaml's data.max_preload_bytes."""
    from deepcompression.config import DataConfig

    return (
        DataConfig().max_preload_bytes if args.max_preload_bytes is None else args.max_preload_bytes
    )


def run_eval(args: argparse.Namespace) -> int:
    """``eval``: decode the file into its network and measure test error on its test set."""
    from deepcompression.training import evaluate

    device = device_of(args.device)
    start = time.perf_counter()
    model, decoded = load_network(args.file, device, args.max_decoded_bytes)
    decode_seconds = time.perf_counter() - start
    kwargs = data_kwargs(model, decoded.arch)
    if args.data is None:
        check_default_data(args.file, kwargs, decoded.provenance)
    test_set = _locate_test_set(
        DEFAULT_DATA if args.data is None else args.data, _max_preload_bytes(args)
    )
    _check_fits(args.file, kwargs, test_set)
    _check_spec(args.file, decoded.input, test_set)
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
        print_json(report, sys.stdout)
    else:
        write_line(format_eval(report), sys.stdout)
    return EXIT_OK
