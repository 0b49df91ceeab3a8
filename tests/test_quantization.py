"""Tests for weight sharing: clustering layers, centroid gradients, fine-tuning and stripping."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import deepcompression.compress.quantization as quantization
from deepcompression.compress.kmeans import kmeans_1d
from deepcompression.compress.quantization import (
    LayerCodebook,
    QuantizationError,
    cluster_layer,
    cluster_model,
    distinct_nonzero_values,
    round_bias,
    round_biases_,
    share_weights_,
    strip_,
)


class TinyNet(nn.Module):
    """A conv layer and two linear layers, small enough for exact checks."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc1 = nn.Linear(3 * 4 * 4, 8)
        self.fc2 = nn.Linear(8, 4, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(torch.relu(self.conv(x)).flatten(1))))


def pruned_net(seed: int = 0, threshold: float = 0.08) -> tuple[TinyNet, dict[str, torch.Tensor]]:
    """A TinyNet whose weights below ``threshold`` in magnitude are pruned to zero."""
    torch.manual_seed(seed)
    net = TinyNet()
    masks = {}
    with torch.no_grad():
        for name, param in net.named_parameters():
            if name.endswith("weight"):
                masks[name] = param.abs() > threshold
                param.mul_(masks[name])
    return net, masks


BITS = {"conv": 3, "fc1": 2, "fc2": 4}


def test_cluster_layer_uses_only_surviving_weights() -> None:
    torch.manual_seed(1)
    weight = torch.randn(6, 5)
    mask = weight.abs() > 0.5
    weight[~mask] = 100.0
    book = cluster_layer(weight, mask, bits=2)
    centroids, labels = kmeans_1d(weight[mask].double().numpy(), 4)
    torch.testing.assert_close(book.centroids, torch.from_numpy(centroids))
    assert torch.equal(book.labels[mask], torch.from_numpy(labels))
    assert torch.equal(book.labels[~mask], torch.zeros_like(book.labels[~mask]))
    assert book.centroids.dtype == torch.float32 and book.labels.dtype == torch.int64
    assert torch.equal(book.mask, mask)


def test_codebook_weight_is_gathered_centroids_with_positive_zeros() -> None:
    book = LayerCodebook(
        centroids=torch.tensor([-0.5, 0.25]),
        labels=torch.tensor([[1, 0], [0, 1]]),
        mask=torch.tensor([[True, True], [False, True]]),
        bits=1,
    )
    weight = book.weight()
    assert torch.equal(weight, torch.tensor([[0.25, -0.5], [0.0, 0.25]]))
    assert not torch.signbit(weight[1, 0])


@settings(max_examples=25, deadline=None)
@given(
    bits=st.integers(1, 5),
    rows=st.integers(1, 12),
    cols=st.integers(1, 12),
    threshold=st.floats(0.0, 1.5),
    seed=st.integers(0, 2**16),
)
def test_layer_has_at_most_two_to_bits_distinct_values_and_keeps_zeros(
    bits: int, rows: int, cols: int, threshold: float, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    weight = torch.randn(rows, cols, generator=generator)
    mask = weight.abs() > threshold
    weight = weight * mask
    book = cluster_layer(weight, mask, bits=bits, seed=seed)
    shared = book.weight()
    assert distinct_nonzero_values(shared) <= 2**bits
    assert torch.equal(shared != 0, mask)
    if torch.unique(weight[mask]).numel() <= 2**bits:
        assert torch.equal(shared, weight)


def test_centroid_gradient_is_the_sum_of_its_weights_gradients() -> None:
    torch.manual_seed(2)
    layer = nn.Linear(4, 3)
    mask = torch.tensor([[True, False, True, True], [True, True, False, True], [False] * 4])
    book = LayerCodebook(
        centroids=torch.tensor([-0.3, 0.1, 0.4]),
        labels=torch.tensor([[0, 0, 2, 1], [1, 2, 0, 0], [0, 0, 0, 0]]),
        mask=mask,
        bits=2,
    )
    x = torch.randn(5, 4)
    target = torch.randn(5, 3)

    plain = nn.Linear(4, 3)
    with torch.no_grad():
        plain.weight.copy_(book.weight())
        plain.bias.copy_(layer.bias)
    (plain(x) - target).pow(2).sum().backward()

    model = nn.Sequential(layer)
    share_weights_(model, {"0.weight": book})
    (model(x) - target).pow(2).sum().backward()

    expected = torch.zeros(3)
    for row in range(3):
        for col in range(4):
            if mask[row, col]:
                expected[book.labels[row, col]] += plain.weight.grad[row, col]
    centroids = model[0].parametrizations["weight"].original
    torch.testing.assert_close(centroids.grad, expected)
    torch.testing.assert_close(model[0].bias.grad, plain.bias.grad)


def test_parameters_become_centroids_and_biases() -> None:
    net, masks = pruned_net()
    books = cluster_model(net, masks, {"conv": 3, "fc1": 2})
    share_weights_(net, books)
    shapes = {name: tuple(p.shape) for name, p in net.named_parameters()}
    assert shapes == {
        "conv.bias": (3,),
        "conv.parametrizations.weight.original": (books["conv.weight"].n_clusters,),
        "fc1.bias": (8,),
        "fc1.parametrizations.weight.original": (books["fc1.weight"].n_clusters,),
        "fc2.weight": (4, 8),
    }
    for key, book in books.items():
        layer = net.get_submodule(key.removesuffix(".weight"))
        assert torch.equal(layer.weight, book.weight())


def test_finetuning_keeps_zero_pattern_and_codebook_size() -> None:
    net, masks = pruned_net(seed=3)
    books = cluster_model(net, masks, BITS)
    share_weights_(net, books)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-2)
    x, y = torch.randn(16, 1, 6, 6), torch.randint(0, 4, (16,))
    for _ in range(5):
        optimizer.zero_grad()
        nn.functional.cross_entropy(net(x), y).backward()
        optimizer.step()
    tuned = strip_(net)
    assert tuned.keys() == books.keys()
    for key, book in books.items():
        weight = net.get_parameter(key)
        assert torch.equal(weight != 0, masks[key])
        assert not torch.signbit(weight[~masks[key]]).any()
        assert distinct_nonzero_values(weight) <= 2 ** BITS[key.removesuffix(".weight")]
        assert torch.equal(tuned[key].labels, book.labels)
        assert not torch.equal(tuned[key].centroids, book.centroids)
        assert torch.equal(weight, tuned[key].weight())


def test_strip_restores_original_state_dict_layout() -> None:
    net, masks = pruned_net()
    keys = list(net.state_dict().keys())
    share_weights_(net, cluster_model(net, masks, BITS))
    assert list(net.state_dict().keys()) != keys
    books = strip_(net)
    assert list(net.state_dict().keys()) == keys
    assert type(net.conv) is nn.Conv2d and type(net.fc1) is nn.Linear
    assert all(type(p) is nn.Parameter and p.requires_grad for p in net.parameters())
    fresh = TinyNet()
    fresh.load_state_dict(net.state_dict())
    for key, book in books.items():
        assert torch.equal(fresh.get_parameter(key), book.weight())
    assert strip_(net) == {}


def test_assigning_a_full_weight_projects_onto_cluster_means() -> None:
    layer = nn.Linear(3, 2, bias=False)
    book = LayerCodebook(
        centroids=torch.tensor([0.0, 0.0]),
        labels=torch.tensor([[0, 1, 1], [0, 1, 0]]),
        mask=torch.tensor([[True, True, True], [True, True, False]]),
        bits=1,
    )
    model = nn.Sequential(layer)
    share_weights_(model, {"0.weight": book})
    layer.weight = torch.tensor([[1.0, 2.0, 4.0], [3.0, 6.0, 50.0]])
    assert torch.equal(layer.parametrizations["weight"].original, torch.tensor([2.0, 4.0]))


def test_fully_pruned_layer_stays_zero() -> None:
    net, masks = pruned_net()
    masks["fc2.weight"] = torch.zeros_like(masks["fc2.weight"])
    books = cluster_model(net, masks, {"fc2": 2})
    assert books["fc2.weight"].n_clusters == 0
    share_weights_(net, books)
    net(torch.randn(2, 1, 6, 6)).sum().backward()
    strip_(net)
    assert torch.equal(net.fc2.weight, torch.zeros(4, 8))


def test_missing_mask_means_every_weight_survives() -> None:
    torch.manual_seed(4)
    net = TinyNet()
    books = cluster_model(net, {}, {"fc1": 3})
    assert books["fc1.weight"].mask.all()
    assert distinct_nonzero_values(books["fc1.weight"].weight()) == 8


def test_distinct_nonzero_values_ignores_both_zeros() -> None:
    weight = torch.tensor([[0.5, -0.0, 0.5], [0.0, -2.0, 3.0]])
    assert distinct_nonzero_values(weight) == 3


@pytest.mark.parametrize(
    ("bits", "match"),
    [
        ({"fc1": 0}, r"'fc1' must be an int in 1\.\.16"),
        ({"fc1": 17}, r"1\.\.16"),
        ({"fc1": True}, r"1\.\.16"),
        ({"fc1": "8"}, r"1\.\.16"),
        ({"fc3": 4}, r"'fc3'.*allowed layer names: \['conv', 'fc1', 'fc2'\]"),
        ({"fc1.weight": 4}, "allowed layer names"),
    ],
)
def test_cluster_model_rejects_bad_bits_before_any_work(
    bits: dict, match: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    net, masks = pruned_net()
    calls = []
    monkeypatch.setattr(quantization, "cluster_layer", lambda *a, **k: calls.append(a))
    with pytest.raises(QuantizationError, match=match):
        cluster_model(net, masks, {"conv": 4, **bits})
    assert calls == []


@pytest.mark.parametrize(
    ("mask", "match"),
    [(torch.ones(8, 3, dtype=torch.bool), "has shape"), (torch.ones(8, 48), "bool tensor")],
)
def test_cluster_model_rejects_bad_masks(mask: torch.Tensor, match: str) -> None:
    net, _ = pruned_net()
    with pytest.raises(QuantizationError, match=match):
        cluster_model(net, {"fc1.weight": mask}, {"fc1": 4})


def test_share_weights_rejects_unknown_keys_shapes_and_double_sharing() -> None:
    net, masks = pruned_net()
    books = cluster_model(net, masks, BITS)
    with pytest.raises(QuantizationError, match="allowed keys"):
        share_weights_(net, {"fc1.bias": books["fc1.weight"]})
    with pytest.raises(QuantizationError, match="has shape"):
        share_weights_(net, {"fc2.weight": books["fc1.weight"]})
    assert list(net.state_dict().keys()) == list(TinyNet().state_dict().keys())
    share_weights_(net, books)
    with pytest.raises(QuantizationError, match="strip_"):
        share_weights_(net, {"fc1.weight": books["fc1.weight"]})


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"labels": torch.tensor([0, 3])}, r"lie in \[0, 2\)"),
        ({"labels": torch.tensor([0, 1, 1])}, "differs from mask shape"),
        ({"labels": torch.tensor([0.0, 1.0])}, "int64"),
        ({"centroids": torch.tensor([1.0, 2.0, 3.0])}, "do not fit in 1 bits"),
        ({"centroids": torch.tensor([[1.0, 2.0]])}, "1-D float"),
        ({"bits": 20}, r"1\.\.16"),
    ],
)
def test_codebook_validates_its_fields(fields: dict, match: str) -> None:
    valid = {
        "centroids": torch.tensor([1.0, 2.0]),
        "labels": torch.tensor([0, 1]),
        "mask": torch.tensor([True, True]),
        "bits": 1,
    }
    with pytest.raises(QuantizationError, match=match):
        LayerCodebook(**{**valid, **fields})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_sharing_follows_the_model_to_cuda() -> None:
    net, masks = pruned_net()
    share_weights_(net, cluster_model(net, masks, BITS))
    net = net.cuda()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    net(torch.randn(4, 1, 6, 6, device="cuda")).pow(2).sum().backward()
    optimizer.step()
    books = strip_(net)
    for key, book in books.items():
        weight = net.get_parameter(key)
        assert weight.is_cuda and book.centroids.is_cuda
        assert torch.equal(weight, book.weight())
        assert torch.equal((weight != 0).cpu(), masks[key])


def test_drop_unused_centroids_keeps_the_weight_bitwise():
    from deepcompression.compress.quantization import LayerCodebook, drop_unused_centroids

    mask = torch.tensor([[True, False, True], [True, True, False]])
    labels = torch.tensor([[3, 0, 1], [3, 5, 0]])
    centroids = torch.tensor([-2.0, -1.0, -0.5, 0.5, 1.0, 2.0])
    book = LayerCodebook(centroids=centroids, labels=labels, mask=mask, bits=3)
    compact = drop_unused_centroids(book)
    assert compact.centroids.tolist() == [-1.0, 0.5, 2.0]
    assert torch.equal(compact.weight(), book.weight())
    assert compact.labels[~mask].eq(0).all()


def test_fine_tuning_is_bitwise_repeatable_on_a_large_layer():
    from deepcompression.compress.quantization import cluster_model, share_weights_, strip_

    def run() -> torch.Tensor:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(784, 300))
        mask = torch.rand(300, 784) < 0.3
        books = cluster_model(model, {"0.weight": mask}, {"0": 5})
        share_weights_(model, books)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        x = torch.randn(64, 784)
        for _ in range(3):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        return strip_(model)["0.weight"].centroids

    assert torch.equal(run(), run())


def test_round_bias_float16_and_kmeans_keep_zeros_and_share_values() -> None:
    bias = torch.randn(64, generator=torch.Generator().manual_seed(3))
    bias[::4] = 0.0
    bias[1] = -0.0
    assert torch.equal(round_bias(bias, "float32"), bias)
    half = round_bias(bias, "float16")
    assert torch.equal(half, bias.half().float()) and half.dtype == torch.float32
    for bits in (1, 3):
        shared = round_bias(bias, bits)
        zeros = bias == 0
        assert not shared[zeros].view(torch.int32).any()  # +0.0 bits, also where -0.0 was
        assert distinct_nonzero_values(shared) <= 2**bits
        assert (shared[~zeros] - bias[~zeros]).abs().max() < (bias.abs().max() + 1e-6)
    coarse = (round_bias(bias, 1) - bias).pow(2).sum()
    assert (round_bias(bias, 3) - bias).pow(2).sum() < coarse
    with pytest.raises(QuantizationError, match="bias storage"):
        round_bias(bias, 9)


def test_round_biases_rounds_only_the_named_layers_in_place() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 2))
    before = net[2].bias.detach().clone()
    round_biases_(net, ["0"], 2, engine="sorted")
    assert distinct_nonzero_values(net[0].bias) <= 4
    assert torch.equal(net[2].bias, before)
