"""Source ``torchvision``: any torchvision.datasets class by name, its train and test splits read a
bounded block at a time (its ``data`` array directly when it has the wanted form)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepcompression.data.errors import DataError
from deepcompression.data.images import ImageReader, image_channels
from deepcompression.data.layout import as_channels_first, check_label_layout, idx_image_layout
from deepcompression.data.writer import (
    PREPARE_CHUNK_BYTES,
    DatasetStream,
    SplitStream,
    chunk_rows,
)


def _torchvision_class(name: str) -> Any:
    """A torchvision.datasets class by name; an unknown name lists some that work."""
    import torchvision.datasets  # costs seconds: only this source needs it

    cls = getattr(torchvision.datasets, name, None)
    if not (inspect.isclass(cls) and issubclass(cls, torchvision.datasets.VisionDataset)):
        raise DataError(
            f"data.dataset: {name!r} is not a torchvision.datasets class; e.g. MNIST, "
            "FashionMNIST, KMNIST, CIFAR10, CIFAR100, SVHN."
        )
    return cls


def _torchvision_folder(cls: Any, root: Path) -> Path:
    """The folder a torchvision dataset class reads its files from under `root`."""
    import torchvision.datasets

    if issubclass(cls, torchvision.datasets.MNIST):
        return root / cls.__name__ / "raw"
    base = getattr(cls, "base_folder", None)
    return root / base if isinstance(base, str) else root


def torchvision_split(cls: Any, root: Path, download: bool, train: bool) -> Any:
    """One split of a torchvision dataset (train= or split= 'train'/'test')."""
    parameters = inspect.signature(cls).parameters
    kwargs: dict[str, Any] = {}
    if "download" in parameters:
        kwargs["download"] = download
    if "train" in parameters:
        kwargs["train"] = train
    elif "split" in parameters:
        kwargs["split"] = "train" if train else "test"
    else:
        raise DataError(
            f"torchvision.datasets.{cls.__name__} takes neither train= nor split=; save it as an "
            "image folder (train/, test/) and use source 'imagefolder'."
        )
    try:
        return cls(str(root), **kwargs)
    except (RuntimeError, OSError, ValueError) as exc:
        folder = _torchvision_folder(cls, root)
        action = (
            "the download failed: check network access, or fill that folder by hand"
            if download
            else "offline, fill that folder with the dataset's files (as torchvision downloads "
            "them), or set data.download: true to let torchvision download them"
        )
        raise DataError(
            f"torchvision.datasets.{cls.__name__} found no usable data in {folder} ({exc}); "
            f"{action}. The root folder is data.local_dir (null: {root})."
        ) from None


def _torchvision_stream(
    dataset: Any, origin: str, channels: int | None, image_size: int | None, chunk_bytes: int
) -> SplitStream:
    """A torchvision dataset read `chunk_bytes` of images at a time: its `data` array directly
    when it already has the wanted form, else image by image through PIL."""
    data = getattr(dataset, "data", None)
    targets = getattr(dataset, "targets", getattr(dataset, "labels", None))
    labels_origin = f"{origin} labels"
    if isinstance(data, torch.Tensor):
        data = data.numpy()
    if isinstance(data, np.ndarray) and data.dtype == np.uint8 and targets is not None:
        shape, transpose = idx_image_layout(data.dtype, data.shape, origin)
        if (channels is None or channels == shape[0]) and image_size in (None, shape[1]):
            array = np.asarray(targets)
            check_label_layout(array.dtype, array.shape, labels_origin)
            rows = chunk_rows(shape, chunk_bytes)

            def rows_of(start: int) -> np.ndarray:
                return as_channels_first(data[start : start + rows], transpose)

            return SplitStream(
                len(data),
                shape,
                lambda: (np.ascontiguousarray(rows_of(i)) for i in range(0, len(data), rows)),
                lambda: (array[i : i + rows].astype(np.int64) for i in range(0, len(array), rows)),
                origin,
                labels_origin,
            )
    count = len(dataset)
    if count == 0:
        raise DataError(f"{origin}: holds no images.")
    first, _ = dataset[0]
    reader = ImageReader(channels or image_channels(getattr(first, "mode", "RGB")), image_size)
    c, height, width = reader.array(first, f"{origin}[0]").shape
    shape = (int(c), int(height), int(width))
    rows = chunk_rows(shape, chunk_bytes)

    def images() -> Iterator[np.ndarray]:
        for start in range(0, count, rows):
            block = np.empty((min(rows, count - start), *shape), dtype=np.uint8)
            for j in range(len(block)):
                block[j] = reader.array(dataset[start + j][0], f"{origin}[{start + j}]")
            yield block

    known = np.asarray(targets) if targets is not None and len(targets) == count else None
    if known is not None and (known.dtype.kind not in "iu" or known.ndim != 1):
        known = None

    def labels() -> Iterator[np.ndarray]:
        for start in range(0, count, rows):
            stop = min(start + rows, count)
            if known is not None:
                yield known[start:stop].astype(np.int64)
            else:  # no targets list: each label costs decoding its image
                yield np.array([int(dataset[i][1]) for i in range(start, stop)], dtype=np.int64)

    return SplitStream(count, shape, images, labels, origin, labels_origin)


def _largest_label(split: SplitStream) -> int:
    """The largest label of a split (-1 when it has none), from one pass over its labels."""
    return max((int(block.max()) for block in split.labels() if block.size), default=-1)


def read_torchvision(
    name: str,
    root: Path,
    download: bool,
    channels: int | None,
    image_size: int | None,
    chunk_bytes: int = PREPARE_CHUNK_BYTES,
) -> DatasetStream:
    """The train and test splits of torchvision.datasets.<name> under `root`, read `chunk_bytes`
    of images at a time."""
    cls = _torchvision_class(name)
    root = Path(root)
    splits = {}
    for split, train in (("train", True), ("test", False)):
        dataset = torchvision_split(cls, root, download, train)
        origin = f"torchvision.datasets.{name} ({split}, {_torchvision_folder(cls, root)})"
        splits[split] = _torchvision_stream(dataset, origin, channels, image_size, chunk_bytes)
    classes = getattr(dataset, "classes", None)
    k = max(_largest_label(splits["train"]), _largest_label(splits["test"])) + 1
    names = tuple(str(c) for c in classes) if isinstance(classes, list | tuple) else None
    return DatasetStream(
        train=splits["train"],
        test=splits["test"],
        classes=names if names is not None and len(names) >= k else None,
    )
