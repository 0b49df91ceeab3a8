"""Tests for 1-D k-means: initialisations, both Lloyd engines against scikit-learn, the exact
engine against Lloyd and brute force, edge cases."""

from itertools import combinations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.cluster import KMeans

from deepcompression.compress import kmeans
from deepcompression.compress.kmeans import ClusteringError, init_centroids, kmeans_1d


def pruned_sample(rng: np.random.Generator, n: int, kind: str) -> np.ndarray:
    """Weights drawn like a pruned layer: a symmetric distribution with its middle removed."""
    draws = {
        "normal": rng.normal(size=3 * n),
        "laplace": rng.laplace(size=3 * n),
        "student_t": rng.standard_t(3, size=3 * n),
    }[kind]
    return draws[np.abs(draws) > 0.3][:n]


def sklearn_reference(values: np.ndarray, init: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's Lloyd k-means from the given init, centroids sorted and labels renumbered."""
    model = KMeans(
        n_clusters=init.size, init=init.reshape(-1, 1), n_init=1, algorithm="lloyd", tol=1e-4
    ).fit(values.reshape(-1, 1))
    centers = model.cluster_centers_.ravel()
    order = np.argsort(centers)
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    return centers[order], rank[model.labels_]


finite_values = st.lists(
    st.floats(-1e3, 1e3, allow_nan=False, allow_infinity=False), min_size=1, max_size=60
)


@settings(max_examples=40, deadline=None)
@given(values=finite_values, k=st.integers(1, 20))
def test_linear_init_is_linspace_between_min_and_max(values: list[float], k: int) -> None:
    x = np.array(values)
    np.testing.assert_array_equal(
        init_centroids(x, k, "linear", seed=0), np.linspace(x.min(), x.max(), k)
    )


def test_random_init_draws_distinct_values_reproducibly() -> None:
    x = np.repeat(np.arange(10.0), 5)
    first = init_centroids(x, 6, "random", seed=3)
    assert np.unique(first).size == 6
    assert np.isin(first, x).all()
    assert np.all(np.diff(first) > 0)
    np.testing.assert_array_equal(first, init_centroids(x, 6, "random", seed=3))
    draws = {tuple(init_centroids(x, 6, "random", seed=s)) for s in range(5)}
    assert len(draws) > 1


def test_density_init_splits_the_cdf_into_equal_masses() -> None:
    x = np.random.default_rng(0).laplace(size=20_000)
    centers = init_centroids(x, 8, "density", seed=0)
    below = np.array([np.mean(x <= c) for c in centers])
    np.testing.assert_allclose(below, (np.arange(8) + 0.5) / 8, atol=1e-3)
    linear = init_centroids(x, 8, "linear", seed=0)
    assert np.abs(centers).max() < np.abs(linear).max()


@pytest.mark.parametrize("kind", ["normal", "laplace", "student_t"])
@pytest.mark.parametrize("init", ["linear", "random", "density"])
@pytest.mark.parametrize("engine", ["sorted", "sklearn"])
def test_engines_match_sklearn_kmeans_from_the_same_init(kind: str, init: str, engine: str) -> None:
    rng = np.random.default_rng(len(kind) * 7 + len(init))
    x = pruned_sample(rng, 3000, kind)
    for k in (5, 37):
        ref_centers, ref_labels = sklearn_reference(x, init_centroids(x, k, init, seed=1))
        centers, labels = kmeans_1d(x, k, init=init, seed=1, engine=engine)
        np.testing.assert_allclose(centers, ref_centers.astype(np.float32), rtol=1e-6)
        np.testing.assert_array_equal(labels, ref_labels)


@settings(max_examples=30, deadline=None)
@given(values=finite_values, k=st.integers(1, 12), init=st.sampled_from(["linear", "density"]))
def test_strictly_converged_result_is_a_lloyd_fixed_point(
    values: list[float], k: int, init: str
) -> None:
    x = np.array(values)
    centers, labels = kmeans_1d(x, k, init=init, tol=0.0, max_iter=1000)
    assert centers.dtype == np.float32 and labels.dtype == np.int64
    assert centers.size == min(k, np.unique(x).size)
    assert labels.shape == x.shape
    assert np.all(np.diff(centers) >= 0)
    distance = np.abs(x[:, None] - centers.astype(np.float64)[None, :])
    chosen = distance[np.arange(x.size), labels]
    np.testing.assert_allclose(chosen, distance.min(axis=1), rtol=1e-5, atol=1e-3)
    for j in np.unique(labels):
        np.testing.assert_allclose(centers[j], x[labels == j].mean(), rtol=1e-5, atol=1e-3)


def test_few_distinct_values_are_their_own_centroids() -> None:
    x = np.array([3.0, -1.0, 3.0, 2.0, -1.0])
    centers, labels = kmeans_1d(x, 8)
    np.testing.assert_array_equal(centers, np.array([-1.0, 2.0, 3.0], dtype=np.float32))
    np.testing.assert_array_equal(centers[labels], x.astype(np.float32))


def test_empty_input_gives_empty_result() -> None:
    centers, labels = kmeans_1d(np.array([], dtype=np.float32), 4)
    assert centers.shape == (0,) and centers.dtype == np.float32
    assert labels.shape == (0,) and labels.dtype == np.int64


def test_separated_groups_are_recovered() -> None:
    rng = np.random.default_rng(5)
    groups = np.array([-3.0, -1.0, 2.0, 5.0])
    x = np.repeat(groups, 50) + rng.uniform(-0.1, 0.1, size=200)
    for init in ("linear", "random", "density"):
        centers, labels = kmeans_1d(x, 4, init=init, seed=2)
        np.testing.assert_allclose(centers, groups, atol=0.05)
        np.testing.assert_array_equal(labels, np.repeat(np.arange(4), 50))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"values": np.zeros((2, 2)), "n_clusters": 2}, "1-D"),
        ({"values": np.array([1.0, np.nan]), "n_clusters": 2}, "NaN"),
        ({"values": np.array(["a", "b"]), "n_clusters": 2}, "real numbers"),
        ({"values": np.arange(4.0), "n_clusters": 0}, "at least 1"),
        ({"values": np.arange(4.0), "n_clusters": 2.0}, "must be an int"),
        ({"values": np.arange(4.0), "n_clusters": 2, "init": "kmeans++"}, "unknown init"),
        ({"values": np.arange(4.0), "n_clusters": 2, "engine": "gpu"}, "unknown engine"),
        ({"values": np.arange(4.0), "n_clusters": 2, "max_iter": 0}, "max_iter"),
        ({"values": np.arange(4.0), "n_clusters": 2, "tol": -1.0}, "tol"),
    ],
)
def test_invalid_arguments_raise_clustering_error(kwargs: dict, match: str) -> None:
    with pytest.raises(ClusteringError, match=match):
        kmeans_1d(**kwargs)


def test_random_init_rejects_more_clusters_than_distinct_values() -> None:
    with pytest.raises(ClusteringError, match="distinct values"):
        init_centroids(np.array([1.0, 1.0, 2.0]), 3, "random", seed=0)


def test_init_rejects_empty_values() -> None:
    with pytest.raises(ClusteringError, match="empty"):
        init_centroids(np.array([]), 2, "linear", seed=0)


def sse(values: np.ndarray, centers: np.ndarray, labels: np.ndarray) -> float:
    """Quantization error: sum of squared distances to the assigned centroid, in float64."""
    x = np.asarray(values, dtype=np.float64)
    return float(((x - centers.astype(np.float64)[labels]) ** 2).sum())


def brute_force_sse(values: np.ndarray, k: int) -> float:
    """Least SSE over every split of the sorted values into min(k, n) contiguous groups."""
    xs = np.sort(np.asarray(values, dtype=np.float64))
    groups = min(k, xs.size)
    best = float("inf")
    for cuts in combinations(range(1, xs.size), groups - 1):
        parts = np.split(xs, cuts)
        best = min(best, sum(float(((p - p.mean()) ** 2).sum()) for p in parts))
    return best


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(
        st.one_of(st.integers(-5, 5).map(float), st.floats(-10, 10)), min_size=1, max_size=8
    ),
    k=st.integers(1, 3),
)
def test_optimal_engine_equals_brute_force_on_tiny_inputs(values: list[float], k: int) -> None:
    x = np.array(values)
    centers, labels = kmeans_1d(x, k, engine="optimal")
    assert centers.size == min(k, np.unique(x).size)
    assert sse(x, centers, labels) == pytest.approx(brute_force_sse(x, k), rel=1e-6, abs=1e-6)


@pytest.mark.parametrize("kind", ["normal", "laplace", "student_t"])
def test_optimal_engine_error_is_never_above_lloyd(kind: str) -> None:
    for seed in range(4):
        rng = np.random.default_rng(100 + seed)
        x = pruned_sample(rng, int(rng.integers(50, 2000)), kind)
        for k in (2, 5, 16, 37):
            best = sse(x, *kmeans_1d(x, k, engine="optimal"))
            for engine in ("sorted", "sklearn"):
                for init in ("linear", "random", "density"):
                    lloyd = sse(x, *kmeans_1d(x, k, init=init, seed=seed, engine=engine))
                    assert best <= lloyd * (1 + 1e-6) + 1e-12, (engine, init, k, seed)


@settings(max_examples=40, deadline=None)
@given(values=finite_values, k=st.integers(1, 12))
def test_optimal_result_is_a_lloyd_fixed_point(values: list[float], k: int) -> None:
    x = np.array(values)
    centers, labels = kmeans_1d(x, k, engine="optimal")
    assert centers.dtype == np.float32 and labels.dtype == np.int64
    assert centers.size == min(k, np.unique(x).size)
    assert np.all(np.diff(centers) >= 0)
    distance = np.abs(x[:, None] - centers.astype(np.float64)[None, :])
    chosen = distance[np.arange(x.size), labels]
    np.testing.assert_allclose(chosen, distance.min(axis=1), rtol=1e-5, atol=1e-3)
    for j in range(centers.size):
        np.testing.assert_allclose(centers[j], x[labels == j].mean(), rtol=1e-5, atol=1e-3)


def test_both_optimal_backends_reach_the_same_error(monkeypatch: pytest.MonkeyPatch) -> None:
    x = pruned_sample(np.random.default_rng(7), 1500, "laplace")
    with_ckmeans = {k: sse(x, *kmeans_1d(x, k, engine="optimal")) for k in (3, 32, 255)}
    monkeypatch.setattr(kmeans, "CKMEANS_MAX_CLUSTERS", 0)
    for k, error in with_ckmeans.items():
        assert sse(x, *kmeans_1d(x, k, engine="optimal")) == pytest.approx(error, rel=1e-9)


def test_optimal_engine_handles_256_clusters() -> None:
    x = pruned_sample(np.random.default_rng(8), 3000, "normal")
    centers, labels = kmeans_1d(x, 256, engine="optimal")
    assert centers.size == 256 and np.all(np.diff(centers) > 0)
    assert np.array_equal(np.unique(labels), np.arange(256))
    assert sse(x, centers, labels) <= sse(x, *kmeans_1d(x, 256)) * (1 + 1e-6)


def test_optimal_engine_edge_cases() -> None:
    x = np.array([3.0, -1.0, 3.0, 2.0, -1.0])
    centers, labels = kmeans_1d(x, 1, engine="optimal")
    np.testing.assert_allclose(centers, [x.mean()], rtol=1e-6)
    np.testing.assert_array_equal(labels, np.zeros(5, dtype=np.int64))
    centers, labels = kmeans_1d(x, 8, engine="optimal")
    np.testing.assert_array_equal(centers, np.array([-1.0, 2.0, 3.0], dtype=np.float32))
    np.testing.assert_array_equal(centers[labels], x.astype(np.float32))
    centers, labels = kmeans_1d(np.full(7, 0.25, dtype=np.float32), 4, engine="optimal")
    np.testing.assert_array_equal(centers, np.array([0.25], dtype=np.float32))
    np.testing.assert_array_equal(labels, np.zeros(7, dtype=np.int64))
    centers, labels = kmeans_1d(np.array([], dtype=np.float32), 4, engine="optimal")
    assert centers.shape == (0,) and labels.shape == (0,)


def test_optimal_engine_labels_follow_input_order() -> None:
    x = np.array([5.0, -4.0, 5.1, -4.2, 0.1, 0.0, 5.2])
    centers, labels = kmeans_1d(x, 3, engine="optimal")
    np.testing.assert_allclose(centers, [-4.1, 0.05, 5.1], rtol=1e-6)
    np.testing.assert_array_equal(labels, [2, 0, 2, 0, 1, 1, 2])


def test_strict_convergence_after_a_relocation_keeps_labels_and_centers_consistent() -> None:
    x = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 16.0, 1.1, 9.161878695465104e-166, 6.4e-250])
    centers, labels = kmeans_1d(x, 8, init="linear", tol=0.0, max_iter=1000)
    np.testing.assert_allclose(centers[labels], x, atol=1e-6)
