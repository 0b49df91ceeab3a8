"""Data too large to preload is streamed: mapped read-only, checked in chunks, read in batches
through a DataLoader in the preloaded path's own order and normalised by its own function, so
training, evaluation, prediction and the whole pipeline give exactly the preloaded numbers.

`data.max_preload_bytes` is set tiny here so that data the tests make is streamed.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from test_cli_data import SHAPE, _compressed, _write_prepared
from test_datasets import data_config, prepare, write_idx_folder
from test_own_data import SHIPPED, params_file

from cli.errors import EXIT_OK
from cli.main import main
from deepcompression.compress.pruning import full_masks, prune_
from deepcompression.config import OptimConfig
from deepcompression.data import checksums
from deepcompression.data.errors import ChecksumError
from deepcompression.data.load import load_test, load_training
from deepcompression.data.mnist import TRAIN_IMAGES
from deepcompression.data.prepared import load_prepared, load_prepared_test
from deepcompression.data.streaming import StreamedImages, batches
from deepcompression.data.tensors import ImageTensors
from deepcompression.format.loader import load
from deepcompression.training import evaluate, fit, predict_logits, seed_everything
from models import build_model
from runtime import monitor
from tasks.io import load_checkpoint

VAL_SIZE = 12
SMALL_CHUNK = 256
"""Bytes per read while hashing, patched small so that every test file takes many reads."""


@pytest.fixture(scope="module")
def prepared(tmp_path_factory) -> Path:
    """A prepared folder (data stage output) of 48 training and 9 test 3x8x8 RGB images."""
    root = tmp_path_factory.mktemp("streaming")
    source = root / "source"
    write_idx_folder(source, size=8, channels=3, n_train=48, n_test=9)
    return prepare(data_config(source="idx", name="shapes", local_dir=str(source)), root)


class SpiedFile(io.FileIO):
    """A file open for reading that records the size of every `read` on it."""

    def __init__(self, path: Path, reads: list[tuple[str, int]]) -> None:
        super().__init__(path, "r")
        self.reads = reads

    def read(self, size: int = -1) -> bytes:
        chunk = super().read(size)
        self.reads.append((Path(str(self.name)).name, len(chunk)))
        return chunk


class FileSpy:
    """Records every file read: whole files through `read`, and each `read` on open handles."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.whole: list[str] = []
        self.reads: list[tuple[str, int]] = []

    def read(self, name: str) -> bytes:
        self.whole.append(name)
        return (self.folder / name).read_bytes()

    def open(self, name: str) -> SpiedFile:
        return SpiedFile(self.folder / name, self.reads)


def _spy_whole_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the files read whole (`Path.read_bytes`) from now on, in order."""
    whole: list[str] = []
    real_read_bytes = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        whole.append(self.name)
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    return whole


# ---- (1) the loaders stream what is over the limit, never reading it whole ----------------------


def test_a_split_over_the_limit_is_mapped_and_hashed_in_chunks_never_read_whole(
    prepared: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(checksums, "HASH_CHUNK_BYTES", SMALL_CHUNK)
    spy = FileSpy(prepared)
    data = load_prepared(spy.read, VAL_SIZE, str(prepared), spy.open, max_preload_bytes=1)
    test_x, test_y = load_prepared_test(spy.read, str(prepared), spy.open, max_preload_bytes=1)
    assert data.streamed
    assert isinstance(data.train_x, StreamedImages) and isinstance(test_x, StreamedImages)
    assert isinstance(data.train_x.images, np.memmap)
    assert (len(data.train_x), len(data.val_x), len(test_x)) == (36, 12, 9)
    assert data.train_x.shape == (36, 3, 8, 8) and len(test_y) == 9
    images = {"train-images-idx4-ubyte", "test-images-idx4-ubyte"}
    assert not images & set(spy.whole), "an images file was read whole"
    assert {name for name, _ in spy.reads} == images
    file_size = (prepared / "train-images-idx4-ubyte").stat().st_size
    assert max(size for _, size in spy.reads) <= SMALL_CHUNK < file_size
    preloaded = load_prepared(spy.read, VAL_SIZE, str(prepared))
    assert not preloaded.streamed and isinstance(preloaded.train_x, torch.Tensor)


def test_the_stage_loaders_preload_up_to_the_limit_and_stream_beyond(prepared: Path) -> None:
    train_file = 48 * 3 * 8 * 8 * 4  # the training file's images as float32 (train and val)
    assert not load_training(prepared, VAL_SIZE, train_file, mnist=False).streamed
    assert load_training(prepared, VAL_SIZE, train_file - 1, mnist=False).streamed
    test_file = 9 * 3 * 8 * 8 * 4
    assert isinstance(load_test(prepared, test_file, mnist=False)[0], torch.Tensor)
    assert isinstance(load_test(prepared, test_file - 1, mnist=False)[0], StreamedImages)


def test_a_streamed_file_is_still_checked_against_its_sha256(tmp_path: Path) -> None:
    source = tmp_path / "source"
    write_idx_folder(source, size=8, channels=3, n_train=30, n_test=6)
    folder = prepare(data_config(source="idx", name="bad", local_dir=str(source)), tmp_path)
    path = folder / "train-images-idx4-ubyte"
    body = bytearray(path.read_bytes())
    body[-1] ^= 1
    path.write_bytes(bytes(body))
    with pytest.raises(ChecksumError, match="train-images-idx4-ubyte"):
        load_training(folder, 6, 1, mnist=False)


def test_streamed_batches_equal_the_preloaded_tensors_slices(prepared: Path) -> None:
    preloaded = load_training(prepared, VAL_SIZE, mnist=False)
    streamed = load_training(prepared, VAL_SIZE, 1, mnist=False)
    order = torch.randperm(36, generator=torch.Generator().manual_seed(3))
    rows = [order[:10], order[10:30], order[30:], slice(5, 17)]
    for got, want in zip(
        batches(streamed.train_x, rows), batches(preloaded.train_x, rows), strict=True
    ):
        assert got.dtype == torch.float32 and torch.equal(got, want)
    assert torch.equal(streamed.train_y, preloaded.train_y)
    assert torch.equal(streamed.val_y, preloaded.val_y)


def test_mnist_streams_its_training_images_with_the_same_values(
    mnist_root: Path, mnist_tensors: ImageTensors, monkeypatch: pytest.MonkeyPatch
) -> None:
    whole = _spy_whole_reads(monkeypatch)
    streamed = load_training(mnist_root / "MNIST", 10_000, 1, mnist=True)
    assert TRAIN_IMAGES not in whole and streamed.streamed
    assert streamed.train_x.shape == mnist_tensors.train_x.shape
    spans = [slice(0, 5000), slice(45_000, 50_000)]
    pairs = zip(
        batches(streamed.train_x, spans), batches(mnist_tensors.train_x, spans), strict=True
    )
    for got, want in pairs:
        assert torch.equal(got, want)
    every = [slice(0, len(streamed.val_x))]
    assert torch.equal(next(batches(streamed.val_x, every)), mnist_tensors.val_x)
    assert torch.equal(streamed.train_y, mnist_tensors.train_y)


# ---- (2) training, evaluation and prediction give the preloaded numbers -----------------------


def _train(data: ImageTensors, masks: bool) -> tuple[torch.nn.Module, list]:
    """small_bn_cnn trained 2 epochs from seed 0 (pruned to half first when `masks`)."""
    generator = seed_everything(0)
    model = build_model("small_bn_cnn", **data.shape.model_kwargs())
    pruning = None
    if masks:
        layers = {name.rsplit(".", 1)[0]: 0.5 for name in full_masks(model)}
        pruning = prune_(model, full_masks(model), layers)
    cfg = OptimConfig(epochs=2, batch_size=10, lr=0.05, momentum=0.9, weight_decay=1e-4)
    history = fit(model, data.as_tuple(), cfg, generator, masks=pruning, eval_batch_size=7)
    return model, history


@pytest.mark.parametrize("masks", [False, True], ids=["train", "retrain-pruned"])
def test_fit_evaluate_and_predict_on_streamed_data_equal_the_preloaded(
    prepared: Path, masks: bool
) -> None:
    preloaded = load_training(prepared, VAL_SIZE, mnist=False)
    streamed = load_training(prepared, VAL_SIZE, 1, mnist=False)
    model, history = _train(preloaded, masks)
    twin, twin_history = _train(streamed, masks)
    strip = [dataclasses.replace(r, seconds=0.0) for r in history]
    assert strip == [dataclasses.replace(r, seconds=0.0) for r in twin_history]
    for key, value in model.state_dict().items():
        assert torch.equal(value, twin.state_dict()[key]), key
    test_x, test_y = load_test(prepared, mnist=False)
    streamed_x, streamed_y = load_test(prepared, 1, mnist=False)
    assert evaluate(model, test_x, test_y, 4) == evaluate(twin, streamed_x, streamed_y, 4)
    assert torch.equal(predict_logits(model, test_x, 4), predict_logits(twin, streamed_x, 4))


# ---- (3) the pipeline, end to end, streamed and preloaded --------------------------------------

STAGES = ("train", "prune", "quantize", "evaluate")
MODEL = "lenet_300_100"
"""Built for the data's 3x8x8 inputs; its params.yaml section, shortened, is the one shipped."""


def _pipeline(root: Path, source: Path, max_preload_bytes: int) -> Path:
    """data -> train -> prune -> quantize -> encode -> evaluate for MODEL on `source`, with
    the API offline (every flow runs as a plain function)."""
    from flows.data import data_flow
    from flows.encode import encode_flow
    from flows.evaluate import evaluate_flow
    from flows.prune import prune_flow
    from flows.quantize import quantize_flow
    from flows.train import train_flow

    data = {
        "source": "idx",
        "name": "shapes",
        "local_dir": str(source),
        "val_size": VAL_SIZE,
        "max_preload_bytes": max_preload_bytes,
    }
    root.mkdir()
    section = copy.deepcopy(SHIPPED["models"][MODEL])
    section["allocation"] = "params"  # the hand tables: no search run here
    section["train"]["epochs"] = 2
    section["prune"]["iterations"] = 2
    section["prune"]["retrain"]["epochs"] = 1
    section["quantize"]["finetune"]["epochs"] = 1
    path = params_file(root, data, **{MODEL: section})
    data_flow(str(path), str(root))
    for stage in (train_flow, prune_flow, quantize_flow, encode_flow, evaluate_flow):
        stage(str(path), str(root), MODEL)
    return root


@pytest.fixture(scope="module")
def both_runs(tmp_path_factory) -> tuple[Path, Path, list[Path]]:
    """The pipeline run preloaded and streamed (max_preload_bytes 1) on the same data, and every
    file either run read whole."""
    base = tmp_path_factory.mktemp("pipelines")
    source = base / "source"
    write_idx_folder(source, size=8, channels=3, n_train=48, n_test=9)
    whole: list[Path] = []
    real_read_bytes = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        whole.append(self)
        return real_read_bytes(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "read_bytes", read_bytes)
        patch.setenv(monitor.PENDING_DIR_ENV, str(base / "pending"))
        monitor.reset()
        monitor.go_offline("tests: the flows run as plain functions")
        try:
            runs = (
                _pipeline(base / "preloaded", source, 2_000_000_000),
                _pipeline(base / "streamed", source, 1),
            )
        finally:
            monitor.reset()
    return (*runs, whole)


def test_the_pipeline_streamed_matches_the_preloaded_run_exactly(both_runs) -> None:
    preloaded, streamed, whole = both_runs
    prepared_images = [p for p in whole if "data" in p.parts and "images" in p.name]
    assert [p for p in prepared_images if preloaded in p.parents], "the spy saw no read"
    assert not [p for p in prepared_images if streamed in p.parents], "a stage read images whole"
    header_sized = {"file_bytes", "file_ratio"}  # the header records params: the limit differs
    for stage in STAGES:
        want = json.loads((preloaded / f"metrics/{MODEL}/{stage}.json").read_text())
        got = json.loads((streamed / f"metrics/{MODEL}/{stage}.json").read_text())
        assert {k: v for k, v in got.items() if k not in header_sized} == {
            k: v for k, v in want.items() if k not in header_sized
        }, stage
    runs = (preloaded, streamed)
    files = [load((run / f"compressed/{MODEL}.dcz").read_bytes()) for run in runs]
    decoded, twin = (model.state_dict() for model in files)
    assert all(torch.equal(twin[key], value) for key, value in decoded.items())
    evaluation = json.loads((streamed / f"metrics/{MODEL}/evaluate.json").read_text())
    assert evaluation["logits_equal_quantized"] is True and evaluation["test_samples"] == 9
    for checkpoint in ("dense", "pruned", "quantized"):
        want = load_checkpoint(preloaded / f"checkpoints/{MODEL}/{checkpoint}.pt")
        got = load_checkpoint(streamed / f"checkpoints/{MODEL}/{checkpoint}.pt")
        for key, value in want.state_dict.items():
            assert torch.equal(got.state_dict[key], value), (checkpoint, key)


# ---- deepcompression eval streams a test set over --max-preload-bytes --------------------------


@pytest.mark.parametrize("data", ["prepared", "mnist"])
def test_cli_eval_streams_the_test_set_with_the_same_result(
    data: str, mnist_root: Path, tmp_path: Path, capsys, monkeypatch: pytest.MonkeyPatch
) -> None:
    if data == "prepared":
        folder, file = _write_prepared(tmp_path / "tiny"), _compressed("lenet_300_100", **SHAPE)
    else:
        folder, file = mnist_root, _compressed("lenet_300_100", data_name=None)
    path = tmp_path / "model.dcz"
    path.write_bytes(file)
    argv = ["eval", str(path), "--data", str(folder), "--device", "cpu", "--json"]
    assert main(argv) == EXIT_OK
    preloaded = json.loads(capsys.readouterr().out)
    whole = _spy_whole_reads(monkeypatch)
    assert main([*argv, "--max-preload-bytes", "1"]) == EXIT_OK
    streamed = json.loads(capsys.readouterr().out)
    assert not [name for name in whole if "images" in name], whole
    for key in ("test_error", "test_loss", "test_samples"):
        assert streamed[key] == preloaded[key], key
