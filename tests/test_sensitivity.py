"""Per-layer sensitivity: the points are right on a tiny model, seeds follow the curves, and the
stage writes its metrics and figure with one task run per point."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import torch
import yaml

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.pruning import full_masks, prune_
from deepcompression.config import OptimConfig
from deepcompression.search.sensitivity import (
    SensitivityPoint,
    prune_layer_alone,
    seed_allocations,
    share_layer_alone,
)
from deepcompression.search.space import Allocation, LayerAllocation
from deepcompression.training import evaluate
from models import build_model
from tasks.io import save_checkpoint

pytestmark = pytest.mark.long(9)

torch.set_num_threads(1)
ROOT = Path(__file__).parents[1]
MODEL = "lenet_300_100"


def dense_checkpoint(seed: int = 0) -> Checkpoint:
    """An untrained LeNet-300-100 (the curves' mechanics do not need a trained one)."""
    torch.manual_seed(seed)
    return Checkpoint.of(build_model(MODEL), {"name": MODEL, "kwargs": {}})


def splits(n_train: int = 128, n_val: int = 256):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(n_train + n_val, 1, 28, 28, generator=g)
    y = torch.randint(0, 10, (n_train + n_val,), generator=g)
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def small_workspace(root: Path, mnist_root: Path, **search: object) -> Path:
    """A workspace under `root`: params.yaml on a small MNIST slice (small sensitivity lists,
    `search` overrides), the verified MNIST files, and an untrained dense checkpoint."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(
        source="local", local_dir=str(mnist_root / "MNIST" / "raw"), train_limit=400, val_limit=200
    )
    section = raw["models"][MODEL]
    section["allocation"] = "searched"  # with "params", sensitivity and search do no work
    section["sensitivity"].update(densities=[0.5, 0.05], bits=[6, 2])
    section["search"].update(search)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    (root / "data" / "MNIST").mkdir(parents=True)
    (root / "data" / "MNIST" / "raw").symlink_to(mnist_root / "MNIST" / "raw")
    save_checkpoint(root / "checkpoints" / MODEL / "dense.pt", dense_checkpoint())
    return params


def test_a_layer_pruned_to_full_density_or_shared_exactly_keeps_the_dense_error():
    dense, data = dense_checkpoint(), splits()
    reference = evaluate(dense.build(), data[2], data[3]).error
    assert prune_layer_alone(dense, "fc2", 1.0, OptimConfig(epochs=0), data, 0) == reference
    # fc3 has 1,000 weights: 10 bits give every value its own centroid
    assert share_layer_alone(dense, "fc3", 10, "linear", "sorted", data, 0) == reference


def test_pruning_one_layer_alone_matches_pruning_it_by_hand():
    dense, data = dense_checkpoint(), splits()
    model = dense.build()
    prune_(model, full_masks(model), {"fc1": 0.02})
    by_hand = evaluate(model, data[2], data[3]).error
    assert prune_layer_alone(dense, "fc1", 0.02, OptimConfig(epochs=0), data, 0) == by_hand


def test_seeds_take_each_layers_lowest_value_within_the_tolerance():
    points = [
        SensitivityPoint("fc1", "density", 0.5, 0.020),
        SensitivityPoint("fc1", "density", 0.05, 0.021),
        SensitivityPoint("fc1", "density", 0.01, 0.040),
        SensitivityPoint("fc1", "bits", 4, 0.020),
        SensitivityPoint("fc1", "bits", 2, 0.060),
        SensitivityPoint("fc2", "density", 0.5, 0.090),
    ]
    fallback = Allocation(
        {"fc1": LayerAllocation(0.1, 1.0, 5, None), "fc2": LayerAllocation(0.2, 1.0, 6, None)}
    )
    tight, loose = seed_allocations(points, 0.02, [0.002, 0.05], fallback)
    assert tight.layers["fc1"] == LayerAllocation(0.05, 1.0, 4, None)
    assert tight.layers["fc2"] == fallback.layers["fc2"]  # no point within: the fallback
    assert loose.layers["fc1"] == LayerAllocation(0.01, 1.0, 2, None)


def test_the_sensitivity_stage_writes_its_records_and_figure(tmp_path, mnist_root, prefect_api):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.sensitivity import sensitivity_flow

    params = small_workspace(tmp_path, mnist_root)
    state = sensitivity_flow(str(params), str(tmp_path), MODEL, return_state=True)
    assert state.is_completed()
    metrics = json.loads((tmp_path / "metrics" / MODEL / "sensitivity.json").read_text())
    got = {(p["layer"], p["axis"], p["value"]) for p in metrics["points"]}
    want = {
        (layer, axis, value)
        for layer in ("fc1", "fc2", "fc3")
        for axis, values in (("density", (0.5, 0.05)), ("bits", (6, 2)))
        for value in values
    }
    assert got == want
    assert all(0.0 <= p["val_error"] <= 1.0 for p in metrics["points"])
    assert set(metrics["layers"]) == {"fc1", "fc2", "fc3"}
    assert (tmp_path / "plots" / MODEL / "sensitivity.png").read_bytes().startswith(b"\x89PNG")

    async def task_runs():
        async with get_client() as client:
            flow_filter = FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
            return await client.read_task_runs(flow_run_filter=flow_filter)

    names = {run.name for run in asyncio.run(task_runs())}
    assert "sensitivity-fc1-density-0.05" in names
    assert "sensitivity-fc3-bits-2" in names


@pytest.mark.parametrize("missing", ["sensitivity"])
def test_a_missing_section_is_an_error_naming_the_key(tmp_path, missing):
    from deepcompression.config import ConfigError
    from flows.params import model_section

    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    del raw["models"][MODEL][missing]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    with pytest.raises(ConfigError, match=rf"models\.{MODEL}\.{missing}: missing section"):
        model_section(str(params), MODEL, missing)
