"""What every stage flow does first: read params, locate the workspace, load the data."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from deepcompression.config import ConfigError, RunParams
from deepcompression.data.load import folder_shape, load_test, load_training
from deepcompression.data.streaming import StreamedImages
from deepcompression.data.tensors import DataShape, ImageTensors
from deepcompression.plan import LayerPlan, shape_hint
from flows.params import load_params, plan_model
from runtime.log import run_logger
from runtime.workspace import PROJECT_ROOT, Workspace

TORCHVISION_ROOT = PROJECT_ROOT / ".cache" / "torchvision"
"""Where source `torchvision` keeps its downloads when `data.local_dir` is null."""


CHANCE_MARGIN = 0.02
"""A dense model whose validation error is within this of chance (1 - 1/classes) is warned about:
it learnt nothing usable, and compressing it measures nothing."""

ERROR_JUMP_FACTOR = 3.0
"""A compression stage whose validation error is over this multiple of the dense model's (and over
it by at least ERROR_JUMP_MIN) is warned about: the stage lost what training learnt."""

ERROR_JUMP_MIN = 0.01
"""The smallest rise of validation error (1 point) warned about, whatever the factor says."""


def chance_warning(model: str, val_error: float, num_classes: int) -> str | None:
    """A warning when the dense model's validation error is no better than chance, else None."""
    chance = 1.0 - 1.0 / num_classes
    if val_error < chance - CHANCE_MARGIN:
        return None
    return (
        f"the dense {model} is no better than chance: {100 * val_error:.1f}% validation error, "
        f"chance is {100 * chance:.1f}% for {num_classes} classes; pruning and quantizing it "
        f"measure nothing. Train longer or at another lr (models.{model}.train), or check the "
        "data (labels, data.mean/std)."
    )


def error_jump_warning(stage: str, model: str, val_error: float, dense: float) -> str | None:
    """A warning when a stage's validation error jumped past ERROR_JUMP_FACTOR x the dense
    model's, else None."""
    if val_error <= max(ERROR_JUMP_FACTOR * dense, dense + ERROR_JUMP_MIN):
        return None
    return (
        f"{stage} of {model}: validation error {100 * val_error:.2f}% is over "
        f"{ERROR_JUMP_FACTOR:g}x the dense model's {100 * dense:.2f}%; the stage's settings "
        f"(models.{model}.{stage}) are too aggressive for this network or data."
    )


def warn_on_error_jump(stage: str, workspace: Workspace, val_error: float) -> None:
    """Log `error_jump_warning` against metrics/<model>/train.json's error (when present)."""
    dense_metrics = workspace.metrics("train")
    if not dense_metrics.is_file():
        return
    dense = json.loads(dense_metrics.read_text()).get("val_error")
    if dense is not None and (text := error_jump_warning(stage, workspace.model, val_error, dense)):
        run_logger().warning("%s", text)


def data_dir(params: RunParams, workspace: Workspace) -> Path:
    """`data/<data.name>`: the data stage's output, shared by every model."""
    return workspace.data / params.data.name


def data_shape(params: RunParams, workspace: Workspace) -> DataShape:
    """The prepared data's shape (MNIST's for MNIST; else from its meta.json)."""
    return folder_shape(data_dir(params, workspace), mnist=params.data.is_mnist)


def setup(
    params_path: str, root: str, model: str | None = None
) -> tuple[RunParams, dict[str, LayerPlan], Workspace]:
    """One model's validated params, its per-layer plan (for the network built for the prepared
    data's shape) and its workspace; bad params anywhere in the file fail before any work."""
    params, plan = load_params(Path(params_path), model)
    workspace = Workspace(Path(root), params.model.name)
    if model is not None and not params.data.is_mnist:
        shape = data_shape(params, workspace)
        if shape != shape_hint(params.data):
            plan = plan_model(params, shape)
    return params, plan, workspace


def _limit(key: str, limit: int | None, total: int, where: Path) -> int:
    """A split's limit, or all of it; a limit over the split's size names the key."""
    if limit is None:
        return total
    if limit > total:
        raise ConfigError(
            f"params.yaml: {key}: {limit} is more than the {total} images of {where}; "
            f"allowed: [1, {total}] or null"
        )
    return limit


def load_data(params: RunParams, workspace: Workspace) -> ImageTensors:
    """Training and validation data, cut to `data.train_limit`/`data.val_limit` when set; a file
    whose images take over `data.max_preload_bytes` as float32 is streamed, not preloaded.

    Every stage but `evaluate` uses this alone: all choices are made on the validation split.
    """
    folder = data_dir(params, workspace)
    limit = params.data.max_preload_bytes
    data = load_training(folder, params.data.val_size, limit, mnist=params.data.is_mnist)
    n_train = _limit("data.train_limit", params.data.train_limit, len(data.train_y), folder)
    n_val = _limit("data.val_limit", params.data.val_limit, len(data.val_y), folder)
    return data.subset(n_train, n_val)


def load_test_data(
    params: RunParams, workspace: Workspace
) -> tuple[torch.Tensor | StreamedImages, torch.Tensor]:
    """The test set, cut to `data.test_limit`: read once, by the evaluate stage, for the report
    (streamed as `load_data` streams)."""
    folder = data_dir(params, workspace)
    limit = params.data.max_preload_bytes
    x, y = load_test(folder, limit, mnist=params.data.is_mnist)
    n_test = _limit("data.test_limit", params.data.test_limit, len(y), folder)
    return x[:n_test], y[:n_test]
