"""Finishing a quantized model as the file holds it: constant units fold into their Linear
consumers (compress.unit_pruning.fold_constant_units_), so a removed unit's bias costs no bytes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from deepcompression.checkpoint import Checkpoint
from deepcompression.compress.finish import finish_quantized_
from deepcompression.compress.pruning import full_masks
from deepcompression.compress.quantization import QuantizationError, cluster_model, share_weights_
from deepcompression.compress.unit_pruning import (
    UnitPruningError,
    fold_constant_units_,
    trace_consumers,
    zero_unread_biases_,
)
from deepcompression.format.allocation import encoder_inputs
from deepcompression.format.container import decode_model, encode_model, read_info


class Mlp(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(6, 5), nn.Linear(5, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 3 * 3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(torch.relu(self.conv(x))), 1))


def _cut_rows(model: nn.Module, masks: dict, layer: str, rows: list[int]) -> None:
    """Prune every input weight of ``rows`` of ``layer`` (their biases stay)."""
    masks[f"{layer}.weight"][rows] = False
    with torch.no_grad():
        getattr(model, layer).weight.mul_(masks[f"{layer}.weight"])


@pytest.mark.parametrize(("net", "layer", "rows"), [(Mlp, "fc1", [1, 3]), (ConvNet, "conv", [2])])
def test_a_constant_unit_folds_into_its_consumer_and_the_outputs_stay(
    net: type[nn.Module], layer: str, rows: list[int]
) -> None:
    torch.manual_seed(0)
    model = net().eval()
    masks = full_masks(model)
    _cut_rows(model, masks, layer, rows)
    with torch.no_grad():
        getattr(model, layer).bias[rows] = torch.tensor([0.7, -0.2][: len(rows)])
    given = {k: v.clone() for k, v in masks.items()}
    x = torch.randn(32, 6) if net is Mlp else torch.randn(32, 1, 6, 6)
    before = model(x)
    consumers = trace_consumers(model)
    new, folded = fold_constant_units_(model, masks, consumers, x[:8])
    assert folded == {layer: len(rows)}
    assert all(torch.equal(masks[k], given[k]) for k in masks)  # the given masks are kept
    consumer = f"{consumers[layer]}.weight"
    assert not (new[consumer] & ~given[consumer]).any()  # only reads removed
    per = new[consumer].shape[1] // len(given[f"{layer}.weight"])
    for row in rows:
        assert not new[consumer][:, row * per : (row + 1) * per].any()
    assert (getattr(model, consumers[layer]).weight[~new[consumer]] == 0).all()
    zero_unread_biases_(model, new, consumers)
    assert (getattr(model, layer).bias[rows] == 0).all()
    torch.testing.assert_close(model(x), before, rtol=1e-5, atol=1e-6)


def test_units_with_live_inputs_or_a_conv_consumer_are_left_alone() -> None:
    torch.manual_seed(1)
    model = Mlp().eval()
    masks = full_masks(model)
    masks["fc1.weight"][2, 1:] = False  # one input weight left: not constant
    new, folded = fold_constant_units_(model, masks, trace_consumers(model), torch.randn(4, 6))
    assert folded == {} and all(torch.equal(new[k], masks[k]) for k in masks)
    conv = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Conv2d(3, 2, 3, padding=1))
    masks = full_masks(conv)
    masks["0.weight"][1] = False
    new, folded = fold_constant_units_(conv, masks, trace_consumers(conv), torch.randn(4, 1, 5, 5))
    assert folded == {}  # zero padding makes a constant channel's reads position-dependent
    with pytest.raises(UnitPruningError, match="at least 2"):
        fold_constant_units_(model, masks, {}, torch.randn(1, 6))


def test_a_finished_file_stores_no_bias_for_a_folded_unit() -> None:
    """The pipeline's path: cluster, share, finish, encode; the file holds fc1's kept rows only,
    and the decoded network computes what the finished one does."""
    torch.manual_seed(2)
    model = Mlp()
    masks = full_masks(model)
    _cut_rows(model, masks, "fc1", [0, 4])
    with torch.no_grad():
        model.fc1.bias[[0, 4]] = torch.tensor([0.5, 0.25])
    bits = {"fc1": 2, "fc2": 2}
    share_weights_(model, cluster_model(model, masks, bits))
    x = torch.randn(16, 6)
    finished = finish_quantized_(
        model, masks, list(bits), "float16", x, codebook="float32", init="linear", seed=0,
        engine="sorted",
    )  # fmt: skip
    books, final = finished.books, finished.masks
    assert not final["fc2.weight"][:, [0, 4]].any() and torch.equal(
        final["fc1.weight"], masks["fc1.weight"]
    )
    assert all(torch.equal(books[k].mask, final[k]) for k in books)
    checkpoint = Checkpoint.of(
        model,
        {"name": "mlp"},
        masks=final,
        centroids={k: b.centroids for k, b in books.items()},
        labels={k: b.labels for k, b in books.items()},
        bits={k: bits[k.split(".")[0]] for k in books},
    )
    quantized, raw = encoder_inputs(checkpoint, {"fc1": None, "fc2": None}, "float16")
    data = encode_model(quantized, raw, {"name": "mlp"}, {})
    stored = {layer.name: layer for layer in read_info(data).layers}
    assert stored["fc1.bias"].kept_rows == 3
    state = decode_model(data).state_dict
    copy = Mlp()
    copy.load_state_dict({k: v.float() for k, v in state.items()})
    torch.testing.assert_close(copy(x), model.eval()(x))


def _finished(codebook: str, bias: object = 3) -> tuple[Mlp, object]:
    torch.manual_seed(4)
    model = Mlp()
    masks = full_masks(model)
    _cut_rows(model, masks, "fc1", [2])
    bits = {"fc1": 3, "fc2": 2}
    share_weights_(model, cluster_model(model, masks, bits))
    finished = finish_quantized_(
        model, masks, list(bits), bias, torch.randn(20, 6), codebook=codebook, init="linear",
        seed=0, engine="sorted",
    )  # fmt: skip
    return model, finished


def _is_half(values: torch.Tensor) -> bool:
    return torch.equal(values.half().float(), values)


def test_float16_codebooks_round_the_centroids_and_the_model_uses_them() -> None:
    """The stored centroids and the model's weights are the same float16 values, so the
    validation error measured next is the decoded file's; k-means-shared biases too."""
    model, finished = _finished("float16")
    for key, book in finished.books.items():
        assert _is_half(book.centroids), key
        layer = getattr(model, key.split(".")[0])
        assert torch.equal(layer.weight.detach(), book.weight()), key
        assert _is_half(layer.bias.detach()), key
    assert finished.folded == {"fc1": 1}
    _, float32 = _finished("float32")
    assert not all(_is_half(b.centroids) for b in float32.books.values())
    for key, book in finished.books.items():
        torch.testing.assert_close(book.centroids, float32.books[key].centroids, rtol=1e-3, atol=0)


def test_float16_codebooks_leave_a_float32_bias_as_trained() -> None:
    model, _ = _finished("float16", bias="float32")
    assert not _is_half(model.fc2.bias.detach())


def test_a_centroid_beyond_float16_asks_for_float32_codebooks() -> None:
    torch.manual_seed(4)
    model = Mlp()
    with torch.no_grad():
        model.fc2.weight.mul_(1e6)
    masks = full_masks(model)
    share_weights_(model, cluster_model(model, masks, {"fc1": 2, "fc2": 2}))
    with pytest.raises(QuantizationError, match="quantize.codebook: float32"):
        finish_quantized_(model, masks, ["fc1", "fc2"], "float32", torch.randn(4, 6),
                          codebook="float16", init="linear", seed=0, engine="sorted")  # fmt: skip
