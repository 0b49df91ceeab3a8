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

from deepcompression.compress.quantization import distinct_nonzero_values
from deepcompression.config import ConfigError
from deepcompression.format.container import decode_model
from flows.params import load_params
from flows.provenance import provenance
from tasks.io import load_checkpoint

ROOT = Path(__file__).parents[1]
pytestmark = [pytest.mark.slow, pytest.mark.long(21)]


MODELS = ("lenet_300_100", "lenet5")


def _small_params(mnist_root: Path) -> dict:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["data"].update(
        source="local",
        local_dir=str(mnist_root / "MNIST" / "raw"),
        train_limit=1500,
        val_limit=500,
        test_limit=500,
    )
    for section in raw["models"].values():
        section["allocation"] = "params"  # the hand tables: no search run here
        section["train"]["epochs"] = 2
        section["prune"]["iterations"] = 2
        section["prune"]["retrain"]["epochs"] = 1
        section["quantize"]["finetune"]["epochs"] = 1
    return raw


class IdxReadSpy:
    """Records which flow run opened which of MNIST's IDX files (by file name)."""

    def __init__(self) -> None:
        self.opened: list[tuple[str, str]] = []

    def record(self, path: object) -> None:
        from prefect.context import FlowRunContext

        name = Path(str(path)).name
        if name.endswith("-ubyte") or name.endswith("-ubyte.gz"):
            context = FlowRunContext.get()
            flow = context.flow.name if context is not None else "<no flow>"
            self.opened.append((flow, name))


@pytest.fixture(scope="module")
def pipeline_run(tmp_path_factory, mnist_root, prefect_api):
    """Run the pipeline once (both models) in a fresh workspace, recording every IDX file read;
    returns (workspace, params, result, run id, spy)."""
    from flows.pipeline import pipeline_flow

    workspace = tmp_path_factory.mktemp("workspace")
    params = _small_params(mnist_root)
    params_path = workspace / "params.yaml"
    params_path.write_text(yaml.safe_dump(params))
    spy = IdxReadSpy()
    real_read_bytes = Path.read_bytes

    def read_bytes(self):
        spy.record(self)
        return real_read_bytes(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Path, "read_bytes", read_bytes)
        state = pipeline_flow(str(params_path), str(workspace), return_state=True)
    return workspace, params, state.result(), state.state_details.flow_run_id, spy


def test_pipeline_writes_every_output_for_both_models(pipeline_run):
    workspace, _, result, _, _ = pipeline_run
    assert (workspace / "data/MNIST/raw/train-images-idx3-ubyte").is_file()
    assert set(result) == set(MODELS)
    for model in MODELS:
        for path in [
            f"checkpoints/{model}/dense.pt",
            f"checkpoints/{model}/pruned.pt",
            f"checkpoints/{model}/quantized.pt",
            f"compressed/{model}.dcz",
            f"plots/{model}/train.csv",
            f"plots/{model}/prune.csv",
            f"plots/{model}/curves.png",
            f"plots/{model}/error_vs_density.png",
            f"plots/{model}/weights/fc1.png",
        ] + [
            f"metrics/{model}/{s}.json"
            for s in ("train", "prune", "quantize", "encode", "evaluate")
        ]:
            assert (workspace / path).is_file(), path
        file_bytes = (workspace / f"compressed/{model}.dcz").stat().st_size
        assert result[model]["file_bytes"] == file_bytes
        assert result[model]["file_ratio"] > 20
        assert not (workspace / "runs" / model / "resume" / "prune").exists(), "resume state left"


def test_no_stage_but_evaluate_reads_the_test_set(pipeline_run):
    """Training, pruning, quantization, encoding and plots read only the training IDX files;
    the test images are read by `evaluate` (and copied, unread, by the `data` stage)."""
    *_, spy = pipeline_run
    readers = {flow for flow, name in spy.opened if name.startswith("t10k")}
    assert readers <= {"data", "evaluate"}, spy.opened
    assert "evaluate" in readers
    train_readers = {flow for flow, name in spy.opened if name.startswith("train")}
    assert {"train", "prune", "quantize", "evaluate"} <= train_readers


def test_pruning_reaches_its_targets_and_quantization_keeps_the_zeros(pipeline_run):
    workspace, params, *_ = pipeline_run
    for model in MODELS:
        pruned = load_checkpoint(workspace / f"checkpoints/{model}/pruned.pt")
        quantized = load_checkpoint(workspace / f"checkpoints/{model}/quantized.pt")
        targets = params["models"][model]["prune"]["density"]
        for name, mask in pruned.masks.items():
            layer = name.split(".")[0]
            assert mask.float().mean().item() <= targets[layer] + 0.5 / mask.numel()
            weight = quantized.state_dict[name]
            assert not ((weight != 0) & ~mask).any(), f"{name}: a pruned weight came back"
            # the quantized mask is the weights' zero pattern: the pruned one, less the reads of
            # units folded into this layer's bias (compress.finish)
            assert torch.equal(weight != 0, quantized.masks[name]), name
            assert distinct_nonzero_values(weight) <= 2 ** quantized.bits[name]


def test_the_quoted_error_is_the_files_with_validation_and_test_side_by_side(pipeline_run):
    workspace, _, result, *_ = pipeline_run
    for model in MODELS:
        evaluation = json.loads((workspace / f"metrics/{model}/evaluate.json").read_text())
        assert evaluation["logits_equal_quantized"] is True
        assert evaluation["test_error"] == result[model]["file_test_error"]
        assert evaluation["val_error"] == pytest.approx(result[model]["quantized_val_error"])
        assert set(evaluation["errors"]) == {"dense", "pruned", "quantized", "file"}
        assert all(set(e) == {"val", "test"} for e in evaluation["errors"].values())
        assert evaluation["val_samples"] == 500 and evaluation["test_samples"] == 500
        decoded = decode_model((workspace / f"compressed/{model}.dcz").read_bytes())
        assert decoded.arch["name"] == model
        run_params = load_params(workspace / "params.yaml", model)[0]
        assert decoded.provenance == provenance(run_params)  # hashes of exactly this run
        assert "params" not in decoded.provenance  # `encode.provenance: hashes`, as shipped
        assert "git_revision" not in decoded.provenance
        for stage in ("train", "prune", "quantize"):
            metrics = json.loads((workspace / f"metrics/{model}/{stage}.json").read_text())
            assert "val_error" in metrics and "test_error" not in metrics, stage


def test_the_same_inputs_give_the_same_bytes(pipeline_run, tmp_path):
    """Encoding the same quantized checkpoint with the same params again writes identical bytes
    (no time, no git revision in the file)."""
    from flows.encode import encode_flow

    workspace, params, *_ = pipeline_run
    model = "lenet_300_100"
    (tmp_path / "checkpoints" / model).mkdir(parents=True)
    source = workspace / f"checkpoints/{model}/quantized.pt"
    (tmp_path / "checkpoints" / model / "quantized.pt").write_bytes(source.read_bytes())
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    encode_flow(str(tmp_path / "params.yaml"), str(tmp_path), model)
    again = (tmp_path / f"compressed/{model}.dcz").read_bytes()
    assert again == (workspace / f"compressed/{model}.dcz").read_bytes()


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

    _, _, _, run_id, _ = pipeline_run
    keys = ["lenet-300-100-prune-report", "lenet-300-100-encode-report"]
    keys += ["lenet-300-100-encode-metrics", "lenet5-prune-iterations", "lenet5-evaluate-report"]

    async def query():
        async with get_client() as client:
            parent = await client.read_flow_run(run_id)
            children = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run_id])
                )
            )
            runs = {r.name: r for r in children}
            prune_tasks = await client.read_task_runs(
                task_run_filter=TaskRunFilter(
                    flow_run_id=TaskRunFilterFlowRunId(any_=[runs["prune-lenet5"].id])
                )
            )
            artifacts = await client.read_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys))
            )
            progress = await client.read_artifacts(
                artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"]))
            )
            ours = {run.id for run in children}  # other modules' (killed) stages share the server
            progress = [a for a in progress if a.flow_run_id in ours]
            return parent, runs, prune_tasks, artifacts, progress

    parent, runs, prune_tasks, artifacts, progress = asyncio.run(query())
    assert parent.state.is_completed()
    stages = ("train", "prune", "quantize", "encode", "evaluate", "plots")
    expected = {f"{stage}-{model}" for stage in stages for model in MODELS}
    assert expected <= set(runs), sorted(runs)
    assert all(run.state.is_completed() for run in runs.values())
    names = sorted(t.name for t in prune_tasks)
    assert names == ["prune-iteration-1", "prune-iteration-2"]
    by_key = {a.key: a for a in artifacts}
    assert set(keys) <= set(by_key), sorted(by_key)
    report = by_key["lenet-300-100-prune-report"].data
    assert "fc1" in report and "fc3" in report
    assert "P+Q+H ratio" in by_key["lenet-300-100-encode-report"].data
    assert "(no rows)" not in by_key["lenet5-evaluate-report"].data
    assert "test error" in by_key["lenet5-evaluate-report"].data
    iterations = json.loads(by_key["lenet5-prune-iterations"].data)
    assert [row["iteration"] for row in iterations] == [1, 2]
    rows = json.loads(by_key["lenet-300-100-encode-metrics"].data)
    metrics = {row["metric"]: row["value"] for row in rows}
    assert float(str(metrics["file_bytes"]).replace(",", "")) > 0
    assert progress and all(float(a.data) == 100.0 for a in progress), "epoch progress reaches 100%"


def test_bad_params_fail_before_work_and_keep_outputs(pipeline_run):
    from flows.quantize import quantize_flow

    workspace, shared_params, *_ = pipeline_run
    params = copy.deepcopy(shared_params)
    kept = workspace / "checkpoints/lenet_300_100/quantized.pt"
    before = kept.read_bytes()
    params["models"]["lenet5"]["quantize"]["bits"]["fc"] = 17
    bad = workspace / "bad.yaml"
    bad.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError, match="models.lenet5.quantize.bits.fc"):
        quantize_flow.fn(str(bad), str(workspace), "lenet_300_100")
    assert kept.read_bytes() == before


def test_threshold_pruning_keeps_weights_above_quality_times_dense_std(pipeline_run, tmp_path):
    from deepcompression.compress.pruning import weight_stds
    from flows.prune import prune_flow

    workspace, shared_params, *_ = pipeline_run
    model = "lenet_300_100"
    params = copy.deepcopy(shared_params)
    (tmp_path / "data").symlink_to(workspace / "data")
    (tmp_path / "checkpoints" / model).mkdir(parents=True)
    dense = workspace / f"checkpoints/{model}/dense.pt"
    (tmp_path / f"checkpoints/{model}/dense.pt").write_bytes(dense.read_bytes())
    params["models"][model]["prune"].update(method="threshold", quality={"fc": 1.0})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    metrics = prune_flow(str(path), str(tmp_path), model)
    stds = weight_stds(load_checkpoint(dense).build())
    pruned = load_checkpoint(tmp_path / f"checkpoints/{model}/pruned.pt")
    for name, mask in pruned.masks.items():
        weight = pruned.state_dict[name]
        assert torch.all(weight[mask].abs() > stds[name.split(".")[0]] * 0.5)
        assert 0.05 < mask.float().mean().item() < 0.6, "two iterations must not collapse a layer"
    assert metrics["method"] == "threshold" and metrics["iterations"] == 2
