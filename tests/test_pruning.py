"""Tests for compress.pruning: mask state, reference equality, optimiser safety, errors."""

import io
import math
from itertools import pairwise

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune as torch_prune

from deepcompression.compress.pruning import (
    Masks,
    PruningError,
    apply_masks_,
    check_masks,
    densities,
    density_schedule,
    full_masks,
    layer_name,
    magnitude_mask,
    mask_gradients_,
    overall_density,
    prunable_weights,
    prune_,
    threshold_mask,
    weight_name,
    weight_stds,
)

FAST = settings(max_examples=60, deadline=None)
DENSITY = st.floats(min_value=0.0, max_value=1.0, exclude_min=True)
SEED = st.integers(min_value=0, max_value=2**31 - 1)
LAYERS = ["conv1", "conv2", "fc1", "fc2"]


class Tiny(nn.Module):
    """Two convs, a batch norm and 2 linears on 1x6x6 inputs; prunable: conv1, conv2, fc1, fc2."""

    def __init__(self, hidden: int = 10) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 3, 3)
        self.bn = nn.BatchNorm2d(3)
        self.conv2 = nn.Conv2d(3, 4, 2)
        self.fc1 = nn.Linear(36, hidden)
        self.fc2 = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn(self.conv1(x)))
        x = F.relu(self.conv2(x)).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def _tiny(seed: int = 0) -> Tiny:
    torch.manual_seed(seed)
    return Tiny()


def _random_layer(seed: int, conv: bool, dims: tuple[int, int, int]) -> nn.Module:
    torch.manual_seed(seed)
    out_f, in_f, k = dims
    return nn.Conv2d(in_f, out_f, k) if conv else nn.Linear(in_f * k, out_f)


def _snapshot(model: nn.Module, masks: Masks) -> tuple[dict[str, torch.Tensor], Masks]:
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return state, {k: v.clone() for k, v in masks.items()}


def _assert_unchanged(model: nn.Module, masks: Masks, snapshot: tuple) -> None:
    state, old_masks = snapshot
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert masks.keys() == old_masks.keys()
    for key, mask in masks.items():
        assert torch.equal(mask, old_masks[key]), key


def _assert_pruned_are_plus_zero(model: nn.Module, masks: Masks) -> None:
    for name, weight in prunable_weights(model).items():
        pruned = weight.detach()[~masks[name]]
        assert torch.all(pruned == 0.0), name
        assert not torch.any(torch.signbit(pruned)), f"{name} holds -0.0"


# --- names and discovery -------------------------------------------------------------------------


def test_prunable_weights_are_linear_and_conv2d_weights_in_model_order() -> None:
    model = nn.Sequential(
        nn.Conv2d(1, 2, 3),
        nn.BatchNorm2d(2),
        nn.Sequential(nn.Conv1d(2, 2, 1), nn.Linear(4, 3, bias=False)),
        nn.Linear(3, 2),
    )
    weights = prunable_weights(model)
    assert list(weights) == ["0.weight", "2.1.weight", "3.weight"]
    assert weights["0.weight"] is model[0].weight
    assert weights["2.1.weight"] is model[2][1].weight
    assert all(isinstance(w, nn.Parameter) for w in weights.values())
    assert list(prunable_weights(_tiny())) == [weight_name(layer) for layer in LAYERS]


def test_top_level_layer_is_keyed_weight() -> None:
    assert list(prunable_weights(nn.Linear(2, 2))) == ["weight"]
    assert layer_name("weight") == ""
    assert weight_name("") == "weight"


@given(st.lists(st.from_regex(r"[a-z][a-z0-9_]{0,5}", fullmatch=True), min_size=1, max_size=4))
@FAST
def test_layer_name_and_weight_name_are_inverse(parts: list[str]) -> None:
    layer = ".".join(parts)
    assert layer_name(weight_name(layer)) == layer
    assert weight_name(layer_name(f"{layer}.weight")) == f"{layer}.weight"


@pytest.mark.parametrize("name", ["fc1.bias", "fc1", "fc1.weight_orig"])
def test_layer_name_rejects_non_weight_names(name: str) -> None:
    with pytest.raises(PruningError, match="not a weight name"):
        layer_name(name)


def test_full_masks_are_all_true_bool_on_weight_device() -> None:
    model = _tiny()
    masks = full_masks(model)
    weights = prunable_weights(model)
    assert list(masks) == list(weights)
    for name, mask in masks.items():
        assert mask.dtype == torch.bool
        assert mask.shape == weights[name].shape
        assert mask.device == weights[name].device
        assert bool(mask.all())
    check_masks(model, masks)


# --- magnitude rule ------------------------------------------------------------------------------


@given(
    seed=SEED,
    conv=st.booleans(),
    dims=st.tuples(st.integers(1, 6), st.integers(1, 4), st.integers(1, 3)),
    density=DENSITY,
    ties=st.booleans(),
)
@FAST
def test_magnitude_mask_equals_l1_unstructured(
    seed: int, conv: bool, dims: tuple[int, int, int], density: float, ties: bool
) -> None:
    layer = _random_layer(seed, conv, dims)
    if ties:
        with torch.no_grad():
            layer.weight.copy_(torch.randint(-2, 3, layer.weight.shape).float())
    weight = layer.weight.detach().clone()
    torch_prune.l1_unstructured(layer, "weight", amount=1 - density)
    expected = layer.weight_mask.bool()
    assert torch.equal(magnitude_mask(weight, density), expected)
    assert torch.equal(magnitude_mask(weight, density, torch.ones_like(expected)), expected)


@given(seed=SEED, numel=st.integers(1, 200), density=DENSITY)
@FAST
def test_magnitude_mask_hits_target_within_rounding_and_keeps_largest(
    seed: int, numel: int, density: float
) -> None:
    torch.manual_seed(seed)
    weight = torch.randn(numel)
    mask = magnitude_mask(weight, density)
    kept = int(mask.sum())
    sparsity = 1 - kept / numel
    assert sparsity >= (1 - density) - 0.5 / numel
    assert abs(kept - density * numel) <= 0.5 + 1e-9
    if 0 < kept < numel:
        assert weight[mask].abs().min() >= weight[~mask].abs().max()


@given(seed=SEED, numel=st.integers(1, 120), density=DENSITY, keep_prob=st.floats(0.0, 1.0))
@FAST
def test_iterative_magnitude_mask_never_revives(
    seed: int, numel: int, density: float, keep_prob: float
) -> None:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(numel, generator=gen) * 10
    old = torch.rand(numel, generator=gen) < keep_prob
    new = magnitude_mask(weight, density, old)
    assert not torch.any(new & ~old)
    old_pruned = int((~old).sum())
    assert int((~new).sum()) == max(round((1 - density) * numel), old_pruned)
    newly_pruned = old & ~new
    if bool(newly_pruned.any()) and bool(new.any()):
        assert weight[new].abs().min() >= weight[newly_pruned].abs().max()


def test_magnitude_mask_ignores_large_values_under_old_mask() -> None:
    weight = torch.tensor([100.0, 1.0, 2.0, 3.0])
    old = torch.tensor([False, True, True, True])
    new = magnitude_mask(weight, 0.5, old)
    assert new.tolist() == [False, False, True, True]


@pytest.mark.parametrize("density", [0.0, -0.1, 1.5, math.nan])
def test_magnitude_mask_rejects_density_outside_unit_interval(density: float) -> None:
    with pytest.raises(PruningError, match=r"outside \(0, 1\]"):
        magnitude_mask(torch.randn(4), density)


def test_layer_mask_must_be_bool_and_shape_matched() -> None:
    weight = torch.randn(2, 3)
    with pytest.raises(PruningError, match="torch.bool"):
        magnitude_mask(weight, 0.5, torch.ones(2, 3))
    with pytest.raises(PruningError, match=r"\(3, 2\)"):
        threshold_mask(weight, 0.5, torch.ones(3, 2, dtype=torch.bool))


# --- threshold rule ------------------------------------------------------------------------------


@given(seed=SEED, numel=st.integers(2, 100), quality=st.floats(0.0, 3.0), keep_prob=st.floats())
@FAST
def test_threshold_mask_matches_numpy_reference(
    seed: int, numel: int, quality: float, keep_prob: float
) -> None:
    rng = np.random.default_rng(seed)
    w = rng.standard_normal(numel).astype(np.float32)
    old = rng.random(numel) < max(keep_prob, 0.05)
    surviving = w[old].astype(np.float64)
    if surviving.size:
        expected = (np.abs(w.astype(np.float64)) > quality * surviving.std()) & old
    else:
        expected = old
    got = threshold_mask(torch.from_numpy(w), quality, torch.from_numpy(old))
    assert got.dtype == torch.bool
    np.testing.assert_array_equal(got.numpy(), expected)
    assert not torch.any(got & ~torch.from_numpy(old))


def test_threshold_std_is_over_surviving_weights_only() -> None:
    weight = torch.tensor([100.0, -100.0, 1.0, -2.0, 3.0, 4.0])
    old = torch.tensor([False, False, True, True, True, True])
    std = float(np.std([1.0, -2.0, 3.0, 4.0]))
    assert 2.0 < std < 3.0
    assert threshold_mask(weight, 1.0, old).tolist() == [False, False, False, False, True, True]
    assert threshold_mask(weight, 0.0).all()


def test_threshold_mask_rejects_negative_quality() -> None:
    with pytest.raises(PruningError, match="quality"):
        threshold_mask(torch.randn(4), -0.5)


# --- schedules -----------------------------------------------------------------------------------

KINDS = ["geometric", "cubic", "linear"]


@given(
    final=st.floats(min_value=1e-4, max_value=0.999),
    iterations=st.integers(1, 50),
    kind=st.sampled_from(KINDS),
)
@FAST
def test_schedule_is_strictly_decreasing_to_final(final: float, iterations: int, kind) -> None:
    values = density_schedule(final, iterations, kind)
    assert len(values) == iterations
    assert values[-1] == final
    assert all(0.0 < v <= 1.0 for v in values)
    assert all(b < a for a, b in pairwise([1.0, *values]))


@given(final=st.floats(min_value=1e-3, max_value=0.99), iterations=st.integers(2, 30))
@FAST
def test_geometric_schedule_has_equal_ratios_and_linear_equal_steps(
    final: float, iterations: int
) -> None:
    geo = [1.0, *density_schedule(final, iterations, "geometric")]
    ratios = [b / a for a, b in pairwise(geo)]
    assert ratios == pytest.approx([final ** (1 / iterations)] * iterations, rel=1e-9)
    lin = [1.0, *density_schedule(final, iterations, "linear")]
    steps = [a - b for a, b in pairwise(lin)]
    assert steps == pytest.approx([(1 - final) / iterations] * iterations, abs=1e-12)


@given(final=st.floats(min_value=1e-3, max_value=0.99), iterations=st.integers(2, 30))
@FAST
def test_cubic_schedule_prunes_fastest_early(final: float, iterations: int) -> None:
    cubic = [1.0, *density_schedule(final, iterations, "cubic")]
    steps = [a - b for a, b in pairwise(cubic)]
    assert all(later <= earlier + 1e-12 for earlier, later in pairwise(steps))


def test_cubic_schedule_reference_values() -> None:
    assert density_schedule(0.1, 3, "cubic") == pytest.approx(
        [0.1 + 0.9 * 8 / 27, 0.1 + 0.9 / 27, 0.1]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_schedule_to_full_density_is_constant(kind) -> None:
    assert density_schedule(1.0, 4, kind) == [1.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize(
    ("final", "iterations", "kind", "match"),
    [
        (0.0, 3, "linear", "final_density"),
        (1.5, 3, "linear", "final_density"),
        (math.nan, 3, "linear", "final_density"),
        (0.5, 0, "linear", "iterations"),
        (0.5, 2.5, "linear", "iterations"),
        (0.5, True, "linear", "iterations"),
        (0.5, 3, "exponential", "unknown schedule kind"),
        (1 - 1e-16, 10, "linear", "too close to 1.0"),
    ],
)
def test_schedule_errors(final, iterations, kind, match: str) -> None:
    with pytest.raises(PruningError, match=match):
        density_schedule(final, iterations, kind)


# --- prune_ --------------------------------------------------------------------------------------


def test_prune_zeroes_targets_and_keeps_other_masks() -> None:
    model = _tiny()
    masks = full_masks(model)
    before = {k: v.detach().clone() for k, v in prunable_weights(model).items()}
    new = prune_(model, masks, {"conv2": 0.5, "fc1": 0.25})
    assert new is not masks
    assert new["conv1.weight"] is masks["conv1.weight"]
    assert new["fc2.weight"] is masks["fc2.weight"]
    dens = densities(new)
    assert dens["conv2"] == pytest.approx(0.5, abs=0.5 / 48)
    assert dens["fc1"] == pytest.approx(0.25, abs=0.5 / 360)
    assert dens["conv1"] == dens["fc2"] == 1.0
    _assert_pruned_are_plus_zero(model, new)
    for name, weight in prunable_weights(model).items():
        assert torch.equal(weight.detach()[new[name]], before[name][new[name]])
    assert torch.equal(new["fc1.weight"], magnitude_mask(before["fc1.weight"], 0.25))


def test_prune_follows_schedule_and_masks_shrink_monotonically() -> None:
    model = _tiny()
    masks = full_masks(model)
    for density in density_schedule(0.1, 4, "geometric"):
        new = prune_(model, masks, dict.fromkeys(LAYERS, density))
        for name in masks:
            assert not torch.any(new[name] & ~masks[name])
        masks = new
        _assert_pruned_are_plus_zero(model, masks)
    assert overall_density(masks) == pytest.approx(0.1, abs=0.02)


def test_prune_threshold_method() -> None:
    model = _tiny()
    fc1 = model.fc1.weight.detach().clone()
    masks = prune_(model, full_masks(model), {"fc1": 1.0}, method="threshold")
    expected = fc1.abs().double() > fc1.double().std(correction=0).item()
    assert torch.equal(masks["fc1.weight"], expected)
    _assert_pruned_are_plus_zero(model, masks)


def test_masks_survive_checkpoint_round_trip() -> None:
    model = _tiny()
    masks = prune_(model, full_masks(model), {"fc1": 0.5})
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "masks": masks}, buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    restored = Tiny()
    restored.load_state_dict(loaded["model"])
    check_masks(restored, loaded["masks"])
    later = prune_(restored, loaded["masks"], {"fc1": 0.25})
    assert not torch.any(later["fc1.weight"] & ~masks["fc1.weight"])


@pytest.mark.parametrize(
    ("targets", "method", "match"),
    [
        ({"fc9": 0.5}, "magnitude", r"unknown layer 'fc9'.*'conv1', 'conv2', 'fc1', 'fc2'"),
        ({"fc1.weight": 0.5}, "magnitude", "unknown layer 'fc1.weight'"),
        ({"fc1": 0.0}, "magnitude", r"density 0.0 for layer 'fc1' is outside \(0, 1\]"),
        ({"fc1": 1.5}, "magnitude", r"density 1.5 for layer 'fc1'"),
        ({"fc1": math.nan}, "magnitude", r"density nan for layer 'fc1'"),
        ({"conv1": -0.1}, "threshold", r"quality -0.1 for layer 'conv1'"),
        ({"conv1": math.inf}, "threshold", r"quality inf for layer 'conv1'"),
        ({"fc1": 0.5, "fc2": 1e-3}, "magnitude", r"'fc2' would be left with 0.*higher density"),
        ({"fc1": 0.5, "fc2": 1e3}, "threshold", r"'fc2' would be left with 0.*lower quality"),
        ({"fc1": 0.5}, "random", "unknown prune method 'random'"),
    ],
)
def test_prune_errors_leave_model_and_masks_untouched(targets, method, match: str) -> None:
    model = _tiny()
    masks = prune_(model, full_masks(model), {"conv2": 0.5})
    snapshot = _snapshot(model, masks)
    with pytest.raises(PruningError, match=match):
        prune_(model, masks, targets, method=method)
    _assert_unchanged(model, masks, snapshot)


def test_prune_rejects_masks_of_another_model() -> None:
    model = _tiny()
    with pytest.raises(PruningError, match="fc1.weight"):
        prune_(model, full_masks(Tiny(hidden=7)), {"fc1": 0.5})


# --- mask checks ---------------------------------------------------------------------------------


def test_check_masks_errors_name_the_layer() -> None:
    model = _tiny()
    masks = full_masks(model)
    with pytest.raises(PruningError, match=r"'fc3.weight' matches no prunable weight"):
        check_masks(model, {**masks, "fc3.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(PruningError, match=r"lack prunable weights \['conv2.weight'\]"):
        check_masks(model, {k: v for k, v in masks.items() if k != "conv2.weight"})
    with pytest.raises(PruningError, match=r"'fc2.weight' has shape \(3, 7\)"):
        check_masks(model, {**masks, "fc2.weight": torch.ones(3, 7, dtype=torch.bool)})
    with pytest.raises(PruningError, match=r"'fc1.weight' has dtype torch.float32"):
        check_masks(model, {**masks, "fc1.weight": torch.ones(10, 36)})
    with pytest.raises(PruningError, match=r"'fc1.weight' is a list"):
        check_masks(model, {**masks, "fc1.weight": [[True] * 36] * 10})


# --- optimiser safety ----------------------------------------------------------------------------

OPTIMISERS = {
    "sgd_momentum_wd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, weight_decay=5e-4),
    "adam_wd": lambda p: torch.optim.Adam(p, lr=1e-2, weight_decay=1e-3),
    "adamw": lambda p: torch.optim.AdamW(p, lr=1e-2, weight_decay=1e-2),
}
STATE_KEYS = ("momentum_buffer", "exp_avg", "exp_avg_sq")


def _step(model: nn.Module, optimiser: torch.optim.Optimizer, masks: Masks, guard: bool) -> None:
    x = torch.randn(8, 1, 6, 6)
    y = torch.randint(0, 3, (8,))
    optimiser.zero_grad()
    F.cross_entropy(model(x), y).backward()
    if guard:
        mask_gradients_(model, masks)
    optimiser.step()


def _pruned_model() -> tuple[Tiny, Masks]:
    model = _tiny(seed=3)
    masks = prune_(model, full_masks(model), {"conv1": 0.5, "conv2": 0.4, "fc1": 0.3, "fc2": 0.6})
    return model, masks


@pytest.mark.parametrize("make_optimiser", OPTIMISERS.values(), ids=OPTIMISERS.keys())
def test_pruned_weights_stay_plus_zero_through_training(make_optimiser) -> None:
    model, masks = _pruned_model()
    start = {k: v.detach().clone() for k, v in prunable_weights(model).items()}
    optimiser = make_optimiser(model.parameters())
    for _ in range(5):
        _step(model, optimiser, masks, guard=True)
        _assert_pruned_are_plus_zero(model, masks)
        apply_masks_(model, masks)
        _assert_pruned_are_plus_zero(model, masks)
    for name, weight in prunable_weights(model).items():
        for key in STATE_KEYS:
            if key in optimiser.state[weight]:
                state = optimiser.state[weight][key]
                assert torch.all(state[~masks[name]] == 0), (name, key)
        assert not torch.equal(weight.detach()[masks[name]], start[name][masks[name]]), name


def test_without_gradient_masking_momentum_revives_pruned_weights() -> None:
    model, masks = _pruned_model()
    optimiser = OPTIMISERS["sgd_momentum_wd"](model.parameters())
    for _ in range(3):
        _step(model, optimiser, masks, guard=False)
        apply_masks_(model, masks)
    buffer = optimiser.state[model.fc1.weight]["momentum_buffer"]
    assert torch.any(buffer[~masks["fc1.weight"]] != 0)
    _step(model, optimiser, masks, guard=True)
    revived = model.fc1.weight.detach()[~masks["fc1.weight"]]
    assert torch.any(revived != 0), "momentum alone moved pruned weights off zero"


def test_apply_masks_turns_negative_zero_into_plus_zero() -> None:
    model, masks = _pruned_model()
    with torch.no_grad():
        model.fc2.weight[~masks["fc2.weight"]] = -0.0
    assert torch.any(torch.signbit(model.fc2.weight.detach()[~masks["fc2.weight"]]))
    apply_masks_(model, masks)
    _assert_pruned_are_plus_zero(model, masks)


def test_mask_gradients_skips_parameters_without_grad() -> None:
    model, masks = _pruned_model()
    model.zero_grad(set_to_none=True)
    mask_gradients_(model, masks)
    assert all(w.grad is None for w in prunable_weights(model).values())


# --- densities -----------------------------------------------------------------------------------


def test_densities_and_overall_density_weight_by_size() -> None:
    masks = {
        "a.weight": torch.tensor([True, False, False, False]),
        "b.c.weight": torch.tensor([[True, True, False], [True, False, False]]),
    }
    assert densities(masks) == {"a": 0.25, "b.c": 0.5}
    assert overall_density(masks) == pytest.approx(0.4)


@given(seed=SEED, sizes=st.lists(st.integers(1, 50), min_size=1, max_size=5))
@FAST
def test_overall_density_lies_between_layer_densities(seed: int, sizes: list[int]) -> None:
    gen = torch.Generator().manual_seed(seed)
    masks = {f"l{i}.weight": torch.rand(n, generator=gen) < 0.5 for i, n in enumerate(sizes)}
    layer = list(densities(masks).values())
    assert min(layer) - 1e-12 <= overall_density(masks) <= max(layer) + 1e-12


def test_density_errors() -> None:
    with pytest.raises(PruningError, match="at least one layer"):
        overall_density({})
    with pytest.raises(PruningError, match="empty"):
        densities({"a.weight": torch.ones(0, dtype=torch.bool)})


def test_threshold_iterations_with_the_dense_std_do_not_compound():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 300))
    stds = weight_stds(model)
    masks = full_masks(model)
    first = None
    for _ in range(5):
        masks = prune_(model, masks, {"0": 1.0}, "threshold", stds)
        first = first if first is not None else overall_density(masks)
    assert overall_density(masks) == first
    weight = model[0].weight.detach()
    kept = masks["0.weight"]
    assert torch.all(weight[kept].abs() > stds["0"])
    assert 0.4 < first < 0.45  # uniform init: P(|w| > std) = 1 - 1/sqrt(3) = 0.42


def test_threshold_without_a_fixed_std_prunes_further_each_time():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(784, 300))
    masks = full_masks(model)
    densities = []
    for _ in range(3):
        masks = prune_(model, masks, {"0": 1.0}, "threshold")
        densities.append(overall_density(masks))
    assert densities[0] > densities[1] > densities[2]
