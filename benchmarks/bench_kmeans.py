"""Time ``kmeans_1d``'s engines against scikit-learn's KMeans on weights shaped like a pruned layer.

Run from the repository root: ``.venv/bin/python -m benchmarks.bench_kmeans [--n 1000000]``
(``--methods engine=sorted engine=optimal`` to time a subset; the exact engine at 256 clusters
uses ``kmeans1d`` and takes minutes and about 4 GB on 1M weights).
The Lloyd methods start from the same linear init with the same tolerance; the ``optimal`` engine
is the exact dynamic program (no init). The inertia (sum of squared distances to the assigned
centroid, i.e. the quantization error) is computed the same way, in float64, for all.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
from sklearn.cluster import KMeans

from deepcompression.compress.kmeans import init_centroids, kmeans_1d

Clusterer = Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]


def pruned_weights(n: int, dist: str, seed: int) -> np.ndarray:
    """``n`` float32 weights from a zero-mean distribution with |w| < 0.6 * scale removed."""
    rng = np.random.default_rng(seed)
    scale = 0.05
    draw = {
        "laplace": lambda size: rng.laplace(0.0, scale, size),
        "normal": lambda size: rng.normal(0.0, scale, size),
        "student_t": lambda size: rng.standard_t(3, size) * scale,
    }[dist]
    kept = np.empty(0)
    while kept.size < n:
        sample = draw(2 * n)
        kept = np.concatenate([kept, sample[np.abs(sample) >= 0.6 * scale]])
    return kept[:n].astype(np.float32)


def ours(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``kmeans_1d`` with its defaults (linear init, sorted engine)."""
    return kmeans_1d(values, k)


def ours_sklearn(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``kmeans_1d`` with the sklearn engine (linear init)."""
    return kmeans_1d(values, k, engine="sklearn")


def optimal(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``kmeans_1d`` with the exact engine (globally optimal partition)."""
    return kmeans_1d(values, k, engine="optimal")


def sklearn_kmeans(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's Lloyd KMeans on the same float32 data and the same linear init."""
    init = init_centroids(values, k, "linear", seed=0).astype(values.dtype).reshape(-1, 1)
    model = KMeans(k, init=init, n_init=1, algorithm="lloyd", max_iter=300, tol=1e-4)
    model.fit(values.reshape(-1, 1))
    return model.cluster_centers_.ravel(), model.labels_


def inertia(values: np.ndarray, centroids: np.ndarray, labels: np.ndarray) -> float:
    """Sum of squared distances of the values to their centroids, in float64."""
    return float(((values.astype(np.float64) - centroids.astype(np.float64)[labels]) ** 2).sum())


def timed(method: Clusterer, values: np.ndarray, k: int, repeats: int) -> tuple[float, float]:
    """Best wall time over ``repeats`` runs and the inertia of the result."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        centroids, labels = method(values, k)
        best = min(best, time.perf_counter() - start)
    return best, inertia(values, centroids, labels)


METHODS: dict[str, Clusterer] = {
    "sklearn KMeans": sklearn_kmeans,
    "engine=sklearn": ours_sklearn,
    "engine=sorted": ours,
    "engine=optimal": optimal,
}


def main() -> None:
    """Print a table of seconds and inertia per method and cluster count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="number of surviving weights")
    parser.add_argument("--clusters", type=int, nargs="+", default=[256, 32])
    parser.add_argument("--dist", choices=["laplace", "normal", "student_t"], default="laplace")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs per method; best is shown")
    parser.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS))
    args = parser.parse_args()

    values = pruned_weights(args.n, args.dist, args.seed)
    print(f"{args.n} weights, {args.dist} with the middle removed")
    print(f"{'method':<20}{'clusters':>9}{'seconds':>10}{'inertia':>14}{'vs optimal':>12}")
    for k in args.clusters:
        rows = {name: timed(METHODS[name], values, k, args.repeats) for name in args.methods}
        best = min(value for _, value in rows.values())
        for name, (seconds, value) in rows.items():
            excess = f"{value / best - 1:+.2%}" if "engine=optimal" in rows else "-"
            print(f"{name:<20}{k:>9}{seconds:>10.3f}{value:>14.6g}{excess:>12}")


if __name__ == "__main__":
    main()
