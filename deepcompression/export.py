"""A decoded network as an ONNX model, so that a compressed file reaches the runtimes people deploy
with (onnxruntime, TensorRT, OpenVINO...).

The graph takes ``input``: float32 (batch, C, S, S) images normalised as in training (the same
tensor the torch network takes) for any batch size, and gives ``logits``: (batch, classes). The
weights are stored dense: ONNX has no form for the file's pruned, shared and Huffman-coded ones.
It uses torch's maintained exporter (``torch.onnx.export(dynamo=True)``), which needs the
``onnx`` and ``onnxscript`` packages (``pip install 'deep-compression[export]'``).
"""

from __future__ import annotations

import importlib.util

import torch
from torch import nn

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
EXPORT_PACKAGES = ("onnx", "onnxscript")
EXAMPLE_BATCH = 2  # torch.export specialises sizes 0 and 1; 2 keeps the batch axis dynamic


class ExportError(RuntimeError):
    """The network could not be exported to ONNX; the message says why and what to do."""


def missing_export_packages() -> list[str]:
    """The packages ONNX export needs that are not installed (empty when it can run)."""
    return [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]


def onnx_bytes(model: nn.Module, input_shape: tuple[int, int, int]) -> bytes:
    """The serialized ONNX model of `model` (in eval mode, on the CPU) for (C, S, S) inputs."""
    missing = missing_export_packages()
    if missing:
        raise ExportError(
            f"ONNX export needs {', '.join(missing)}: pip install 'deep-compression[export]' "
            f"(or pip install {' '.join(missing)})"
        )
    model = model.cpu().eval()
    example = torch.zeros(EXAMPLE_BATCH, *input_shape)
    try:
        program = torch.onnx.export(
            model,
            (example,),
            dynamo=True,
            verbose=False,
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_shapes=({0: torch.export.Dim("batch")},),
        )
    except Exception as err:  # torch.export rejects untraceable networks in many ways
        raise ExportError(
            f"torch.onnx.export failed for {type(model).__name__} on input {tuple(example.shape)}: "
            f"{type(err).__name__}: {str(err)[:500]}"
        ) from None
    if program is None:
        raise ExportError("torch.onnx.export returned no ONNX program")
    try:
        return program.model_proto.SerializeToString()
    except ValueError as err:  # protobuf refuses messages over 2 GiB
        raise ExportError(f"the ONNX model is too large for one protobuf message: {err}") from None
