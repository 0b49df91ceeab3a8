"""Real compressed files of any registered network for the predict, export and loader tests."""

from __future__ import annotations

import torch

from deepcompression.compress.pruning import full_masks, prune_
from deepcompression.compress.quantization import cluster_model
from deepcompression.format.container import InputMeta, QuantizedTensor, encode_model
from models import build_model, model_arch


def compressed(
    name: str, provenance: dict | None = None, *, input_spec: InputMeta | None = None, **kwargs: int
) -> bytes:
    """A real file: `name` built with `kwargs`, every prunable layer pruned to half and shared by
    3-bit k-means, the rest raw; `input_spec` stored when given."""
    torch.manual_seed(0)
    model = build_model(name, **kwargs)
    masks = full_masks(model)
    prune_(model, masks, {key.removesuffix(".weight"): 0.5 for key in masks}, "magnitude")
    books = cluster_model(model, masks, {key.removesuffix(".weight"): 3 for key in masks})
    quantized = [
        QuantizedTensor(key, book.mask, book.labels, book.centroids, book.bits, 4)
        for key, book in books.items()
    ]
    raw = {key: value for key, value in model.state_dict().items() if key not in books}
    return encode_model(quantized, raw, model_arch(model), provenance or {}, input_spec=input_spec)
