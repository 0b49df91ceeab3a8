"""benchmarks.bench_resnet's pieces, cheaply: the generated data, the prune plan, encode + table."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.bench_resnet import EXCLUDE, Settings, encode, layer_table, prune_targets
from benchmarks.shapes10 import CLASSES, dataset_files, synthetic_split
from deepcompression.compress.pruning import full_masks, prune_
from deepcompression.compress.quantization import (
    cluster_model,
    drop_unused_centroids,
    share_weights_,
    strip_,
)
from deepcompression.format.container import read_info
from deepcompression.format.loader import load
from deepcompression.training import predict_logits
from models import build_model


def test_generated_split_is_deterministic_balanced_rgb_32() -> None:
    first, again, other = (synthetic_split(40, seed, "t") for seed in (3, 3, 4))
    assert first.images.shape == (40, 3, 32, 32) and first.images.dtype == np.uint8
    assert np.array_equal(first.images, again.images)
    assert np.array_equal(first.labels, again.labels)
    assert not np.array_equal(first.images, other.images)
    assert np.bincount(first.labels, minlength=len(CLASSES)).tolist() == [4] * len(CLASSES)
    assert 20 < first.images.mean() < 235 and first.images.std() > 20


def test_dataset_loads_like_the_pipeline() -> None:
    files, data, (test_x, test_y) = dataset_files(30, 20, 10, seed=0)
    assert {"meta.json", "val-images-idx4-ubyte", "test-labels-idx1-ubyte"} <= set(files)
    assert tuple(data.train_x.shape) == (30, 3, 32, 32) and len(data.val_y) == 20
    assert tuple(test_x.shape) == (10, 3, 32, 32) and test_y.dtype == torch.int64
    assert abs(float(data.train_x.mean())) < 0.1  # normalised by the training images' stats


def _settings(**changes: float) -> Settings:
    base = dict(
        train_size=1, val_size=1, test_size=1, epochs=1, prune_iterations=1, retrain_epochs=1,
        finetune_epochs=1, batch_size=1, lr=0.1, retrain_lr=0.1, finetune_lr=0.1,
        conv_density=0.3, fc_density=0.1, conv_bits=5, fc_bits=5, seed=0,
    )  # fmt: skip
    return Settings(**{**base, **changes})


def test_prune_plan_keeps_the_first_conv_dense() -> None:
    model = build_model("resnet18", in_channels=3, image_size=32, num_classes=10)
    targets = prune_targets(model, _settings())
    assert EXCLUDE[0] not in targets and targets["fc"] == 0.1
    assert targets["layer4.1.conv2"] == targets["layer2.0.downsample.0"] == 0.3
    assert len(targets) == 20  # 16 block convs, 3 shortcut convs, fc


def test_encode_decodes_to_the_same_logits_and_tables_every_layer() -> None:
    torch.manual_seed(0)
    model = build_model("small_bn_cnn", in_channels=3, image_size=8, num_classes=4, width=4)
    masks = prune_(model, full_masks(model), {"features.1.0": 0.5, "fc": 0.5})
    books = cluster_model(model, masks, {"features.1.0": 3, "features.2.0": 4, "fc": 2})
    share_weights_(model, books)
    books = {key: drop_unused_centroids(book) for key, book in strip_(model).items()}
    data = encode(model, books)
    decoded = load(data)
    x = torch.randn(6, 3, 8, 8)
    assert torch.equal(predict_logits(decoded, x), predict_logits(model, x))
    table = "\n".join(layer_table(data))
    for key in books:
        assert key in table
    assert "features.0.0.weight" in table and "raw float32" in table  # not shared: stays raw
    assert f"{read_info(data).file_bytes:,}" in table.splitlines()[-1]
    assert read_info(data).provenance["params"]["data"]["name"] == "shapes-10"  # eval's hint
