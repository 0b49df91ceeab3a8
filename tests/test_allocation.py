"""Tests for exact-size helpers: index width choice and whole-file bytes, against the encoder,
and the encode stage's inputs from a quantized checkpoint (removed units, auto widths, biases)."""

import dataclasses

import numpy as np
import pytest
import torch

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.quantization import round_bias
from deepcompression.config import BiasMode
from deepcompression.format.allocation import (
    best_index_bits,
    checkpoint_file_bytes,
    encoded_file_bytes,
    encoder_inputs,
    index_bytes,
)
from deepcompression.format.container import QuantizedTensor, encode_model, read_info
from deepcompression.format.huffman import InvalidArgument
from deepcompression.format.loader import load, load_with_info
from models import LeNet300100


def random_mask(shape: tuple[int, ...], density: float, seed: int) -> torch.Tensor:
    """A bool mask with each entry kept with probability ``density``."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=generator) < density


def quantized_layer(
    name: str, mask: torch.Tensor, index_bits: int, weight_bits: int = 5, seed: int = 0
) -> QuantizedTensor:
    """A QuantizedTensor with random labels over ``2**weight_bits`` sorted centroids."""
    generator = torch.Generator().manual_seed(seed)
    k = 1 << weight_bits
    labels = torch.randint(0, k, mask.shape, generator=generator) * mask
    centroids = torch.sort(torch.randn(k, generator=generator)).values
    return QuantizedTensor(name, mask, labels, centroids, weight_bits, index_bits)


def index_bytes_in_file(mask: torch.Tensor, index_bits: int) -> int:
    """Index table + stream bytes of the layer as ``read_info`` reports them from a real file."""
    info = read_info(encode_model([quantized_layer("w", mask, index_bits)], {}, {}, {}))
    layer = info.layers[0]
    return layer.index_table_bytes + layer.index_stream_bytes


@pytest.mark.parametrize(("density", "shape"), [(0.05, (300, 784)), (0.3, (50, 20, 5, 5))])
def test_index_bytes_equal_the_bytes_the_container_writes(
    density: float, shape: tuple[int, ...]
) -> None:
    mask = random_mask(shape, density, seed=1)
    for bits in (2, 4, 5, 8, 12):
        assert index_bytes(mask, bits) == index_bytes_in_file(mask, bits), bits


def test_best_index_bits_beats_todays_defaults_on_a_sparse_fc_mask() -> None:
    mask = random_mask((300, 784), 0.05, seed=2)
    best, sizes = best_index_bits(mask)
    assert list(sizes) == list(range(2, 13))
    assert sizes[best] == min(sizes.values())
    assert sizes[best] <= sizes[5] and sizes[best] <= sizes[8]
    assert sizes[best] == index_bytes_in_file(mask, best)


def test_best_index_bits_whole_file_is_not_larger_than_the_default_width() -> None:
    mask = random_mask((300, 784), 0.05, seed=3)
    best, _ = best_index_bits(mask)
    default = encoded_file_bytes([quantized_layer("fc1.weight", mask, 5)])
    chosen = encoded_file_bytes([quantized_layer("fc1.weight", mask, best)])
    assert chosen <= default


def test_positions_and_masks_give_the_same_sizes() -> None:
    mask = random_mask((40, 60), 0.1, seed=4)
    positions = torch.nonzero(mask.reshape(-1)).flatten()
    by_mask = best_index_bits(mask, candidates=[3, 4, 6])
    assert best_index_bits(positions, candidates=[3, 4, 6]) == by_mask
    assert best_index_bits(positions.tolist(), candidates=[3, 4, 6]) == by_mask
    assert best_index_bits(mask.numpy(), candidates=[3, 4, 6]) == by_mask


def test_ties_go_to_the_narrowest_width_and_empty_masks_work() -> None:
    best, sizes = best_index_bits(torch.zeros(10, 10, dtype=torch.bool), candidates=[6, 3, 9])
    assert len(set(sizes.values())) == 1 and best == 3
    dense = torch.ones(64, dtype=torch.bool)
    assert best_index_bits(dense, candidates=[4, 2])[0] == 2


@pytest.mark.parametrize(
    ("value", "candidates", "match"),
    [
        ([3, 2, 5], [4], "strictly increasing"),
        ([-1, 2], [4], "non-negative"),
        (np.zeros((2, 2), dtype=np.int64), [4], "1-D integer"),
        (np.ones(3), [4], "1-D integer"),
        (torch.ones(4, dtype=torch.bool), [], "candidates is empty"),
        (torch.ones(4, dtype=torch.bool), [17], "index_bits"),
    ],
)
def test_invalid_inputs_raise(value: object, candidates: list[int], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        best_index_bits(value, candidates)  # type: ignore[arg-type]


def test_encoded_file_bytes_is_the_length_of_the_encoded_file() -> None:
    layers = [
        quantized_layer("fc1.weight", random_mask((300, 784), 0.05, seed=5), 5, seed=1),
        quantized_layer("conv.weight", random_mask((20, 1, 5, 5), 0.5, seed=6), 8, 8, seed=2),
    ]
    raw = {"fc1.bias": torch.randn(300), "conv.bias": torch.randn(20)}
    arch = {"name": "lenet5", "kwargs": {"num_classes": 10}}
    provenance = {"git": "abc"}
    data = encode_model(layers, raw, arch, provenance)
    assert encoded_file_bytes(layers, raw, arch, provenance) == len(data)
    assert encoded_file_bytes(layers, raw, arch, provenance) == read_info(data).file_bytes
    plain = encode_model(layers, raw, arch, provenance, compress_header=False)
    assert encoded_file_bytes(layers, raw, arch, provenance, compress_header=False) == len(plain)
    narrower = [dataclasses.replace(layers[0], index_bits=4), layers[1]]
    assert encoded_file_bytes(narrower, raw, arch, provenance) == len(
        encode_model(narrower, raw, arch, provenance)
    )


def quantized_checkpoint(storage: BiasMode = "float32", unread: bool = False) -> Checkpoint:
    """A LeNet-300-100 checkpoint shaped like the quantize stage's output, fc1 with removed
    units (a third of its neurons, the matching inputs of fc2), biases rounded to ``storage``
    (``unread``: the removed units' biases zeroed first)."""
    torch.manual_seed(0)
    model = LeNet300100()
    masks = {name: random_mask(tuple(w.shape), 0.08, seed=i) for i, (name, w) in enumerate(
        (n, p) for n, p in model.named_parameters() if n.endswith(".weight")
    )}  # fmt: skip
    masks["fc1.weight"][::3] = False
    masks["fc2.weight"][:, ::3] = False
    state = model.state_dict()
    if unread:
        state["fc1.bias"][::3] = 0.0
    for layer in ("fc1", "fc2", "fc3"):
        state[f"{layer}.bias"] = round_bias(state[f"{layer}.bias"], storage)
    centroids, labels, bits = {}, {}, {}
    for i, (name, mask) in enumerate(masks.items()):
        generator = torch.Generator().manual_seed(i)
        labels[name] = torch.randint(0, 16, mask.shape, generator=generator) * mask
        centroids[name] = torch.sort(torch.randn(16, generator=generator)).values
        bits[name] = 4
        state[name] = torch.where(mask, centroids[name][labels[name]], torch.zeros(()))
    arch = {"name": "lenet_300_100", "kwargs": {}}
    return Checkpoint(arch, state, masks, centroids, labels, bits)


def test_checkpoint_file_bytes_is_the_encode_stage_file_and_decodes_to_the_model() -> None:
    checkpoint = quantized_checkpoint()
    widths = {"fc1": None, "fc2": 5, "fc3": None}
    quantized, raw = encoder_inputs(checkpoint, widths)
    data = encode_model(quantized, raw, checkpoint.arch, {"run": 1})
    assert checkpoint_file_bytes(checkpoint, widths, provenance={"run": 1}) == len(data)
    assert checkpoint_file_bytes(checkpoint, widths) == len(
        encode_model(quantized, raw, checkpoint.arch, {})
    )
    model, decoded = load_with_info(data)
    for name, tensor in checkpoint.state_dict.items():
        assert torch.equal(model.state_dict()[name], tensor), name
    infos = {layer.name: layer for layer in decoded.layers}
    assert infos["fc1.weight"].units is not None and infos["fc1.weight"].units[0] == 200
    assert infos["fc2.weight"].index_bits == 5
    fixed = {"fc1": 5, "fc2": 5, "fc3": 5}
    assert checkpoint_file_bytes(checkpoint, widths) <= checkpoint_file_bytes(checkpoint, fixed)


def test_biases_are_stored_as_the_quantize_stage_rounded_them() -> None:
    checkpoint = quantized_checkpoint("float16")
    widths = dict.fromkeys(("fc1", "fc2", "fc3"))
    float32 = checkpoint_file_bytes(checkpoint, widths)
    _, raw = encoder_inputs(checkpoint, widths, "float16")
    assert {raw[f"{layer}.bias"].dtype for layer in ("fc1", "fc2", "fc3")} == {torch.float16}
    payload = [
        read_info(encode_model(*encoder_inputs(checkpoint, widths, storage), {}, {})).payload_bytes
        for storage in ("float32", "float16")
    ]
    assert payload[1] == payload[0] - 2 * (300 + 100 + 10)
    assert checkpoint_file_bytes(checkpoint, widths, "float16") < float32
    with pytest.raises(ValueError, match="float16 does not represent"):
        encoder_inputs(quantized_checkpoint(), widths, "float16")

    checkpoint = quantized_checkpoint(3, unread=True)  # removed units' biases: zeros, pruned
    quantized, raw = encoder_inputs(checkpoint, widths, 3)
    stored = {q.name: q for q in quantized}
    assert "fc1.bias" in stored and "fc1.bias" not in raw and "fc3.bias" in stored
    assert int(stored["fc1.bias"].mask.sum()) == 200 and stored["fc1.bias"].weight_bits == 3
    data = encode_model(quantized, raw, checkpoint.arch, {})
    model = load(data)
    assert torch.equal(model.fc1.bias, checkpoint.state_dict["fc1.bias"])
    assert checkpoint_file_bytes(checkpoint, widths, 3) < float32
    with pytest.raises(ValueError, match="distinct values, more than 2\\*\\*2"):
        encoder_inputs(checkpoint, widths, 2)
