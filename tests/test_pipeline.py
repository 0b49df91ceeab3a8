"""End to end: the whole pipeline flow on a small MNIST slice, checked through the Prefect API.

Every stage runs for real (data from the verified IDX files, training, two pruning iterations,
k-means + fine-tuning, Huffman file, decoding); only the sizes are small.
"""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path

import pytest
import torch
import yaml

from deepcompression.config import ConfigError
from deepcompression.container import decode_model
from deepcompression.quantization import distinct_nonzero_values
from tasks.io import load_checkpoint

ROOT = Path(__file__).parents[1]
pytestmark = pytest.mark.slow


def _small_params(mnist_root: Path) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(
        source="local",
        local_dir=str(mnist_root / "MNIST" / "raw"),
        train_limit=1500,
        test_limit=500,
    )
    raw["train"]["epochs"] = 2
    raw["prune"]["iterations"] = 2
    raw["prune"]["retrain"]["epochs"] = 1
    raw["quantize"]["finetune"]["epochs"] = 1
    return raw


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, mnist_root, prefect_api):
    """Run the pipeline once in a fresh workspace; returns (workspace, params, result, run id)."""
    from flows.pipeline import pipeline_flow

    workspace = tmp_path_factory.mktemp("workspace")
    params = _small_params(mnist_root)
    params_path = workspace / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    state = pipeline_flow(str(params_path), str(workspace), return_state=True)
    return workspace, params, state.result(), state.state_details.flow_run_id


def test_pipeline_writes_every_output(pipeline_run):
    workspace, _, result, _ = pipeline_run
    for path in [
        "data/MNIST/raw/train-images-idx3-ubyte",
        "checkpoints/dense.pt",
        "checkpoints/pruned.pt",
        "checkpoints/quantized.pt",
        "compressed/model.dcz",
        "plots/train.csv",
        "plots/prune.csv",
        "plots/curves.png",
        "plots/error_vs_density.png",
        "plots/weights/fc1.png",
    ] + [f"metrics/{s}.json" for s in ("train", "prune", "quantize", "encode", "evaluate")]:
        assert (workspace / path).is_file(), path
    assert result["file_bytes"] == (workspace / "compressed/model.dcz").stat().st_size
    assert result["file_ratio"] > 20


def test_pruning_reaches_its_targets_and_quantization_keeps_the_zeros(pipeline_run):
    workspace, params, _, _ = pipeline_run
    pruned = load_checkpoint(workspace / "checkpoints/pruned.pt")
    quantized = load_checkpoint(workspace / "checkpoints/quantized.pt")
    targets = params["prune"]["density"]["lenet_300_100"]
    for name, mask in pruned.masks.items():
        layer = name.split(".")[0]
        assert mask.float().mean().item() <= targets[layer] + 0.5 / mask.numel()
        weight = quantized.state_dict[name]
        assert torch.equal(weight != 0, mask), f"{name}: zero pattern changed by quantization"
        assert distinct_nonzero_values(weight) <= 2 ** quantized.bits[name]


def test_the_quoted_error_is_the_files(pipeline_run):
    workspace, _, result, _ = pipeline_run
    evaluation = json.loads((workspace / "metrics/evaluate.json").read_text())
    assert evaluation["logits_equal_quantized"] is True
    assert evaluation["test_error"] == result["file_test_error"]
    assert evaluation["test_error"] == pytest.approx(result["quantized_test_error"])
    decoded = decode_model((workspace / "compressed/model.dcz").read_bytes())
    assert decoded.arch["name"] == "lenet_300_100"
    assert decoded.provenance["params"]["train"]["epochs"] == 2


def test_prefect_records_runs_iterations_and_artifacts(pipeline_run):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterKey,
        ArtifactFilterType,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
        TaskRunFilter,
        TaskRunFilterFlowRunId,
    )

    _, _, _, run_id = pipeline_run

    async def query():
        async with get_client() as client:
            parent = await client.read_flow_run(run_id)
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])
                )
            )
            flows = {(await client.read_flow(r.flow_id)).name: r for r in children}
            prune_tasks = await client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=[flows["prune"].id])
                )
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    key=ArtifactFilterKey(any_=["prune-report", "encode-report", "encode-metrics"])
                )
            )
            progress = await client.read_artifacts(
                artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"]))
            )
            return parent, flows, prune_tasks, artifacts, progress

    parent, flows, prune_tasks, artifacts, progress = asyncio.run(query())
    assert parent.state.is_completed()
    assert {"data", "train", "prune", "quantize", "encode", "evaluate", "plots"} <= set(flows)
    assert all(run.state.is_completed() for run in flows.values())
    names = sorted(t.name for t in prune_tasks)
    assert names == ["prune-iteration-1", "prune-iteration-2"]
    by_key = {a.key: a for a in artifacts}
    assert "fc1" in by_key["prune-report"].data and "fc3" in by_key["prune-report"].data
    assert "P+Q+H ratio" in by_key["encode-report"].data
    metrics = {row["metric"]: row["value"] for row in json.loads(by_key["encode-metrics"].data)}
    assert metrics["file_bytes"] > 0
    assert progress and all(float(a.data) == 100.0 for a in progress), "epoch progress reaches 100%"


def test_bad_params_fail_before_work_and_keep_outputs(pipeline_run):
    from flows.quantize import quantize_flow

    workspace, shared_params, _, _ = pipeline_run
    params = copy.deepcopy(shared_params)
    before = (workspace / "checkpoints/quantized.pt").read_bytes()
    params["quantize"]["bits"]["lenet_300_100"]["fc"] = 17
    bad = workspace / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="quantize.bits.lenet_300_100.fc"):
        quantize_flow.fn(str(bad), str(workspace))
    assert (workspace / "checkpoints/quantized.pt").read_bytes() == before


def test_threshold_pruning_keeps_weights_above_quality_times_dense_std(pipeline_run, tmp_path):
    from deepcompression.pruning import weight_stds
    from flows.prune import prune_flow

    workspace, shared_params, _, _ = pipeline_run
    params = copy.deepcopy(shared_params)
    (tmp_path / "data").symlink_to(workspace / "data")
    (tmp_path / "checkpoints").mkdir()
    dense = workspace / "checkpoints/dense.pt"
    (tmp_path / "checkpoints/dense.pt").write_bytes(dense.read_bytes())
    params["prune"].update(method="threshold", quality={"lenet_300_100": {"fc": 1.0}})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    metrics = prune_flow(str(path), str(tmp_path))
    stds = weight_stds(load_checkpoint(dense).build())
    pruned = load_checkpoint(tmp_path / "checkpoints/pruned.pt")
    for name, mask in pruned.masks.items():
        weight = pruned.state_dict[name]
        assert torch.all(weight[mask].abs() > stds[name.split(".")[0]] * 0.5)
        assert 0.05 < mask.float().mean().item() < 0.6, "two iterations must not collapse a layer"
    assert metrics["method"] == "threshold" and metrics["iterations"] == 2
