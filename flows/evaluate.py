"""DVC stage `evaluate`: decode the file written by `encode` and report its test error.

The number the project quotes is the number of the file, not of an in-memory model.
"""

from __future__ import annotations

from prefect import flow

from deepcompression.container import read_info
from deepcompression.training import resolve_device
from flows.common import load_data, setup
from tasks.artifacts import publish_report
from tasks.evaluate import evaluate_file
from tasks.io import load_checkpoint, write_json


@flow(name="evaluate")
def evaluate_flow(params_path: str = "params.yaml", root: str = ".") -> dict:
    """Decode compressed/model.dcz, evaluate it, compare its logits with the quantized model's."""
    params, _, workspace = setup(params_path, root)
    data = workspace.compressed.read_bytes()
    reference = load_checkpoint(workspace.checkpoint("quantized"))
    tensors = load_data(params, workspace)
    dense_bytes = read_info(data).dense_bytes
    result = evaluate_file(
        data,
        tensors.test_x,
        tensors.test_y,
        resolve_device(params.run.device),
        params.run.eval_batch_size,
        reference,
    )
    if not result.logits_equal_quantized:
        raise RuntimeError("decoded file's logits differ from the quantized model's: codec bug")
    metrics = {
        "model": params.model.name,
        "test_error": result.test_error,
        "test_loss": result.test_loss,
        "test_samples": len(tensors.test_y),
        "decode_seconds": round(result.decode_seconds, 4),
        "logits_equal_quantized": result.logits_equal_quantized,
        "file_bytes": len(data),
        "dense_bytes": dense_bytes,
        "file_ratio": dense_bytes / len(data),
    }
    write_json(workspace.metrics("evaluate"), metrics)
    publish_report("evaluate", f"Decoded {workspace.compressed.name}", [], metrics)
    return metrics
