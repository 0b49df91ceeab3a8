"""Prefect task: Huffman-code a quantized checkpoint into the compressed-model file format."""

from __future__ import annotations

from prefect.cache_policies import NO_CACHE

from deepcompression.checkpoint import Checkpoint
from deepcompression.container import QuantizedTensor, encode_model
from deepcompression.pruning import layer_name
from tasks.resilient import task


def quantized_tensors(checkpoint: Checkpoint, index_bits: dict[str, int]) -> list[QuantizedTensor]:
    """The checkpoint's shared-weight layers as encoder inputs, in state_dict order."""
    if not checkpoint.centroids:
        raise ValueError("the checkpoint has no codebooks: encode a quantized checkpoint")
    return [
        QuantizedTensor(
            name=name,
            mask=checkpoint.masks[name],
            labels=checkpoint.labels[name],
            centroids=checkpoint.centroids[name],
            weight_bits=checkpoint.bits[name],
            index_bits=index_bits[layer_name(name)],
        )
        for name in checkpoint.state_dict
        if name in checkpoint.centroids
    ]


@task(name="huffman-encode", cache_policy=NO_CACHE)
def encode_checkpoint(
    checkpoint: Checkpoint, index_bits: dict[str, int], provenance: dict
) -> bytes:
    """Encode shared weights (relative indices + cluster indices, Huffman-coded) and raw biases."""
    quantized = quantized_tensors(checkpoint, index_bits)
    shared = {q.name for q in quantized}
    raw = {k: v for k, v in checkpoint.state_dict.items() if k not in shared}
    return encode_model(quantized, raw, checkpoint.arch, provenance)
