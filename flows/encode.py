"""DVC stage `encode`: write the Huffman-coded model file and account for its size honestly."""

from __future__ import annotations

from prefect import flow

from deepcompression.container import read_info
from deepcompression.sizes import model_sizes
from flows.common import setup
from flows.provenance import provenance
from tasks.artifacts import publish_report
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
            "P+Q ratio": layer.pq_ratio,
            "P+Q+H ratio": layer.pqh_ratio,
        }
        for layer in sizes.layers.values()
    ]


@flow(name="encode")
def encode_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    """Encode checkpoints/quantized.pt into compressed/model.dcz; writes metrics/encode.json."""
    params, plan, workspace = setup(params_path, root)
    checkpoint = load_checkpoint(workspace.checkpoint("quantized"))
    checkpoint.expect_model(params.model.name)
    index_bits = {name: p.index_bits for name, p in plan.items()}
    data = encode_checkpoint(checkpoint, index_bits, provenance(params))
    write_bytes_atomic(workspace.compressed, data)
    sizes = model_sizes(read_info(data))
    metrics = {
        "model": params.model.name,
        "file_bytes": len(data),
        "dense_bytes": sizes.all_params_dense_bytes,
        "file_ratio": sizes.file_ratio,
        "pq_ratio": sizes.pq_ratio,
        "pqh_ratio": sizes.pqh_ratio,
        "density": sizes.nnz / sizes.numel,
        "sizes": sizes.to_dict(),
    }
    write_json(workspace.metrics("encode"), metrics)
    publish_report("encode", f"Huffman-coded {params.model.name}", size_rows(sizes), metrics)
    return metrics
