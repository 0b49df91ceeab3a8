"""DVC stage `encode`: write the Huffman-coded model file and account for its size honestly."""

from __future__ import annotations

from deepcompression.format.decoder import read_info
from deepcompression.format.sizes import model_sizes
from deepcompression.inference import stored_input
from flows.allocation import effective_params
from flows.common import data_dir, setup
from flows.provenance import git_revision, numerics, provenance
from runtime.artifacts import artifact_key, publish_report
from runtime.log import run_logger
from runtime.resilient import flow
from tasks.encode import encode_checkpoint
from tasks.io import load_checkpoint, write_bytes_atomic, write_json


def size_rows(sizes) -> list[dict]:
    """Per-layer rows in the shape of the paper's Tables 2-3 (P+Q and P+Q+H)."""
    return [
        {
            "layer": layer.name,
            "weights": layer.numel,
            "kept": f"{layer.kept_percent:.2f}%",
            "weight bits (P+Q)": layer.weight_bits,
            "weight bits (H)": layer.huffman_weight_bits,
            "index bits (P+Q)": layer.index_bits,
            "index bits (H)": layer.huffman_index_bits,
            "units kept": "all"
            if layer.kept_units is None
            else "x".join(map(str, layer.kept_units)),
            "P+Q ratio": layer.pq_ratio,
            "P+Q+H ratio": layer.pqh_ratio,
        }
        for layer in sizes.layers.values()
    ]


@flow(name="encode", flow_run_name="encode-{model}")
def encode_flow(params_path: str, root: str, model: str) -> dict:
    """Encode the quantized checkpoint into compressed/<model>.dcz; writes its size metrics."""
    params, plan, workspace = setup(params_path, root, model)
    params, plan = effective_params(params, plan, root)
    checkpoint = load_checkpoint(workspace.checkpoint("quantized"))
    checkpoint.expect_model(model)
    index_bits = {name: p.index_bits for name, p in plan.items()}
    spec = stored_input(data_dir(params, workspace), mnist=params.data.is_mnist)
    data = encode_checkpoint(checkpoint, index_bits, provenance(params), params.quantize.bias, spec)
    write_bytes_atomic(workspace.compressed, data)
    sizes = model_sizes(read_info(data))
    metrics = {
        "model": model,
        "file_bytes": len(data),
        "dense_bytes": sizes.all_params_dense_bytes,
        "file_ratio": sizes.file_ratio,
        "pq_ratio": sizes.pq_ratio,
        "pqh_ratio": sizes.pqh_ratio,
        "density": sizes.nnz / sizes.numel,
        "sizes": sizes.to_dict(),
    }
    write_json(workspace.metrics("encode"), metrics | {"numerics": numerics(params)})
    write_json(workspace.timing("encode"), {"git_revision": git_revision()})
    run_logger().info(
        "wrote %s: %d bytes, %.1fx smaller than all parameters as dense float32",
        workspace.compressed,
        len(data),
        sizes.file_ratio,
    )
    publish_report(
        artifact_key(model, "encode"), f"Huffman-coded {model}", size_rows(sizes), metrics
    )
    return metrics
