"""End to end on a small MNIST slice: unit pruning in the prune stage, float16 biases rounded by
the quantize stage, auto index widths and removed units in the encoded file (current version)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from tiny_project import mnist_slice_params

from deepcompression.format.container import read_info
from deepcompression.format.spec import FORMAT_VERSION
from tasks.io import load_checkpoint

MODEL = "lenet_300_100"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def units_run(tmp_path_factory, mnist_root, prefect_api):
    """One model through every stage with prune.units < 1, quantize.bias float16, index auto."""
    from flows.pipeline import pipeline_flow

    raw = mnist_slice_params(mnist_root, MODEL, (600, 200, 200))
    section = raw["models"][MODEL]
    section["prune"]["units"] = {"fc1": 0.5, "fc2": 0.6, "fc3": 1.0}
    section["quantize"]["finetune"]["epochs"] = 1
    section["quantize"]["bias"] = "float16"
    section["encode"]["index_bits"] = {"fc": "auto"}
    workspace = tmp_path_factory.mktemp("units")
    params_path = workspace / "params.yaml"
    params_path.write_text(yaml.safe_dump(raw))
    result = pipeline_flow(str(params_path), str(workspace))
    return workspace, result


def metrics(workspace: Path, stage: str) -> dict:
    return json.loads((workspace / "metrics" / MODEL / f"{stage}.json").read_text())


def test_pruned_units_are_gone_and_reported(units_run) -> None:
    workspace, _ = units_run
    layers = metrics(workspace, "prune")["layers"]
    assert (layers["fc1"]["units_target"], layers["fc1"]["units"]) == (150, 300)
    assert layers["fc1"]["units_kept"] <= 150 and layers["fc2"]["units_kept"] <= 60
    assert layers["fc3"]["units_kept"] == layers["fc3"]["units"] == 10
    pruned = load_checkpoint(workspace / "checkpoints" / MODEL / "pruned.pt")
    rows = pruned.masks["fc1.weight"].any(dim=1)
    assert int(rows.sum()) == layers["fc1"]["units_kept"]
    assert not pruned.masks["fc2.weight"][:, ~rows].any()  # their inputs to fc2 went with them
    assert not pruned.state_dict["fc1.bias"][~rows].any()


def test_biases_float16_index_auto_and_units_reach_the_file(units_run) -> None:
    workspace, result = units_run
    quantized = load_checkpoint(workspace / "checkpoints" / MODEL / "quantized.pt")
    for layer in ("fc1", "fc2", "fc3"):
        bias = quantized.state_dict[f"{layer}.bias"]
        assert torch.equal(bias.half().float(), bias)
    data = (workspace / "compressed" / f"{MODEL}.dcz").read_bytes()
    info = read_info(data)
    assert info.version == FORMAT_VERSION
    stored = {layer.name: layer for layer in info.layers}
    assert {stored[f"{n}.bias"].dtype for n in ("fc1", "fc2", "fc3")} == {"float16"}
    kept = metrics(workspace, "prune")["layers"]["fc1"]["units_kept"]
    assert stored["fc1.weight"].units is not None and stored["fc1.weight"].units[0] == kept
    encode = metrics(workspace, "encode")
    assert encode["file_bytes"] == len(data)
    rows = {row["name"]: row for row in encode["sizes"]["layers"]}
    assert rows["fc1.weight"]["kept_units"] == list(stored["fc1.weight"].units)
    evaluate = metrics(workspace, "evaluate")
    assert evaluate["logits_equal_quantized"] is True
    assert result[MODEL]["file_bytes"] == len(data)


def test_a_prune_stage_stopped_after_an_iteration_resumes_to_the_same_bytes(
    units_run, tmp_path, monkeypatch
) -> None:
    """Removed units survive resuming: the rerun continues from the saved iteration and writes the
    uninterrupted run's checkpoint and metrics byte for byte."""
    import flows.prune as stage

    workspace, _ = units_run
    (tmp_path / "data").symlink_to(workspace / "data")
    (tmp_path / "params.yaml").write_bytes((workspace / "params.yaml").read_bytes())
    (tmp_path / "checkpoints" / MODEL).mkdir(parents=True)
    dense = workspace / "checkpoints" / MODEL / "dense.pt"
    (tmp_path / "checkpoints" / MODEL / "dense.pt").write_bytes(dense.read_bytes())
    real = stage.prune_iteration

    def stopped(iteration: int, *args, **kwargs):
        if iteration == 2:
            raise KeyboardInterrupt("stopped before iteration 2")
        return real(iteration, *args, **kwargs)

    monkeypatch.setattr(stage, "prune_iteration", stopped)
    with pytest.raises(BaseException, match="stopped before iteration 2"):
        stage.prune_flow(str(tmp_path / "params.yaml"), str(tmp_path), MODEL)
    assert (tmp_path / "runs" / MODEL / "resume" / "prune" / "state.json").is_file()
    monkeypatch.setattr(stage, "prune_iteration", real)
    stage.prune_flow(str(tmp_path / "params.yaml"), str(tmp_path), MODEL)
    for name in (f"checkpoints/{MODEL}/pruned.pt", f"metrics/{MODEL}/prune.json"):
        assert (tmp_path / name).read_bytes() == (workspace / name).read_bytes(), name
