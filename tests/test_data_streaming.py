"""The data stage writes the prepared files block by block: whatever the block size, the bytes
(every IDX file and meta.json) are those the in-memory `prepare` gives for the same data, the
memory it holds does not grow with the dataset, and a bad file found in any block is an error
naming it that leaves the previous output as it was.

`deepcompression.data.preparation.PREPARE_CHUNK_BYTES` is patched small so that the data the
tests make spans many blocks, and large so that a split is one block.
"""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_datasets import (
    data_config,
    file_hashes,
    prepare,
    snapshot,
    write_idx_folder,
    write_image_folder,
)

from deepcompression.data import preparation
from deepcompression.data.errors import DataError
from deepcompression.data.idx import encode_idx
from deepcompression.data.layout import images_from_idx, labels_from_idx
from deepcompression.data.writer import ChannelStats, RawDataset, Split, channel_stats
from deepcompression.data.writer import prepare as prepare_in_memory

BLOCK_SIZES = (1, 3 * 8 * 8 * 7, 1 << 30)
"""One image per block, blocks of 7 images of 3x8x8 (not dividing any split), one block."""
NORMAL = {"mean": [0.4, 0.5, 0.6], "std": [0.2, 0.25, 0.3]}
"""data.mean/data.std, which source imagefolder needs."""


def idx_reference(arrays: dict[str, np.ndarray], source: Path) -> RawDataset:
    """The IDX folder `write_idx_folder` made, as the in-memory arrays `prepare` takes."""
    splits = {}
    for split, prefix in (("train", "train"), ("val", "val"), ("test", "t10k")):
        images = [a for n, a in arrays.items() if n.startswith(f"{prefix}-images")]
        if images:
            labels = arrays[f"{prefix}-labels-idx1-ubyte"]
            x = images_from_idx(images[0], prefix)
            splits[split] = Split(x, labels_from_idx(labels, prefix), prefix, prefix)
    return RawDataset(**splits, inputs=file_hashes(source))


def image_folder_reference(root: Path) -> RawDataset:
    """An image folder decoded by PIL alone, in the data stage's documented order (class folders
    and files sorted; training images by the sha256 of their relative paths), with its digests."""
    classes = tuple(sorted(p.name for p in (root / "train").iterdir()))
    splits, inputs = {}, {}
    for split in ("train", "val", "test"):
        if not (root / split).is_dir():
            continue
        files = [
            (path.relative_to(root / split).as_posix(), path, label)
            for label, name in enumerate(classes)
            for path in sorted((root / split / name).iterdir())
        ]
        if split == "train":
            files.sort(key=lambda f: hashlib.sha256(f[0].encode()).digest())
        images = np.stack(
            [np.asarray(Image.open(p).convert("RGB")).transpose(2, 0, 1) for _, p, _ in files]
        )
        labels = np.array([label for _, _, label in files], dtype=np.int64)
        digest = hashlib.sha256()
        for relative, path, _ in files:
            digest.update(relative.encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
        splits[split] = Split(images, labels, split, split)
        inputs[f"{split}/"] = digest.hexdigest()
    return RawDataset(**splits, classes=classes, inputs=inputs)


@pytest.mark.parametrize("chunk", BLOCK_SIZES)
@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_written_block_by_block_is_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int, gz: bool
) -> None:
    source = tmp_path / "source"
    arrays = write_idx_folder(source, size=8, channels=3, n_train=40, n_val=6, n_test=9, gz=gz)
    monkeypatch.setattr(preparation, "PREPARE_CHUNK_BYTES", chunk)
    out = prepare(data_config(source="idx", name="shapes", local_dir=str(source)), tmp_path)
    expected, _ = prepare_in_memory(idx_reference(arrays, source), name="shapes", source="idx")
    assert snapshot(out) == expected


@pytest.mark.parametrize("chunk", BLOCK_SIZES)
def test_image_folder_written_block_by_block_is_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    source = write_image_folder(tmp_path / "pictures", {"train": 5, "val": 2, "test": 3}, size=8)
    monkeypatch.setattr(preparation, "PREPARE_CHUNK_BYTES", chunk)
    out = prepare(
        data_config(source="imagefolder", name="pictures", local_dir=str(source), **NORMAL),
        tmp_path,
    )
    reference = image_folder_reference(source)
    expected, meta = prepare_in_memory(reference, name="pictures", source="imagefolder", **NORMAL)
    assert snapshot(out) == expected
    assert meta.counts == {"train": 15, "val": 6, "test": 9}


@pytest.mark.parametrize("channels", [1, 3])
def test_torchvision_class_written_block_by_block_is_byte_identical(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, channels: int
) -> None:
    """1 channel: KMNIST's own array, sliced; 3: image by image through PIL (grey to RGB)."""
    arrays = write_idx_folder(tmp_path / "torchvision" / "KMNIST" / "raw", size=8)
    monkeypatch.setattr(preparation, "PREPARE_CHUNK_BYTES", 3 * 8 * 8 * 7)
    normal = {key: values[:channels] for key, values in NORMAL.items()}
    cfg = data_config(source="torchvision", dataset="KMNIST", name="k", val_size=10, **normal)
    out = prepare(cfg, tmp_path)
    splits = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        grey = arrays[f"{prefix}-images-idx3-ubyte"][:, None]
        images = np.repeat(grey, channels, axis=1)
        labels = arrays[f"{prefix}-labels-idx1-ubyte"].astype(np.int64)
        splits[split] = Split(images, labels, prefix, prefix)
    from torchvision.datasets import KMNIST

    reference = RawDataset(**splits, classes=tuple(KMNIST.classes))
    expected, _ = prepare_in_memory(reference, name="k", source="torchvision:KMNIST", **normal)
    assert snapshot(out) == expected


def test_channel_stats_added_in_blocks_are_exactly_the_whole_arrays() -> None:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, size=(101, 3, 5, 5), dtype=np.uint8)
    stats = ChannelStats(3)
    for block in np.split(images, [1, 2, 40, 41, 100]):
        stats.add(block)
    assert stats.result() == channel_stats(images)


def peak_bytes(cfg, root: Path) -> int:
    """tracemalloc's peak while the data stage's task prepares `cfg` into `root`."""
    tracemalloc.start()
    try:
        prepare(cfg, root)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_held_does_not_grow_with_the_dataset(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preparation, "PREPARE_CHUNK_BYTES", 1 << 16)
    peaks = {}
    for n in (500, 4000):  # 3x32x32 images: 1.5 MB and 12 MB of training images
        source = tmp_path / f"source{n}"
        write_idx_folder(source, size=32, channels=3, n_train=n, n_test=50)
        cfg = data_config(source="idx", name=f"n{n}", local_dir=str(source))
        peaks[n] = peak_bytes(cfg, tmp_path)
    assert abs(peaks[4000] - peaks[500]) < 64 * 1024
    assert peaks[4000] < 4000 * 3 * 32 * 32 / 4


def test_a_truncated_images_file_in_the_last_block_names_it_and_keeps_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = tmp_path / "source"
    write_idx_folder(source, size=8, channels=3, n_train=40, n_test=9)
    cfg = data_config(source="idx", name="shapes", local_dir=str(source))
    monkeypatch.setattr(preparation, "PREPARE_CHUNK_BYTES", 3 * 8 * 8 * 7)
    before = snapshot(prepare(cfg, tmp_path))
    images = source / "train-images-idx4-ubyte"
    images.write_bytes(images.read_bytes()[:-5])
    with pytest.raises(DataError, match=r"train-images-idx4-ubyte: .*truncated"):
        prepare(cfg, tmp_path)
    images.write_bytes(images.read_bytes() + b"\0" * 6)
    with pytest.raises(DataError, match=r"train-images-idx4-ubyte: .*trailing bytes"):
        prepare(cfg, tmp_path)
    assert snapshot(tmp_path / "data" / "shapes") == before
    assert [p.name for p in (tmp_path / "data").iterdir()] == ["shapes"]


def test_a_bad_image_or_gzip_data_late_in_a_split_names_it_and_keeps_the_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(preparation, "PREPARE_CHUNK_BYTES", 3 * 8 * 8 * 2)
    pictures = write_image_folder(tmp_path / "pictures", {"train": 5, "test": 3}, size=8)
    cfg = data_config(source="imagefolder", name="pictures", local_dir=str(pictures), **NORMAL)
    before = snapshot(prepare(cfg, tmp_path))
    bad = pictures / "test" / "eel" / "eel_002.png"  # the test split's last image
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match=rf"{bad}: not a readable image"):
        prepare(cfg, tmp_path)
    assert snapshot(tmp_path / "data" / "pictures") == before

    source = tmp_path / "source"
    write_idx_folder(source, size=8, channels=3, n_train=40, n_test=9, gz=True)
    cfg = data_config(source="idx", name="shapes", local_dir=str(source))
    before = snapshot(prepare(cfg, tmp_path))
    packed = source / "t10k-images-idx4-ubyte.gz"
    packed.write_bytes(packed.read_bytes()[:-12])
    with pytest.raises(DataError, match=rf"{packed}: not valid gzip data"):
        prepare(cfg, tmp_path)
    assert snapshot(tmp_path / "data" / "shapes") == before


def test_labels_that_do_not_match_the_images_name_both_files(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_idx_folder(source, size=8, n_train=30, n_test=9)
    (source / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(np.zeros(8, dtype=np.uint8)))
    cfg = data_config(source="idx", name="digits", local_dir=str(source))
    with pytest.raises(DataError) as info:
        prepare(cfg, tmp_path)
    assert str(info.value) == (
        f"{source / 't10k-labels-idx1-ubyte'} has 8 labels but "
        f"{source / 't10k-images-idx3-ubyte'} has 9 images; expected one label per image."
    )
    assert not (tmp_path / "data").exists()
