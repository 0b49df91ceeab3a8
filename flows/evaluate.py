"""DVC stage `evaluate`: decode the file written by `encode` and report its test error.

The only stage that reads the test set, once, for the final report. The number the project quotes
is the number of the file, not of an in-memory model; the validation and test errors of every
stage sit side by side so a reader sees the gap.
"""

from __future__ import annotations

from deepcompression.format.decoder import read_info
from deepcompression.training import resolve_device
from flows.common import load_data, load_test_data, setup
from flows.provenance import numerics
from runtime.artifacts import artifact_key, publish_report
from runtime.log import run_logger
from runtime.resilient import flow
from tasks.evaluate import evaluate_checkpoints, evaluate_file
from tasks.io import load_checkpoint, write_json

STAGES = ("dense", "pruned", "quantized")


@flow(name="evaluate", flow_run_name="evaluate-{model}")
def evaluate_flow(params_path: str, root: str, model: str) -> dict:
    """Decode compressed/<model>.dcz, evaluate it, compare its logits with the quantized model's."""
    params, _, workspace = setup(params_path, root, model)
    data = workspace.compressed.read_bytes()
    checkpoints = {stage: load_checkpoint(workspace.checkpoint(stage)) for stage in STAGES}
    for checkpoint in checkpoints.values():
        checkpoint.expect_model(model)
    val = load_data(params, workspace)
    test_x, test_y = load_test_data(params, workspace)
    device = resolve_device(params.run.device)
    batch = params.run.eval_batch_size
    splits = {"val": (val.val_x, val.val_y), "test": (test_x, test_y)}
    errors = evaluate_checkpoints(checkpoints, splits, device, batch)
    on_test = evaluate_file(data, test_x, test_y, device, batch, checkpoints["quantized"])
    on_val = evaluate_file(data, val.val_x, val.val_y, device, batch)
    if not on_test.logits_equal_quantized:
        raise RuntimeError("decoded file's logits differ from the quantized model's: codec bug")
    errors["file"] = {"val": on_val.error, "test": on_test.error}
    dense_bytes = read_info(data).dense_bytes
    metrics = {
        "model": model,
        "val_error": on_val.error,
        "test_error": on_test.error,
        "test_loss": on_test.loss,
        "val_samples": len(val.val_y),
        "test_samples": len(test_y),
        "logits_equal_quantized": on_test.logits_equal_quantized,
        "file_bytes": len(data),
        "dense_bytes": dense_bytes,
        "file_ratio": dense_bytes / len(data),
        "errors": errors,
    }
    write_json(workspace.metrics("evaluate"), metrics | {"numerics": numerics(params)})
    write_json(workspace.timing("evaluate"), {"decode_seconds": round(on_test.decode_seconds, 4)})
    rows = [
        {
            "stage": stage,
            "val error": f"{100 * e['val']:.2f}%",
            "test error": f"{100 * e['test']:.2f}%",
            "gap (test - val)": f"{100 * (e['test'] - e['val']):+.2f}%",
        }
        for stage, e in errors.items()
    ]
    logger = run_logger()
    for row in rows:
        logger.info(
            "%s: %s", row["stage"], ", ".join(f"{k} {v}" for k, v in row.items() if k != "stage")
        )
    logger.info(
        "%s: %d bytes, %.1fx, test error %.2f%% decoded from the file",
        workspace.compressed,
        len(data),
        metrics["file_ratio"],
        100 * on_test.error,
    )
    publish_report(
        artifact_key(model, "evaluate"), f"Decoded {workspace.compressed.name}", rows, metrics
    )
    return metrics
