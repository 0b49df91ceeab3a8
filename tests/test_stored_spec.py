"""The input spec every compressed file stores (format version 4): what the encode stage and the
search's exact sizes write, and what ``predict``, ``eval`` and ``inspect`` do with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from compressed_files import compressed
from PIL import Image
from test_allocation import quantized_checkpoint

from cli.errors import EXIT_OK
from cli.main import main
from deepcompression.data.tensors import normalise
from deepcompression.data.writer import RawDataset, Split, prepare
from deepcompression.format.allocation import checkpoint_file_bytes
from deepcompression.format.container import InputMeta, read_info
from deepcompression.format.loader import load
from deepcompression.inference import MNIST_INPUT, InputSpec, stored_input
from tasks.encode import encode_checkpoint

CLASSES = ("ankle boot", "bag", "coat")
SIDE = 12


def _prepared(root: Path, name: str, classes: tuple[str, ...]) -> Path:
    """A prepared RGB folder (SIDE x SIDE, named `classes`) as the data stage writes it."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (12, 3, SIDE, SIDE), dtype=np.uint8)
    labels = np.arange(12, dtype=np.int64) % len(classes)
    split = Split(images, labels, "images", "labels")
    files, _ = prepare(RawDataset(split, split, classes=classes), name=name, source="imagefolder")
    folder = root / "data" / name
    folder.mkdir(parents=True)
    for file, content in files.items():
        (folder / file).write_bytes(content)
    return folder


def _model_file(path: Path, spec: InputMeta) -> bytes:
    """A real small_bn_cnn file for `spec`'s data, storing `spec`, written to `path`."""
    kwargs = {"in_channels": spec.channels, "image_size": spec.image_size}
    data = compressed("small_bn_cnn", input_spec=spec, **kwargs, num_classes=spec.num_classes)
    path.write_bytes(data)
    return data


@pytest.fixture
def shop(tmp_path: Path) -> tuple[Path, Path, bytes]:
    """A prepared folder with named classes and a file storing its spec (folder, file, bytes)."""
    folder = _prepared(tmp_path, "shop", CLASSES)
    path = tmp_path / "shop.dcz"
    return folder, path, _model_file(path, stored_input(folder, mnist=False))


def test_the_stored_spec_is_the_datas_and_the_search_measures_the_written_file(
    shop: tuple[Path, Path, bytes],
) -> None:
    folder, _, _ = shop
    meta = json.loads((folder / "meta.json").read_text())
    spec = stored_input(folder, mnist=False)
    assert spec == InputMeta(3, SIDE, tuple(meta["mean"]), tuple(meta["std"]), 3, CLASSES)
    mnist = stored_input(folder, mnist=True)
    assert mnist.classes == tuple("0123456789")
    assert InputSpec.from_stored(mnist) == MNIST_INPUT
    assert InputSpec.from_stored(spec).classes == CLASSES
    checkpoint = quantized_checkpoint()
    widths = {"fc1": None, "fc2": 5, "fc3": None}
    written = encode_checkpoint.fn(checkpoint, widths, {"run": 1}, "float32", mnist)
    assert read_info(written).input == mnist
    assert checkpoint_file_bytes(checkpoint, widths, "float32", {"run": 1}, mnist) == len(written)
    assert checkpoint_file_bytes(checkpoint, widths, provenance={"run": 1}) < len(written)


def test_predict_uses_the_files_spec_without_data(
    shop: tuple[Path, Path, bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, path, data = shop
    image = np.random.default_rng(4).integers(0, 256, (SIDE, SIDE, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "item.png")
    assert main(["predict", str(path), str(tmp_path / "item.png"), "--json"]) == EXIT_OK
    (entry,) = json.loads(capsys.readouterr().out)["predictions"]
    meta = json.loads((folder / "meta.json").read_text())
    x = normalise(torch.from_numpy(image.transpose(2, 0, 1).copy())[None], meta["mean"],
                  meta["std"])  # fmt: skip
    with torch.no_grad():
        probabilities = torch.softmax(load(data)(x).double(), dim=1)[0]
    assert entry["class"] == int(probabilities.argmax())
    assert entry["probability"] == pytest.approx(float(probabilities.max()), abs=1e-12)
    assert entry["name"] == CLASSES[entry["class"]]
    assert main(["predict", str(path), str(tmp_path / "item.png")]) == EXIT_OK
    assert f"{entry['class']} ({entry['name']})" in capsys.readouterr().out


def test_eval_refuses_data_with_other_classes(
    shop: tuple[Path, Path, bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    folder, path, _ = shop
    assert main(["eval", str(path), "--data", str(folder), "--json"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["test_samples"] == 12
    other = _prepared(tmp_path / "other", "pets", ("cat", "dog", "fish"))
    assert main(["eval", str(path), "--data", str(other)]) != EXIT_OK
    out, err = capsys.readouterr()
    (line,) = err.strip().splitlines()
    assert out == "" and "'ankle boot', 'bag', 'coat'" in line and "'cat', 'dog', 'fish'" in line
    assert "--data" in line


def test_inspect_shows_the_input_spec_and_coders(
    shop: tuple[Path, Path, bytes], capsys: pytest.CaptureFixture
) -> None:
    _, path, data = shop
    assert main(["inspect", str(path), "--json"]) == EXIT_OK
    report = json.loads(capsys.readouterr().out)
    assert report["input"]["classes"] == list(CLASSES)
    assert report["input"]["image_size"] == SIDE and report["input"]["channels"] == 3
    info = read_info(data)
    coded = {layer.name: layer for layer in info.layers if layer.kind == "huffman"}
    for row in report["layers"]:
        layer = coded.get(row["name"])
        expected = (None, None) if layer is None else (layer.index_coder, layer.weight_coder)
        assert (row["index_coder"], row["weight_coder"]) == expected
    assert main(["inspect", str(path)]) == EXIT_OK
    text = capsys.readouterr().out
    assert f"3x{SIDE}x{SIDE}" in text and "ankle boot, bag, coat" in text and "coders" in text
    layer = next(iter(coded.values()))
    assert f"{layer.index_coder}/{layer.weight_coder}" in text
