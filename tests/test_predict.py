"""``deepcompression predict`` on real compressed files: PNG/JPEG images, IDX files and folders,
MNIST's normalisation by default or a prepared folder's (with class names), probabilities equal
to the decoded network's, and one-line refusals of inputs that do not fit."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from compressed_files import compressed
from PIL import Image

from cli.errors import EXIT_OK, EXIT_USAGE
from cli.main import main
from deepcompression.data.idx import encode_idx
from deepcompression.data.mnist import normalise_mnist
from deepcompression.data.tensors import normalise
from deepcompression.data.writer import RawDataset, Split, prepare
from deepcompression.format.loader import load
from deepcompression.inference import MNIST_INPUT, InputSpec, Prediction, predict
from models import build_model

CLASSES = ("ankle boot", "bag", "coat")
RGB_SIDE = 12


def _digits(count: int, seed: int = 0) -> np.ndarray:
    """uint8 (count, 28, 28) random grey images."""
    return np.random.default_rng(seed).integers(0, 256, (count, 28, 28), dtype=np.uint8)


def _expected(model_bytes: bytes, x: torch.Tensor) -> torch.Tensor:
    """Class probabilities of the decoded network on normalised `x`."""
    with torch.no_grad():
        return torch.softmax(load(model_bytes)(x).double(), dim=1)


def _run_json(capsys: pytest.CaptureFixture, *argv: str) -> dict:
    assert main(["predict", *argv, "--device", "cpu", "--json"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert err == ""
    return json.loads(out)


def _one_error_line(capsys: pytest.CaptureFixture, argv: list[str]) -> str:
    assert main(["predict", *argv, "--device", "cpu"]) == EXIT_USAGE
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert out == "" and len(lines) == 1, err
    assert lines[0].startswith("deepcompression: error: ") and "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def lenet5(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, bytes]:
    """An MNIST LeNet-5 file and its bytes."""
    data = compressed("lenet5")
    path = tmp_path_factory.mktemp("predict") / "lenet5.dcz"
    path.write_bytes(data)
    return path, data


def test_pngs_jpegs_idx_and_folders_give_the_networks_probabilities(
    lenet5: tuple[Path, bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, data = lenet5
    images = _digits(5)
    folder = tmp_path / "digits"
    folder.mkdir()
    for index in range(3):
        Image.fromarray(images[index]).save(folder / f"{index}.png")
    (folder / "notes.txt").write_text("not an image")
    idx = tmp_path / "t10k-images-idx3-ubyte"
    idx.write_bytes(encode_idx(images[3:]))
    report = _run_json(capsys, str(path), str(folder), str(idx))

    names = [entry["input"] for entry in report["predictions"]]
    assert names == [str(folder / f"{i}.png") for i in range(3)] + [f"{idx}[0]", f"{idx}[1]"]
    expected = _expected(data, normalise_mnist(torch.from_numpy(images)[:, None]))
    for entry, probabilities in zip(report["predictions"], expected, strict=True):
        best = int(probabilities.argmax())
        assert entry["class"] == best and entry["name"] is None
        assert entry["probability"] == pytest.approx(float(probabilities[best]), abs=1e-12)
        assert [item["class"] for item in entry["top"]] == probabilities.argsort(
            descending=True
        )[:3].tolist()


def test_text_output_names_each_input_with_its_top_classes(
    lenet5: tuple[Path, bytes], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, data = lenet5
    image = tmp_path / "seven.jpg"
    Image.fromarray(_digits(1)[0]).convert("RGB").resize((56, 40)).save(image, quality=95)
    assert main(["predict", str(path), str(image), "--top", "2", "--device", "cpu"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert err == ""
    grey = np.asarray(Image.open(image).convert("L").resize((28, 28), Image.Resampling.BILINEAR))
    probabilities = _expected(data, normalise_mnist(torch.from_numpy(grey.copy())[None, None]))[0]
    best, second = probabilities.argsort(descending=True)[:2].tolist()
    assert out == (
        f"{image}: {best} {100 * probabilities[best]:.2f}%; top 2: {best} "
        f"{100 * probabilities[best]:.2f}%, {second} {100 * probabilities[second]:.2f}%\n"
    )


@pytest.fixture
def named_data(tmp_path: Path) -> Path:
    """A prepared RGB folder (12x12, three named classes) written as the data stage writes it."""
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (12, 3, RGB_SIDE, RGB_SIDE), dtype=np.uint8)
    labels = np.arange(12, dtype=np.int64) % len(CLASSES)
    split = Split(images, labels, "images", "labels")
    files, _ = prepare(RawDataset(split, split, classes=CLASSES), name="shop", source="imagefolder")
    folder = tmp_path / "data" / "shop"
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def test_a_prepared_folder_gives_normalisation_and_class_names(
    named_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    kwargs = {"in_channels": 3, "image_size": RGB_SIDE, "num_classes": len(CLASSES)}
    data = compressed("small_bn_cnn", {"params": {"data": {"source": "imagefolder"}}}, **kwargs)
    path = tmp_path / "shop.dcz"
    path.write_bytes(data)
    image = np.random.default_rng(4).integers(0, 256, (RGB_SIDE, RGB_SIDE, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "item.png")
    report = _run_json(capsys, str(path), str(tmp_path / "item.png"), "--data", str(named_data))

    meta = json.loads((named_data / "meta.json").read_text())
    chw = torch.from_numpy(image.transpose(2, 0, 1).copy())[None]
    x = normalise(chw, meta["mean"], meta["std"])
    probabilities = _expected(data, x)[0]
    (entry,) = report["predictions"]
    assert entry["class"] == int(probabilities.argmax())
    assert entry["name"] == CLASSES[entry["class"]]
    assert [item["name"] for item in entry["top"]] == [
        CLASSES[c] for c in probabilities.argsort(descending=True).tolist()
    ]
    assert main(["predict", str(path), str(tmp_path / "item.png"), "--data", str(named_data)]) == 0
    assert f"{entry['class']} ({entry['name']})" in capsys.readouterr().out


def test_inputs_that_do_not_fit_are_one_line_errors(
    lenet5: tuple[Path, bytes], named_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path, _ = lenet5
    wrong_side = tmp_path / "small-idx3-ubyte"
    wrong_side.write_bytes(encode_idx(np.zeros((2, 20, 20), np.uint8)))
    assert "(2, 20, 20)" in _one_error_line(capsys, [str(path), str(wrong_side)])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    assert "not a readable image" in _one_error_line(capsys, [str(path), str(text)])
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no images in this folder" in _one_error_line(capsys, [str(path), str(empty)])
    line = _one_error_line(capsys, [str(path), str(text), "--data", str(named_data)])
    assert "in_channels: network 1, input 3" in line and "--data" in line
    assert "no meta.json" in _one_error_line(capsys, [str(path), str(text), "--data", str(empty)])


def test_a_file_made_for_other_data_needs_its_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    provenance = {"params": {"data": {"source": "imagefolder", "name": "shop"}}}
    path = tmp_path / "shop.dcz"
    path.write_bytes(compressed("lenet_300_100", provenance))
    image = tmp_path / "x.png"
    Image.fromarray(_digits(1)[0]).save(image)
    assert "--data data/shop" in _one_error_line(capsys, [str(path), str(image)])


def test_predict_in_the_library_matches_the_spec() -> None:
    model = build_model("lenet_300_100").eval()
    images = torch.from_numpy(_digits(4, seed=9))[:, None]
    predictions = predict(model, images, MNIST_INPUT, batch_size=3)
    expected = _expected_from(model, normalise_mnist(images))
    assert [p.best for p in predictions] == expected.argmax(1).tolist()
    assert all(abs(sum(p.probabilities) - 1) < 1e-9 for p in predictions)
    with pytest.raises(ValueError, match=r"shape \(N, 1, 28, 28\)"):
        MNIST_INPUT.prepare(images[:, :, :20])
    assert Prediction((0.2, 0.4, 0.4)).top(2) == [(1, 0.4), (2, 0.4)]
    with pytest.raises(ValueError, match="2 class names for 3 classes"):
        InputSpec(1, 28, (0.5,), (0.5,), 3, ("a", "b"))


def _expected_from(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.softmax(model(x).double(), dim=1)
