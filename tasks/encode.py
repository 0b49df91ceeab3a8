"""Prefect task: Huffman-code a quantized checkpoint into the compressed-model file format."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.config import BiasMode
from deepcompression.format.allocation import encoder_inputs
from deepcompression.format.encoder import encode_model
from deepcompression.format.info import InputMeta
from runtime.resilient import task


@task(name="huffman-encode", cache_policy=NO_CACHE)
def encode_checkpoint(
    checkpoint: Checkpoint,
    index_bits: dict[str, int | None],
    provenance: dict,
    bias: BiasMode = "float32",
    input_spec: InputMeta | None = None,
) -> bytes:
    """Encode shared weights (relative indices + cluster indices, Huffman-coded; removed units
    and auto index widths where they shrink the file) and biases as the quantize stage stored
    them (``allocation.encoder_inputs``), storing ``input_spec`` (what the network reads)."""
    quantized, raw = encoder_inputs(checkpoint, index_bits, bias)
    return encode_model(quantized, raw, checkpoint.arch, provenance, input_spec=input_spec)
