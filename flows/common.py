"""What every stage flow does first: read params, locate the workspace, load the data."""

from __future__ import annotations

from pathlib import Path

import torch

from deepcompression.config import ConfigError, RunParams
from deepcompression.data.load import folder_shape, load_test, load_training
from deepcompression.data.streaming import StreamedImages
from deepcompression.data.tensors import DataShape, ImageTensors
from deepcompression.plan import LayerPlan, plan_layers, shape_hint
from flows.params import load_params
from runtime.workspace import PROJECT_ROOT, Workspace

TORCHVISION_ROOT = PROJECT_ROOT / ".cache" / "torchvision"
"""Where source `torchvision` keeps its downloads when `data.local_dir` is null."""


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
            plan = plan_layers(params, shape)
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
