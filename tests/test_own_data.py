"""Your own network on your own data: models built for the data's shape, layers left out of
compression by name, your own trained weights instead of training, and the whole pipeline
(data -> train -> prune -> quantize -> encode -> evaluate) on a generated image folder with a
BatchNorm CNN (grouped and depthwise convolutions), decoded from the file in the end.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from test_datasets import write_image_folder

from deepcompression.checkpoint import Checkpoint
from deepcompression.config import ConfigError, RunConfig, TrainConfig
from deepcompression.data.load import load_training
from deepcompression.data.mnist import MNIST_SHAPE
from deepcompression.data.tensors import DataShape, ImageTensors
from deepcompression.format.container import read_info
from deepcompression.format.loader import load, load_with_info
from deepcompression.plan import compressible_layers, plan_layers
from deepcompression.pretrained import PretrainedError
from flows.params import load_params
from models import build_model
from tasks.io import load_checkpoint
from tasks.train import dense_arch, train_dense

pytestmark = pytest.mark.long(23)

ROOT = Path(__file__).parents[1]
SHIPPED = yaml.safe_load((ROOT / "params.yaml").read_text())
SHAPE = DataShape(channels=3, image_size=8, num_classes=3)
BN_CNN_LAYERS = ["features.0.0", "features.1.0", "features.2.0", "fc"]


def bn_cnn_section(**train) -> dict:
    """A quick models.small_bn_cnn section: one table value per layer kind."""
    optim = {"epochs": 1, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0}
    optim["lr_schedule"] = "constant"
    return {
        "train": {**optim, "epochs": 4, **train},
        "prune": {
            "method": "magnitude",
            "schedule": "geometric",
            "iterations": 2,
            "density": {"conv": 0.5, "fc": 0.5},
            "quality": {"conv": 0.5, "fc": 0.5},
            "retrain": {**optim, "lr": 0.01},
            "exclude": ["features.0.*"],
            "units": {"conv": 1.0, "fc": 1.0},
        },
        "quantize": {
            "bits": {"conv": 4, "fc": 4},
            "init": "linear",
            "engine": "sorted",
            "finetune": {**optim, "lr": 0.001},
            "bias": "float32",
            "codebook": "float16",
        },
        "encode": {"index_bits": {"conv": 4, "fc": 4}},
    }


def params_file(tmp_path: Path, data: dict | None = None, **models: dict) -> Path:
    """The shipped params with `data` overrides and `models` as the only models."""
    raw = copy.deepcopy(SHIPPED)
    raw["data"].update(data or {})
    raw["models"] = models
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


# ---- models sized by the data, layers excluded by name ------------------------------------------


def test_the_plan_is_for_the_network_built_for_the_data(tmp_path: Path) -> None:
    params, mnist_plan = load_params(params_file(tmp_path, small_bn_cnn=bn_cnn_section()))
    plan = plan_layers(params, SHAPE)
    network = build_model("small_bn_cnn", **SHAPE.model_kwargs())
    numel = {name: m.weight.numel() for name, m in compressible_layers(network).items()}
    assert list(plan) == BN_CNN_LAYERS[1:], "features.0.* is excluded"
    assert {name: p.numel for name, p in plan.items()} == {n: numel[n] for n in plan}
    assert plan["fc"].numel == 16 * 3 != mnist_plan["fc"].numel


@pytest.mark.parametrize(
    ("exclude", "tables", "message"),
    [
        (["fc9*"], {}, "prune.exclude[0]: 'fc9*' matches no Linear/Conv2d layer; layers: "),
        (["*"], {}, "prune.exclude: excludes every Linear/Conv2d layer"),
        (
            ["fc"],
            {"density": {"conv": 0.5, "fc": 0.5}, "quality": {"fc": 1.0, "conv": 1.0}},
            "",
        ),
    ],
)
def test_exclude_patterns_are_checked(tmp_path, exclude, tables, message) -> None:
    section = bn_cnn_section()
    section["prune"]["exclude"] = exclude
    section["prune"].update(tables)
    path = params_file(tmp_path, small_bn_cnn=section)
    if message:
        with pytest.raises(ConfigError, match=re.escape(message)):
            load_params(path)
    else:
        _, plan = load_params(path)
        assert "fc" not in plan and list(plan) == BN_CNN_LAYERS[:3]


def test_a_table_entry_for_an_excluded_layer_is_an_error(tmp_path: Path) -> None:
    section = bn_cnn_section()
    section["quantize"]["bits"] = {"conv": 4, "fc": 4, "features.0.0": 6}
    with pytest.raises(ConfigError, match=r"bits.features.0.0: layer 'features.0.0' is excluded"):
        load_params(params_file(tmp_path, small_bn_cnn=section))


def test_mnist_shaped_data_keeps_the_bare_arch_other_data_records_its_kwargs() -> None:
    mnist = build_model("lenet5", **MNIST_SHAPE.model_kwargs())
    assert dense_arch(mnist, MNIST_SHAPE) == {"name": "lenet5", "kwargs": {}}
    other = build_model("small_bn_cnn", **SHAPE.model_kwargs())
    arch = dense_arch(other, SHAPE)
    assert arch["kwargs"] == {"in_channels": 3, "image_size": 8, "num_classes": 3, "width": 8}
    rebuilt = Checkpoint.of(other, arch).build()
    assert rebuilt(torch.zeros(2, 3, 8, 8)).shape == (2, 3)


# ---- your own trained weights instead of training -----------------------------------------------


def _tiny_data(n: int = 24) -> ImageTensors:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, 8, 8, generator=generator)
    y = torch.arange(n) % 3
    return ImageTensors(x[:18], y[:18], x[18:], y[18:], num_classes=3)


def _run() -> RunConfig:
    return RunConfig(seed=0, device="cpu", eval_batch_size=100)


def test_a_checkpoint_that_does_not_fit_lists_missing_unexpected_and_mis_shaped_keys(tmp_path):
    state = build_model("small_bn_cnn", in_channels=3, num_classes=4).state_dict()
    state["head.weight"] = state.pop("features.2.1.weight")
    path = tmp_path / "mine.pt"
    torch.save(state, path)
    cfg = TrainConfig(checkpoint=str(path))
    with pytest.raises(PretrainedError) as info:
        train_dense.fn("small_bn_cnn", cfg, _run(), _tiny_data())
    message = str(info.value)
    assert str(path) in message and "'small_bn_cnn'" in message
    assert "missing keys: features.2.1.weight" in message
    assert "unexpected keys: head.weight" in message
    assert "wrong shapes: fc.weight (4, 16) (network: (3, 16)), fc.bias (4,) (network: (3,))" in (
        message
    )


def test_a_file_that_is_not_a_state_dict_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.pt"
    torch.save([1, 2, 3], path)
    with pytest.raises(PretrainedError, match="holds a list, not a state_dict"):
        train_dense.fn("small_bn_cnn", TrainConfig(checkpoint=str(path)), _run(), _tiny_data())
    path.write_bytes(b"not a torch file")
    with pytest.raises(PretrainedError, match="not a readable torch.save file"):
        train_dense.fn("small_bn_cnn", TrainConfig(checkpoint=str(path)), _run(), _tiny_data())
    with pytest.raises(PretrainedError, match="cannot be read"):
        train_dense.fn(
            "small_bn_cnn", TrainConfig(checkpoint=str(tmp_path / "no.pt")), _run(), _tiny_data()
        )


def test_a_fitting_checkpoint_is_taken_as_the_dense_model(tmp_path: Path) -> None:
    torch.manual_seed(7)
    mine = build_model("small_bn_cnn", **SHAPE.model_kwargs())
    path = tmp_path / "mine.pt"
    torch.save({"state_dict": mine.state_dict(), "epoch": 12}, path)
    checkpoint, history = train_dense.fn(
        "small_bn_cnn", TrainConfig(checkpoint=str(path), epochs=50), _run(), _tiny_data()
    )
    assert checkpoint.arch == dense_arch(mine, SHAPE)
    assert checkpoint.state_dict.keys() == mine.state_dict().keys()
    for key, value in mine.state_dict().items():
        assert torch.equal(checkpoint.state_dict[key], value), key
    assert len(history) == 1 and history[0].epoch == 0 and history[0].lr == 0.0
    assert 0.0 <= history[0].val_error <= 1.0


# ---- the pipeline, end to end, on your own data --------------------------------------------------


@pytest.fixture(scope="module")
def own_run(tmp_path_factory, prefect_api):
    """The whole pipeline on a generated 3-class RGB image folder with small_bn_cnn (first conv
    excluded), every prepared test-file read recorded; returns (workspace, params, result, spy)."""
    from flows.pipeline import pipeline_flow

    workspace = tmp_path_factory.mktemp("own")
    source = write_image_folder(workspace / "pets", {"train": 24, "test": 8}, size=10)
    data = {
        "source": "imagefolder",
        "name": "pets",
        "local_dir": str(source),
        "image_size": 8,
        "mean": [0.45, 0.45, 0.45],
        "std": [0.3, 0.3, 0.3],
        "val_size": 18,
    }
    path = params_file(workspace, data, small_bn_cnn=bn_cnn_section())
    opened: list[tuple[str, str]] = []
    real_read_bytes = Path.read_bytes

    def read_bytes(self):
        from prefect.context import FlowRunContext

        if self.name.startswith(("test-images", "test-labels")):
            context = FlowRunContext.get()
            opened.append((context.flow.name if context else "<no flow>", self.name))
        return real_read_bytes(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "read_bytes", read_bytes)
        result = pipeline_flow(str(path), str(workspace))
    return workspace, path, result, opened


@pytest.mark.slow
def test_own_data_runs_through_every_stage_and_the_file_decodes(own_run) -> None:
    workspace, _, result, _ = own_run
    headline = result["small_bn_cnn"]
    assert headline["file_bytes"] == (workspace / "compressed/small_bn_cnn.dcz").stat().st_size
    evaluation = json.loads((workspace / "metrics/small_bn_cnn/evaluate.json").read_text())
    assert evaluation["logits_equal_quantized"] is True
    assert evaluation["test_samples"] == 24 and evaluation["val_samples"] == 18
    model, decoded = load_with_info((workspace / "compressed/small_bn_cnn.dcz").read_bytes())
    assert decoded.arch["kwargs"] == SHAPE.model_kwargs() | {"width": 8}
    data = load_training(workspace / "data" / "pets", 18, mnist=False)
    quantized = load_checkpoint(workspace / "checkpoints/small_bn_cnn/quantized.pt").build()
    with torch.no_grad():  # eval(): a forward pass in train mode would move BatchNorm's stats
        logits = model.eval()(data.val_x)
        assert logits.shape == (18, 3)
        assert torch.equal(logits, quantized.eval()(data.val_x))


@pytest.mark.slow
def test_excluded_layers_stay_dense_float32_in_the_file(own_run) -> None:
    workspace, *_ = own_run
    pruned = load_checkpoint(workspace / "checkpoints/small_bn_cnn/pruned.pt")
    assert bool(pruned.masks["features.0.0.weight"].all()), "the excluded layer is not pruned"
    assert float(pruned.masks["fc.weight"].float().mean()) == pytest.approx(0.5, abs=0.05)
    quantized = load_checkpoint(workspace / "checkpoints/small_bn_cnn/quantized.pt")
    assert "features.0.0.weight" not in quantized.centroids and "fc.weight" in quantized.centroids
    info = read_info((workspace / "compressed/small_bn_cnn.dcz").read_bytes())
    kinds = {layer.name: (layer.kind, layer.dtype) for layer in info.layers}
    assert kinds["features.0.0.weight"] == ("raw", "float32")
    assert kinds["fc.weight"][0] != "raw"
    assert kinds["features.0.1.num_batches_tracked"] == ("raw", "int64")
    model = load((workspace / "compressed/small_bn_cnn.dcz").read_bytes())
    stored = model.state_dict()["features.0.0.weight"]
    assert torch.equal(stored, quantized.state_dict["features.0.0.weight"])


@pytest.mark.slow
def test_only_evaluate_reads_the_prepared_test_split(own_run) -> None:
    *_, opened = own_run
    assert {flow for flow, _ in opened} == {"evaluate"}, opened


@pytest.mark.slow
def test_your_own_checkpoint_enters_the_pipeline_as_the_dense_model(own_run, tmp_path) -> None:
    from flows.train import train_flow

    workspace, path, *_ = own_run
    dense = load_checkpoint(workspace / "checkpoints/small_bn_cnn/dense.pt")
    trained = json.loads((workspace / "metrics/small_bn_cnn/train.json").read_text())
    mine = tmp_path / "mine.pt"
    torch.save(dense.state_dict, mine)
    raw = yaml.safe_load(path.read_text())
    raw["models"]["small_bn_cnn"]["train"]["checkpoint"] = str(mine)
    other = tmp_path / "params.yaml"
    other.write_text(yaml.safe_dump(raw, sort_keys=False))
    metrics = train_flow(str(other), str(workspace), "small_bn_cnn")
    assert metrics["val_error"] == trained["val_error"]
    again = load_checkpoint(workspace / "checkpoints/small_bn_cnn/dense.pt")
    assert again.arch == dense.arch
    assert all(torch.equal(again.state_dict[k], v) for k, v in dense.state_dict.items())
