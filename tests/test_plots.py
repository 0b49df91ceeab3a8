"""Tests for the plots stage: PNG output, byte determinism, histogram data, write_plots."""

from __future__ import annotations

import base64
import dataclasses
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from deepcompression.checkpoint import Checkpoint, CheckpointError
from deepcompression.config import ModelConfig, RunParams
from deepcompression.plan import LayerPlan, plan_layers
from deepcompression.plots.figures import (
    LayerWeights,
    PlotError,
    error_vs_density,
    final_error,
    report_markdown,
    training_curves,
    weight_distributions,
    weight_histograms,
)
from flows.params import read_params
from flows.plots import write_plots
from models import build_model
from runtime.workspace import Workspace
from tasks.io import save_checkpoint, write_csv
from tasks.plots import read_csv_rows

pytestmark = pytest.mark.long(19)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FAST = settings(max_examples=30, deadline=None)


def png_chunks(data: bytes) -> list[bytes]:
    """Chunk types of a PNG file, in order (parsed by hand, checking every length)."""
    assert data[:8] == PNG_SIGNATURE
    kinds, offset = [], 8
    while offset < len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kinds.append(data[offset + 4 : offset + 8])
        offset += 12 + length
    assert offset == len(data)
    return kinds


def assert_png(data: bytes) -> None:
    """A complete PNG image with pixel data and no text or time chunks (nothing run-dependent)."""
    kinds = png_chunks(data)
    assert kinds[0] == b"IHDR" and kinds[-1] == b"IEND" and b"IDAT" in kinds
    assert not {b"tEXt", b"iTXt", b"zTXt", b"tIME"} & set(kinds)


def train_rows(epochs: int) -> list[dict[str, float]]:
    """train.csv-like rows with a falling loss and error."""
    return [
        {
            "epoch": e,
            "lr": 0.1,
            "train_loss": 1.0 / e,
            "val_loss": 1.1 / e,
            "val_error": 0.02 + 0.1 / e,
            "seconds": 0.5,
        }
        for e in range(1, epochs + 1)
    ]


def prune_rows(densities: list[float]) -> list[dict[str, float]]:
    """prune.csv-like rows: error jumps after pruning and recovers after retraining."""
    return [
        {
            "iteration": i,
            "density": d,
            "error_after_prune": 0.02 + (1 - d) / 10,
            "val_error": 0.02 + (1 - d) / 100,
            "density_fc1": d,
        }
        for i, d in enumerate(densities, start=1)
    ]


def pruned_and_quantized(
    dense: np.ndarray, density: float, bits: int
) -> tuple[LayerWeights, LayerWeights]:
    """Magnitude-prune `dense` to `density`, then snap survivors to 2^bits linear centroids."""
    flat = np.abs(dense).ravel()
    keep = max(1, round(density * flat.size))
    threshold = np.sort(flat)[-keep]
    mask = np.abs(dense) >= threshold
    survivors = dense[mask]
    centroids = np.linspace(survivors.min(), survivors.max(), 2**bits)
    labels = np.abs(survivors[:, None] - centroids[None, :]).argmin(axis=1)
    quantized = np.zeros_like(dense)
    quantized[mask] = centroids[labels]
    pruned = LayerWeights(np.where(mask, dense, 0.0), mask)
    return pruned, LayerWeights(quantized, mask, centroids)


def layer_stages(seed: int = 0, shape: tuple[int, ...] = (40, 30), density: float = 0.1, bits=3):
    """Dense, pruned and quantized LayerWeights of one random layer."""
    dense = np.random.default_rng(seed).normal(0.0, 0.1, shape)
    pruned, quantized = pruned_and_quantized(dense, density, bits)
    return LayerWeights(dense), pruned, quantized


def test_training_curves_is_a_deterministic_png() -> None:
    first = training_curves(train_rows(5))
    assert_png(first)
    assert first == training_curves(train_rows(5))
    assert first != training_curves(train_rows(6))


def test_error_vs_density_is_a_deterministic_png() -> None:
    rows = prune_rows([0.5, 0.25, 0.1])
    first = error_vs_density(rows, reference_error=0.02)
    assert_png(first)
    assert first == error_vs_density(rows, reference_error=0.02)
    assert first != error_vs_density(rows)


def test_weight_distributions_is_a_deterministic_png() -> None:
    stages = layer_stages()
    first = weight_distributions(*stages, layer="fc1")
    assert_png(first)
    assert first == weight_distributions(*layer_stages(), layer="fc1")


def test_empty_inputs_still_give_an_image() -> None:
    for png in (training_curves([]), error_vs_density([], reference_error=0.03)):
        assert_png(png)
    dense = LayerWeights(np.ones((3, 4)))
    nothing_kept = LayerWeights(np.zeros((3, 4)), np.zeros((3, 4), dtype=bool))
    assert_png(weight_distributions(dense, nothing_kept, nothing_kept, layer="fc9"))


def test_csv_text_rows_plot_like_numbers(tmp_path: Path) -> None:
    path = tmp_path / "train.csv"
    write_csv(path, train_rows(4))
    text_rows = read_csv_rows(path)
    assert all(isinstance(v, str) for v in text_rows[0].values())
    assert training_curves(text_rows) == training_curves(train_rows(4))
    assert final_error(text_rows) == pytest.approx(0.02 + 0.1 / 4)
    assert final_error([]) is None


@FAST
@given(
    seed=st.integers(0, 2**31 - 1),
    rows=st.integers(1, 30),
    cols=st.integers(1, 30),
    density=st.floats(0.02, 0.9),
    bits=st.integers(1, 5),
)
def test_histograms_count_every_weight_and_leave_the_pruned_gap_empty(
    seed: int, rows: int, cols: int, density: float, bits: int
) -> None:
    dense, pruned, quantized = layer_stages(seed, (rows, cols), density, bits)
    hist = weight_histograms(dense, pruned, quantized)
    kept = int(pruned.mask.sum())
    assert hist.dense_counts.sum() == rows * cols == hist.dense_total
    assert hist.pruned_counts.sum() == kept == hist.shared_counts.sum()
    assert 0.0 in hist.edges
    survivors = pruned.survivors()
    assert np.all(survivors != 0.0)
    assert hist.pruned_gap == np.abs(survivors).min()
    inside_gap = (hist.edges[:-1] > -hist.pruned_gap) & (hist.edges[1:] < hist.pruned_gap)
    assert hist.pruned_counts[inside_gap].sum() == 0
    assert len(hist.shared_values) <= 2**bits
    values, counts = np.unique(quantized.values[quantized.mask], return_counts=True)
    np.testing.assert_array_equal(hist.shared_values, values)
    np.testing.assert_array_equal(hist.shared_counts, counts)
    assert np.all(np.diff(hist.centroids) >= 0) and hist.centroids.size == 2**bits
    np.testing.assert_array_equal(hist.edges, -hist.edges[::-1])


def test_pruned_histogram_has_no_mass_next_to_zero_where_dense_has_most() -> None:
    dense, pruned, quantized = layer_stages(seed=1, shape=(200, 100), density=0.1, bits=4)
    hist = weight_histograms(dense, pruned, quantized, bins=40)
    zero = int(np.flatnonzero(hist.edges == 0.0)[0])
    around_zero = slice(zero - 1, zero + 1)
    assert hist.dense_counts[around_zero].min() > 0.9 * hist.dense_counts.max()
    assert hist.pruned_counts[around_zero].sum() == 0


def test_shared_values_follow_the_weights_not_the_codebook() -> None:
    values = np.array([[0.5, 0.0, -0.5], [0.5, 0.5, 0.0]])
    mask = values != 0.0
    quantized = LayerWeights(values, mask, centroids=np.array([0.5, -0.5, 0.9]))
    hist = weight_histograms(LayerWeights(values), LayerWeights(values, mask), quantized)
    np.testing.assert_array_equal(hist.shared_values, [-0.5, 0.5])
    np.testing.assert_array_equal(hist.shared_counts, [1, 3])
    np.testing.assert_array_equal(hist.centroids, [-0.5, 0.5, 0.9])
    assert hist.edges[-1] == pytest.approx(0.9)


def test_survivors_use_the_mask_when_given() -> None:
    values = np.array([0.0, 1.0, -2.0, 3.0])
    mask = np.array([True, True, False, False])
    np.testing.assert_array_equal(LayerWeights(values, mask).survivors(), [0.0, 1.0])
    np.testing.assert_array_equal(LayerWeights(values).survivors(), [1.0, -2.0, 3.0])


def test_plot_errors_name_the_problem() -> None:
    with pytest.raises(PlotError, match="'val_error' missing; columns present: epoch"):
        training_curves([{"epoch": 1, "train_loss": 1.0, "val_loss": 1.0}])
    with pytest.raises(PlotError, match="'val_loss' missing"):  # a train.csv from before the split
        training_curves([{"epoch": 1, "train_loss": 1.0, "test_loss": 1.0, "test_error": 0.1}])
    with pytest.raises(PlotError, match="'val_error' missing"):
        final_error([{"epoch": 1, "test_error": 0.1}])
    with pytest.raises(PlotError, match="'val_error' missing"):
        error_vs_density(
            [{"iteration": 1, "density": 0.5, "error_after_prune": 0, "test_error": 0}]
        )
    with pytest.raises(PlotError, match="'density' is not numeric"):
        error_vs_density([{"iteration": 1, "density": "", "error_after_prune": 0, "val_error": 0}])
    with pytest.raises(PlotError, match="mask shape"):
        LayerWeights(np.zeros((2, 3)), np.ones((3, 2), dtype=bool))
    with pytest.raises(PlotError, match="even number"):
        weight_histograms(*layer_stages(), bins=7)
    model = build_model("lenet_300_100")
    with pytest.raises(PlotError, match="known weights: fc1.weight, fc2.weight, fc3.weight"):
        LayerWeights.from_checkpoint(Checkpoint.of(model, {"name": "lenet_300_100"}), "conv1")


def test_report_embeds_small_images_and_lists_all() -> None:
    small = training_curves(train_rows(2))
    large = small + bytes(1)
    images = {"plots/curves.png": small, "plots/big.png": large, "plots/tiny.png": bytes(3000)}
    text = report_markdown(images, embed_limit=len(small))
    assert "| plots/curves.png |" in text and "| plots/big.png |" in text
    assert "| plots/tiny.png | 2.9 KiB |" in text
    embedded = re.findall(r"\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", text)
    assert [base64.b64decode(e) for e in embedded] == [small, bytes(3000)]
    assert "too large to show inline" in text


# write_plots on a tiny synthetic workspace


def lenet_params(model: str = "lenet_300_100") -> tuple[RunParams, dict[str, LayerPlan]]:
    """The shipped params of lenet_300_100 with the model, density, bits and index widths swapped
    for `model`'s (only the tables a plan needs), and the layer plan of `model`."""
    shipped = read_params(Path(__file__).parents[1] / "params.yaml").select("lenet_300_100")
    params = dataclasses.replace(
        shipped,
        model=ModelConfig(model),
        prune=dataclasses.replace(
            shipped.prune, density={"fc": 0.1, "conv": 0.5}, units={"fc": 1.0, "conv": 1.0}
        ),
        quantize=dataclasses.replace(shipped.quantize, bits={"fc": 3, "conv": 4}),
        encode=dataclasses.replace(shipped.encode, index_bits={"fc": 5, "conv": 8}),
    )
    return params, plan_layers(params)


def synthetic_checkpoints(model_name: str, seed: int = 0) -> dict[str, Checkpoint]:
    """Dense, pruned (random masks) and quantized (random 3-bit labels) checkpoints of a model."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = build_model(model_name)
    arch = {"name": model_name, "kwargs": {}}
    dense = Checkpoint.of(model, arch)
    weights = {k: v for k, v in model.state_dict().items() if k.endswith(".weight")}
    masks = {k: torch.rand(w.shape, generator=generator) < 0.1 for k, w in weights.items()}
    with torch.no_grad():
        for k, w in weights.items():
            w.mul_(masks[k])
    pruned = Checkpoint.of(model, arch, masks=masks)
    centroids = {k: torch.linspace(-0.1, 0.1, 8) for k in weights}
    labels = {
        k: torch.randint(0, 8, w.shape, generator=generator) * masks[k] for k, w in weights.items()
    }
    with torch.no_grad():
        for k, w in weights.items():
            w.copy_(centroids[k][labels[k]] * masks[k])
    bits = {k: 3 for k in weights}
    quantized = Checkpoint.of(
        model, arch, masks=masks, centroids=centroids, labels=labels, bits=bits
    )
    return {"dense": dense, "pruned": pruned, "quantized": quantized}


def synthetic_workspace(
    root: Path, model_name: str = "lenet_300_100", checkpoints_of: str | None = None
) -> Workspace:
    """`model_name`'s workspace holding the three checkpoints (of `checkpoints_of`, by default of
    the model itself), train.csv and prune.csv of a fake run."""
    workspace = Workspace(root, model_name)
    for stage, checkpoint in synthetic_checkpoints(checkpoints_of or model_name).items():
        save_checkpoint(workspace.checkpoint(stage), checkpoint)
    write_csv(workspace.plot("train.csv"), train_rows(3))
    write_csv(workspace.plot("prune.csv"), prune_rows([0.4, 0.1]))
    return workspace


def test_write_plots_writes_every_figure_deterministically(tmp_path: Path) -> None:
    workspace = synthetic_workspace(tmp_path)
    params, plan = lenet_params()
    written = write_plots(params, plan, workspace)
    assert list(written) == [
        "curves.png",
        "error_vs_density.png",
        "weights/fc1.png",
        "weights/fc2.png",
        "weights/fc3.png",
    ]
    first = {}
    for name, path in written.items():
        assert path == tmp_path / "plots" / "lenet_300_100" / name
        first[name] = path.read_bytes()
        assert_png(first[name])
    again = write_plots(params, plan, workspace)
    assert {name: path.read_bytes() for name, path in again.items()} == first
    assert not [p for p in (tmp_path / "plots").rglob(".*")]


def test_write_plots_keeps_each_model_in_its_own_folder(tmp_path: Path) -> None:
    lenet = write_plots(*lenet_params(), synthetic_workspace(tmp_path))
    lenet5 = write_plots(*lenet_params("lenet5"), synthetic_workspace(tmp_path, "lenet5"))
    assert list(lenet5)[2:] == [
        "weights/conv1.png",
        "weights/conv2.png",
        "weights/fc1.png",
        "weights/fc2.png",
    ]
    assert all(path.is_relative_to(tmp_path / "plots" / "lenet5") for path in lenet5.values())
    assert all(path.exists() for path in lenet.values())  # not removed as stale by lenet5's run
    assert lenet["weights/fc1.png"] != lenet5["weights/fc1.png"]


def test_write_plots_removes_weight_plots_of_other_layers_only(tmp_path: Path) -> None:
    workspace = synthetic_workspace(tmp_path)
    stale = workspace.plot("weights/conv1.png")
    notes = workspace.plot("weights/README.txt")
    stale.parent.mkdir(parents=True)
    stale.write_bytes(PNG_SIGNATURE)
    notes.write_text("kept")
    write_plots(*lenet_params(), workspace)
    assert not stale.exists() and notes.read_text() == "kept"


def test_write_plots_refuses_a_checkpoint_of_another_model(tmp_path: Path) -> None:
    workspace = synthetic_workspace(tmp_path, "lenet5", checkpoints_of="lenet_300_100")
    with pytest.raises(CheckpointError, match="'lenet_300_100' but params.yaml asks for 'lenet5'"):
        write_plots(*lenet_params("lenet5"), workspace)


def test_write_plots_names_the_missing_input(tmp_path: Path) -> None:
    workspace = synthetic_workspace(tmp_path)
    workspace.checkpoint("quantized").unlink()
    with pytest.raises(FileNotFoundError, match="quantized.pt not found"):
        write_plots(*lenet_params(), workspace)
    workspace = synthetic_workspace(tmp_path / "other")
    workspace.plot("prune.csv").unlink()
    with pytest.raises(FileNotFoundError, match="prune.csv not found"):
        write_plots(*lenet_params(), workspace)
