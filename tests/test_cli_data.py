"""``deepcompression eval`` on the data a file was made for: a prepared ``data/<name>`` folder
(meta.json + uint8 IDX, written here with the library's own writer) or MNIST, and refusals of
data that does not fit the file's network."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from cli.errors import EXIT_OK, EXIT_USAGE
from cli.evaluate import DATA_HELP
from cli.main import main
from deepcompression.compress.pruning import full_masks, prune_
from deepcompression.compress.quantization import cluster_model
from deepcompression.data.mnist import MNIST_SHAPE
from deepcompression.data.prepared import META_FILE, load_prepared_test, split_files
from deepcompression.data.writer import RawDataset, Split, prepare
from deepcompression.format.container import QuantizedTensor, encode_model
from deepcompression.format.loader import load
from deepcompression.training import evaluate
from models import build_model, model_arch

CHANNELS, SIDE, CLASSES = 3, 12, 4
SHAPE = {"in_channels": CHANNELS, "image_size": SIDE, "num_classes": CLASSES}
COUNTS = {"train": 40, "test": 24}


def _split(name: str, count: int, seed: int) -> Split:
    """Random uint8 images and labels 0..CLASSES-1 (every class present)."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, CHANNELS, SIDE, SIDE), dtype=np.uint8)
    labels = np.arange(count, dtype=np.int64) % CLASSES
    rng.shuffle(labels)
    return Split(images, labels, f"{name} images", f"{name} labels")


def _write_prepared(folder: Path, name: str = "tiny") -> Path:
    """A prepared folder written by data.writer.prepare, as the data stage does."""
    raw = RawDataset(
        train=_split("train", COUNTS["train"], 1), test=_split("test", COUNTS["test"], 2)
    )
    files, _ = prepare(raw, name=name, source="imagefolder")
    folder.mkdir(parents=True)
    for file, data in files.items():
        (folder / file).write_bytes(data)
    return folder


def _compressed(model_name: str, data_name: str | None = "tiny", **kwargs: int) -> bytes:
    """A pruned, k-means-shared model encoded by the container (BatchNorm buffers raw, v2)."""
    torch.manual_seed(0)
    model = build_model(model_name, **kwargs)
    masks = prune_(model, full_masks(model), _half(model), "magnitude")
    codebooks = cluster_model(model, masks, {key[: -len(".weight")]: 3 for key in masks})
    quantized = [
        QuantizedTensor(key, book.mask, book.labels, book.centroids, book.bits, 4)
        for key, book in codebooks.items()
    ]
    raw = {k: v for k, v in model.state_dict().items() if k not in codebooks}
    provenance: dict = {}
    if data_name is not None:
        provenance = {"params": {"data": {"source": "imagefolder", "name": data_name}}}
    return encode_model(quantized, raw, model_arch(model), provenance)


def _half(model: torch.nn.Module) -> dict[str, float]:
    """Every prunable layer to 50% density."""
    return {key[: -len(".weight")]: 0.5 for key in full_masks(model)}


@pytest.fixture
def prepared(tmp_path: Path) -> Path:
    return _write_prepared(tmp_path / "data" / "tiny")


def _one_error_line(err: str) -> str:
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("deepcompression: error: ") and "Traceback" not in err
    return " ".join(lines[0].split())


@pytest.mark.parametrize(
    ("model_name", "extra"),
    [("lenet_300_100", {}), ("small_bn_cnn", {"width": 4})],
    ids=["lenet_300_100", "small_bn_cnn"],
)
def test_eval_on_a_prepared_folder_equals_the_library(
    model_name: str,
    extra: dict,
    prepared: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    data = _compressed(model_name, **SHAPE, **extra)
    path = tmp_path / f"{model_name}.dcz"
    path.write_bytes(data)
    argv = ["eval", str(path), "--data", str(prepared), "--device", "cpu"]
    assert main([*argv, "--json"]) == EXIT_OK
    out, err = capsys.readouterr()
    assert err == ""
    result = json.loads(out)

    model = load(data)
    x, y = load_prepared_test(lambda name: (prepared / name).read_bytes(), str(prepared))
    expected = evaluate(model, x, y)
    assert (result["test_error"], result["test_loss"]) == (expected.error, expected.loss)
    assert result["test_samples"] == COUNTS["test"] == expected.samples
    assert (result["data"], result["data_folder"]) == ("tiny", str(prepared))
    assert result["arch"] == model_name

    assert main([*argv, "--batch-size", "5"]) == EXIT_OK
    human = capsys.readouterr().out
    assert f"{100 * expected.error:.2f}%" in human and "tiny" in human


def test_eval_refuses_data_of_another_shape(
    prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "grey.dcz"
    path.write_bytes(_compressed("lenet_300_100", in_channels=1, image_size=SIDE, num_classes=2))
    code = main(["eval", str(path), "--data", str(prepared), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    line = _one_error_line(err)
    assert "in_channels=1, image_size=12, num_classes=2" in line  # the file's
    assert "in_channels=3, image_size=12, num_classes=4" in line  # the data's
    assert str(path) in line and str(prepared) in line and "--data" in line


def test_eval_refuses_mnist_for_a_file_made_for_other_data(
    mnist_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "rgb.dcz"
    path.write_bytes(_compressed("lenet_300_100", **SHAPE))
    for data in (mnist_root, mnist_root / "MNIST"):  # MNIST/raw under it, and raw/ in it
        assert main(["eval", str(path), "--data", str(data), "--device", "cpu"]) == EXIT_USAGE
        line = _one_error_line(capsys.readouterr().err)
        assert "in_channels=3, image_size=12, num_classes=4" in line
        assert "in_channels=1, image_size=28, num_classes=10" in line and "MNIST" in line


def test_eval_without_data_names_the_folder_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)  # no data/ here: the refusal comes before any data is looked at
    named, unnamed = tmp_path / "named.dcz", tmp_path / "unnamed.dcz"
    named.write_bytes(_compressed("lenet_300_100", "pets", **SHAPE))
    unnamed.write_bytes(_compressed("lenet_300_100", None, **SHAPE))
    assert main(["eval", str(named), "--device", "cpu"]) == EXIT_USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert "--data data/pets" in line and "in_channels=3, image_size=12, num_classes=4" in line
    assert main(["eval", str(unnamed), "--device", "cpu"]) == EXIT_USAGE
    line = _one_error_line(capsys.readouterr().err)
    assert "--data data/<name>" in line and "meta.json" in line

    # MNIST-shaped, but the provenance says it was made for another data set
    grey = tmp_path / "fashion.dcz"
    grey.write_bytes(_compressed("lenet_300_100", "fashion", **MNIST_SHAPE.model_kwargs()))
    assert main(["eval", str(grey), "--device", "cpu"]) == EXIT_USAGE
    assert "--data data/fashion" in _one_error_line(capsys.readouterr().err)


def test_eval_default_data_reads_the_prepared_folder_given(
    prepared: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The folder the refusal names works as given, relative to the working directory."""
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "m.dcz"
    path.write_bytes(_compressed("lenet_300_100", **SHAPE))
    assert main(["eval", str(path), "--data", "data/tiny", "--json", "--device", "cpu"]) == EXIT_OK
    assert json.loads(capsys.readouterr().out)["test_samples"] == COUNTS["test"]


def _drop_test_images(folder: Path) -> str:
    (folder / split_files("test")[0]).unlink()
    return f"{split_files('test')[0]} not found"


def _flip_a_test_byte(folder: Path) -> str:
    target = folder / split_files("test")[0]
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.write_bytes(bytes(data))
    return "sha256"


def _break_meta(folder: Path) -> str:
    (folder / META_FILE).write_text("{not json")
    return "not valid JSON"


@pytest.mark.parametrize(
    "damage",
    [_drop_test_images, _flip_a_test_byte, _break_meta],
    ids=["missing-test-file", "checksum", "bad-meta"],
)
def test_eval_on_a_damaged_prepared_folder_is_one_line(
    damage, prepared: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = tmp_path / "m.dcz"
    path.write_bytes(_compressed("lenet_300_100", **SHAPE))
    expected = damage(prepared)
    code = main(["eval", str(path), "--data", str(prepared), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    line = _one_error_line(err)
    assert expected.lower() in line.lower() and str(prepared) in line and "dvc repro data" in line


@pytest.mark.parametrize("shape", [MNIST_SHAPE.model_kwargs(), SHAPE], ids=["mnist", "rgb"])
def test_eval_on_a_missing_folder_is_one_line(
    shape: dict, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    """A folder that is not there is reported as such, before any shape comparison."""
    path = tmp_path / "m.dcz"
    path.write_bytes(_compressed("lenet_300_100", None, **shape))
    missing = tmp_path / "nowhere"
    code = main(["eval", str(path), "--data", str(missing), "--device", "cpu"])
    out, err = capsys.readouterr()
    assert code == EXIT_USAGE and out == ""
    line = _one_error_line(err)
    assert f"no test set under {missing} (no such folder)" in line
    assert "--data" in line and "meta.json" in line and "dvc repro data" in line


def test_eval_help_names_both_kinds_of_folder(capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--help"]) == EXIT_OK
    assert DATA_HELP in " ".join(capsys.readouterr().out.split())


def test_eval_on_a_prepared_folder_imports_no_prefect(prepared: Path, tmp_path: Path) -> None:
    path = tmp_path / "m.dcz"
    path.write_bytes(_compressed("lenet_300_100", **SHAPE))
    script = (
        "import sys; from cli.main import main; "
        f"code = main(['eval', {str(path)!r}, '--data', {str(prepared)!r}, '--device', 'cpu']); "
        "assert code == 0, code; "
        "assert not [m for m in sys.modules if m.split('.')[0] in ('prefect', 'tasks', 'flows')]"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parents[1],
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "test samples" in done.stdout
