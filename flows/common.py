"""What every stage flow does first: read params, locate the workspace, load the data."""

from __future__ import annotations

from pathlib import Path

import torch

from deepcompression.config import RunParams
from deepcompression.data import MnistTensors
from deepcompression.plan import LayerPlan
from flows.params import load_params
from flows.workspace import Workspace
from tasks.data import load_mnist, load_mnist_test


def setup(
    params_path: str, root: str, model: str | None = None
) -> tuple[RunParams, dict[str, LayerPlan], Workspace]:
    """One model's validated params, its per-layer plan and its workspace; bad params anywhere
    in the file fail before any work."""
    params, plan = load_params(Path(params_path), model)
    return params, plan, Workspace(Path(root), params.model.name)


def load_data(params: RunParams, workspace: Workspace) -> MnistTensors:
    """Training and validation tensors, cut to `data.train_limit`/`data.val_limit` when set.

    Every stage but `evaluate` uses this alone: all choices are made on the validation split.
    """
    data = load_mnist.fn(workspace.data, params.data.val_size)
    n_train = params.data.train_limit or len(data.train_y)
    n_val = params.data.val_limit or len(data.val_y)
    return data.subset(n_train, n_val)


def load_test_data(params: RunParams, workspace: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
    """The test set, cut to `data.test_limit`: read once, by the evaluate stage, for the report."""
    x, y = load_mnist_test.fn(workspace.data)
    n_test = params.data.test_limit or len(y)
    return x[:n_test], y[:n_test]
