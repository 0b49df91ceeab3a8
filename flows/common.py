"""What every stage flow does first: read params, locate the workspace, load the data."""

from __future__ import annotations

from pathlib import Path

from deepcompression.config import Params
from deepcompression.data import MnistTensors
from deepcompression.plan import LayerPlan
from flows.params import load_params
from flows.workspace import Workspace
from tasks.data import load_mnist


def setup(params_path: str, root: str) -> tuple[Params, dict[str, LayerPlan], Workspace]:
    """Validated params, the per-layer plan and the workspace; bad params fail before any work."""
    params, plan = load_params(Path(params_path))
    return params, plan, Workspace(Path(root))


def load_data(params: Params, workspace: Workspace) -> MnistTensors:
    """Verified MNIST tensors, cut to `data.train_limit`/`data.test_limit` when set."""
    data = load_mnist.fn(workspace.data)
    n_train = params.data.train_limit or len(data.train_y)
    n_test = params.data.test_limit or len(data.test_y)
    return data.subset(n_train, n_test)
