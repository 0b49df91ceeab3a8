"""The `check` stage's look at the input files, before DVC removes any stage's outputs.

DVC deletes a stage's outputs before running it, so a bad input found by the stage itself would
cost the last good `data/<name>` or dense checkpoint. Checked here instead, cheaply: the data
source's files (present, pinned sha256, class folders non-empty, a sample of the images decodable
and of one size) and each model's `train.checkpoint` (a state_dict whose keys and shapes fit the
network built for the data). Each model gets a record of the external files its stages read, the
`train` stage depends on it, so a checkpoint overwritten in place reruns training.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from deepcompression.config import DataConfig, Params
from deepcompression.data.errors import ChecksumError, DataError
from deepcompression.data.files import read_source_file
from deepcompression.data.idx_folder import read_idx_folder
from deepcompression.data.images import open_image
from deepcompression.data.load import folder_shape
from deepcompression.data.mnist import MNIST_SHAPE
from deepcompression.data.tensors import DataShape
from deepcompression.pretrained import PretrainedError, load_pretrained_, state_dict_from_bytes
from flows.params import plan_model

SAMPLED_IMAGES = 2000
"""Images per split an `imagefolder` check decodes (all of a smaller split; evenly spaced over a
larger one, first and last of every class folder included): ~1 s of PIL on one core."""

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
"""The image files torchvision's ImageFolder reads (the data stage's reader)."""

_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


class InputError(ValueError):
    """An input file is missing, corrupt or does not fit the params (message: key, file, fix)."""


def _evenly(items: Sequence[Path], limit: int) -> list[Path]:
    """All of `items` when at most `limit`, else `limit` of them evenly spaced, ends included."""
    if len(items) <= limit:
        return list(items)
    step = (len(items) - 1) / (limit - 1)
    return [items[round(i * step)] for i in range(limit)]


def _class_images(split_dir: Path) -> dict[str, list[Path]]:
    """{class folder: its image files, sorted} of one split folder."""
    classes = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    return {
        name: sorted(
            p for p in (split_dir / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES
        )
        for name in classes
    }


def _image_split_sample(split_dir: Path, classes: list[str]) -> list[Path]:
    """The images of one split the check decodes; a class folder set unlike train's, or an empty
    class folder, is an error naming it."""
    found = _class_images(split_dir)
    if sorted(found) != classes:
        raise InputError(
            f"data.local_dir: {split_dir} has the class folders {', '.join(sorted(found))}, but "
            f"train/ has {', '.join(classes)}; every split needs the same class folders."
        )
    empty = [name for name, files in found.items() if not files]
    if empty:
        raise InputError(
            f"data.local_dir: {split_dir / empty[0]} holds no image files "
            f"({', '.join(IMAGE_SUFFIXES)}); put at least one image in it, or remove the folder "
            "from every split."
        )
    files = [p for paths in found.values() for p in paths]
    ends = {p for paths in found.values() for p in (paths[0], paths[-1])}
    sample = _evenly(files, max(SAMPLED_IMAGES - len(ends), 2))
    return sorted(ends.union(sample))


def _image_side(paths: list[Path], image_size: int | None) -> int:
    """Decode every image of `paths`; without `image_size`, all must share one square size."""
    first: tuple[Path, tuple[int, int]] | None = None
    for path in paths:
        image = open_image(read_source_file(path), str(path))
        if image_size is not None:
            continue
        if first is None:
            first = (path, image.size)
            if image.size[0] != image.size[1]:
                raise InputError(
                    f"{path}: is {image.size[0]}x{image.size[1]} pixels, not square; set "
                    "data.image_size to resize every image to image_size x image_size."
                )
        elif image.size != first[1]:
            raise InputError(
                f"{path}: is {image.size[0]}x{image.size[1]} pixels, but {first[0]} is "
                f"{first[1][0]}x{first[1][1]}; set data.image_size to resize every image to one "
                "size, or replace the odd image."
            )
    return image_size if image_size is not None else (first[1][0] if first else 0)


def check_image_folder(cfg: DataConfig) -> DataShape:
    """An `imagefolder` source's layout and a sample of its images; its data shape."""
    folder = Path(cfg.local_dir or "")
    layout = "train/ and test/ (optionally val/), each with one subfolder of images per class"
    if not folder.is_dir():
        raise InputError(f"data.local_dir: {folder} is not a folder; expected {layout}.")
    missing = [s for s in ("train", "test") if not (folder / s).is_dir()]
    if missing:
        raise InputError(
            f"data.local_dir: {folder} lacks {', '.join(s + '/' for s in missing)}; "
            f"expected {layout}."
        )
    classes = sorted(e.name for e in os.scandir(folder / "train") if e.is_dir())
    if not classes:
        raise InputError(f"data.local_dir: {folder / 'train'} holds no class folders.")
    splits = [s for s in ("train", "val", "test") if (folder / s).is_dir()]
    sample = [p for s in splits for p in _image_split_sample(folder / s, classes)]
    side = _image_side(sample, cfg.image_size)
    channels = len(cfg.mean) if cfg.mean is not None else 3
    return DataShape(channels=channels, image_size=side, num_classes=len(classes))


def _sha256_message(err: ChecksumError, folder: Path) -> str:
    """A pinned sha256 that differs: which key, both values, and which side may be wrong."""
    name = Path(err.name).name
    return (
        f"data.sha256.{name}: params.yaml pins {err.expected}, but {folder / name} has sha256 "
        f"{err.actual}. Either the pin is mistyped (if this file is the one you mean, copy its "
        "sha256 into params.yaml) or the file is corrupt or another version (fetch it again)."
    )


def check_idx_folder(cfg: DataConfig) -> DataShape:
    """An `idx` source's files: present, their pinned sha256 and headers; its data shape."""
    folder = Path(cfg.local_dir or "")
    try:
        stream = read_idx_folder(folder, cfg.sha256)
        largest = max((int(b.max()) for b in stream.train.labels() if b.size), default=-1)
    except ChecksumError as err:
        raise InputError(_sha256_message(err, folder)) from None
    channels, side, _ = stream.train.shape
    return DataShape(channels=channels, image_size=side, num_classes=largest + 1)


def check_data(cfg: DataConfig, data_folder: Path) -> DataShape | None:
    """Check the data source's files; the shape the data stage will give the networks (None
    when only the prepared data would tell, and it is not there yet)."""
    if cfg.is_mnist:
        return MNIST_SHAPE
    source_gone = cfg.source in ("imagefolder", "idx") and not Path(cfg.local_dir or "").exists()
    if source_gone and (data_folder / "meta.json").is_file():
        print(
            f"warning: data.local_dir {cfg.local_dir} is gone; the prepared {data_folder} is used "
            "as it is (the data stage fails if it has to run again)",
            file=sys.stderr,
        )
        return folder_shape(data_folder, mnist=False)
    try:
        if cfg.source == "imagefolder":
            return check_image_folder(cfg)
        if cfg.source == "idx":
            return check_idx_folder(cfg)
        return folder_shape(data_folder, mnist=False) if data_folder.is_dir() else None
    except DataError as err:
        raise InputError(str(err)) from None


def _plain(text: str) -> str:
    """An exception's text on one line, without terminal colour codes."""
    return " ".join(_ANSI.sub("", text).split())


def read_state_dict(data: bytes, key: str, path: Path) -> dict[str, Any]:
    """The state_dict in a checkpoint's bytes; a pickled model or a foreign file is an error
    naming the key, the file and how to save a state_dict."""
    import torch

    fix = f"save the weights alone: torch.save(model.state_dict(), '{path}')."
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise InputError(
            f"{key}: {path} holds pickled Python objects (a whole model, not only its tensors), "
            f"which are not loaded: loading runs their code. {fix}"
        ) from None
    except Exception as exc:  # torch raises many types for foreign files
        raise InputError(
            f"{key}: {path} is not a torch.save file ({type(exc).__name__}: "
            f"{_plain(str(exc))}); {fix}"
        ) from None
    try:
        return state_dict_from_bytes(data, str(path))
    except PretrainedError as err:
        raise InputError(f"{key}: {err}") from None


def check_checkpoint(model: str, path: Path, shape: DataShape | None) -> str:
    """A model's `train.checkpoint`: readable, a state_dict, and (when the data shape is known)
    of the network built for the data; returns its sha256."""
    from models import build_model

    key = f"models.{model}.train.checkpoint"
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InputError(
            f"{key}: {path} cannot be read ({exc.strerror or exc}); give the path of a "
            "state_dict file (relative to the project root), or null to train."
        ) from None
    state = read_state_dict(data, key, path)
    if shape is not None:
        try:
            load_pretrained_(build_model(model, **shape.model_kwargs()), state, str(path))
        except PretrainedError as err:
            raise InputError(
                f"{key}: {err}\n  Give the state_dict of {model!r} built for this data "
                f"({shape.channels}x{shape.image_size}x{shape.image_size} inputs, "
                f"{shape.num_classes} classes), saved with torch.save(model.state_dict(), "
                "path), or null to train."
            ) from None
    return hashlib.sha256(data).hexdigest()


def check_inputs(params: Params, data_folder: Path) -> dict[str, dict[str, Any]]:
    """Check the data's files and every model's checkpoint; returns each model's record of the
    external files it reads ({"train.checkpoint": sha256 or None}), by model name."""
    shape = check_data(params.data, data_folder)
    records: dict[str, dict[str, Any]] = {}
    for model, section in params.models.items():
        if shape is not None:
            plan_model(params.select(model), shape)  # the network built for the data's shape
        checkpoint = section.train.checkpoint
        digest = check_checkpoint(model, Path(checkpoint), shape) if checkpoint else None
        records[model] = {"train.checkpoint": digest}
    return records
