"""One-dimensional k-means for weight sharing (Deep Compression, section 3.1).

Two interchangeable Lloyd engines are provided. ``"sorted"`` (the default) sorts the values once
and then runs each Lloyd iteration on prefix sums: the nearest-centroid regions of sorted 1-D
centroids are the intervals between consecutive midpoints, so one iteration costs
O(k log n) instead of O(n k). ``"sklearn"`` delegates to scikit-learn's ``KMeans`` and serves as
the reference implementation; both follow the same update, empty-cluster and convergence rules.
A third engine, ``"optimal"``, finds the globally optimal partition by dynamic programming
(Wang & Song's Ckmeans.1d.dp via the ``ckmeans`` package for up to 255 clusters, Grønlund et
al.'s O(kn) SMAWK algorithm via ``kmeans1d`` beyond); it ignores init, seed, max_iter and tol.
Both keep k x n tables (about 16 bytes per entry: 4 GB for 1M values and 256 clusters), and
``kmeans1d`` is several times slower than ``ckmeans``; prefer it for layers of modest size.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import ckmeans
import kmeans1d
import numpy as np

from deepcompression.config import CentroidInit, KMeansEngine

CENTROID_INITS: tuple[str, ...] = get_args(CentroidInit)
OptimalEngine = Literal["optimal"]
KMEANS_ENGINES: tuple[str, ...] = tuple(dict.fromkeys((*get_args(KMeansEngine), "optimal")))
DEFAULT_ENGINE: KMeansEngine = "sorted"
DEFAULT_INIT: CentroidInit = "linear"
"""The engine and initialisation of direct library calls (a run's parameters always name
theirs): exact and fast Lloyd from the paper's best initialisation."""
CKMEANS_MAX_CLUSTERS = 255
"""Largest cluster count the ``ckmeans`` package accepts; larger ones go to ``kmeans1d``."""


class ClusteringError(ValueError):
    """Raised when 1-D k-means receives invalid values or settings."""


@dataclass(frozen=True)
class _Partition:
    """Clusters of sorted values: cluster ``order[j]`` owns ``xs[bounds[j]:bounds[j + 1]]``."""

    order: np.ndarray
    bounds: np.ndarray

    @property
    def sizes(self) -> np.ndarray:
        """Number of values in each interval, in ascending-centroid order."""
        return np.diff(self.bounds)

    def same_labels_as(self, other: _Partition | None) -> bool:
        """Tell whether both partitions give every value the same cluster id."""
        if other is None:
            return False
        mine, theirs = self.sizes > 0, other.sizes > 0
        return np.array_equal(self.order[mine], other.order[theirs]) and np.array_equal(
            self.bounds[1:][mine], other.bounds[1:][theirs]
        )

    def sorted_labels(self) -> np.ndarray:
        """Cluster id of every sorted value."""
        return np.repeat(self.order, self.sizes)


def _check_values(values: np.ndarray) -> np.ndarray:
    """Return ``values`` as a finite 1-D float64 array (all arithmetic here is float64)."""
    x = np.asarray(values)
    if x.ndim != 1:
        raise ClusteringError(
            f"values must be 1-D, got shape {x.shape}; pass values.ravel() to cluster all entries"
        )
    if not (np.issubdtype(x.dtype, np.floating) or np.issubdtype(x.dtype, np.integer)):
        raise ClusteringError(f"values must be real numbers, got dtype {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise ClusteringError("values contain NaN or infinity; remove or replace them first")
    return x


def _check_n_clusters(n_clusters: int) -> None:
    """Reject cluster counts that are not positive integers."""
    if isinstance(n_clusters, bool) or not isinstance(n_clusters, int | np.integer):
        raise ClusteringError(f"n_clusters must be an int, got {type(n_clusters).__name__}")
    if n_clusters < 1:
        raise ClusteringError(f"n_clusters must be at least 1, got {n_clusters}")


def init_centroids(
    values: np.ndarray, n_clusters: int, init: CentroidInit, seed: int
) -> np.ndarray:
    """Initial centroids (float64, ascending) by one of the paper's three schemes.

    ``linear``: evenly spaced between min and max; ``random`` (Forgy): ``n_clusters`` distinct
    values drawn with ``seed``; ``density``: the values at CDF levels ``(i + 0.5) / n_clusters``.
    """
    x = _check_values(values)
    _check_n_clusters(n_clusters)
    if x.size == 0:
        raise ClusteringError("cannot initialise centroids from an empty array of values")
    if init == "linear":
        return np.linspace(float(x.min()), float(x.max()), n_clusters, dtype=np.float64)
    if init == "random":
        distinct = np.unique(x)
        if n_clusters > distinct.size:
            raise ClusteringError(
                f"random init needs n_clusters <= number of distinct values ({distinct.size}), "
                f"got {n_clusters}; lower n_clusters"
            )
        rng = np.random.default_rng(seed)
        return np.sort(rng.choice(distinct, size=n_clusters, replace=False)).astype(np.float64)
    if init == "density":
        levels = (np.arange(n_clusters, dtype=np.float64) + 0.5) / n_clusters
        return np.quantile(x, levels)
    raise ClusteringError(f"unknown init {init!r}; choose one of {CENTROID_INITS}")


def _assign(xs: np.ndarray, centers: np.ndarray) -> _Partition:
    """E-step on sorted values: split them at the midpoints of the sorted centroids.

    Of several equal centroids only the one with the lowest id receives values, and a value on a
    midpoint goes to the lower centroid.
    """
    order = np.argsort(centers, kind="stable")
    ordered = centers[order]
    cuts = np.searchsorted(xs, 0.5 * (ordered[:-1] + ordered[1:]), side="right")
    cuts[ordered[:-1] == ordered[1:]] = xs.size
    cuts = np.minimum.accumulate(cuts[::-1])[::-1]
    bounds = np.concatenate(([0], cuts, [xs.size])).astype(np.int64)
    return _Partition(order=order, bounds=bounds)


def _relocate_empty(
    xs: np.ndarray,
    centers: np.ndarray,
    part: _Partition,
    sums: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Move each empty cluster onto one of the values farthest from their centroids (in place).

    This is scikit-learn's rule: the moved value still counts for the E-step's labels, but its
    old cluster's sum and count no longer include it.
    """
    empty = np.flatnonzero(counts == 0)
    if empty.size == 0:
        return
    dist = (xs - np.repeat(centers[part.order], part.sizes)) ** 2
    if dist.max() == 0.0:
        return
    far = np.argpartition(dist, -empty.size)[-empty.size :]
    far = far[np.argsort(-dist[far], kind="stable")]
    owners = part.order[np.searchsorted(part.bounds, far, side="right") - 1]
    np.add.at(sums, owners, -xs[far])
    np.add.at(counts, owners, -1)
    sums[empty] = xs[far]
    counts[empty] = 1


def _update(
    xs: np.ndarray, prefix: np.ndarray, centers: np.ndarray, part: _Partition
) -> np.ndarray:
    """M-step from prefix sums: each centroid becomes the mean of its interval."""
    sums = np.empty_like(centers)
    counts = np.empty(centers.size, dtype=np.int64)
    sums[part.order] = prefix[part.bounds[1:]] - prefix[part.bounds[:-1]]
    counts[part.order] = part.sizes
    _relocate_empty(xs, centers, part, sums, counts)
    filled = counts > 0
    new = np.where(filled, sums / np.maximum(counts, 1), 0.0)
    new[~filled] = new[np.argmax(counts)]
    return new


def _lloyd_sorted(
    xs: np.ndarray, init: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Exact Lloyd iterations on sorted float64 values; returns (centers, labels of ``xs``).

    On strict convergence the centers that produced the unchanged labels are returned, so an
    empty cluster relocated in that last update cannot leave labels and centers inconsistent.
    """
    prefix = np.concatenate(([0.0], np.cumsum(xs)))
    tol_abs = float(np.var(xs)) * tol
    centers = init.astype(np.float64)
    previous: _Partition | None = None
    strict = False
    for _ in range(max_iter):
        part = _assign(xs, centers)
        if part.same_labels_as(previous):
            strict = True
            break
        new = _update(xs, prefix, centers, part)
        shift = float(((new - centers) ** 2).sum())
        centers = new
        if shift <= tol_abs:
            break
        previous = part
    if not strict:
        part = _assign(xs, centers)
    return centers, part.sorted_labels()


def _lloyd_sklearn(
    x: np.ndarray, init: np.ndarray, max_iter: int, tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Lloyd iterations by scikit-learn's KMeans in float64; returns (centers, labels of ``x``)."""
    from sklearn.cluster import KMeans  # seconds to import (scipy): only this engine needs it

    model = KMeans(
        n_clusters=init.size,
        init=init.reshape(-1, 1),
        n_init=1,
        algorithm="lloyd",
        max_iter=max_iter,
        tol=tol,
    ).fit(x.reshape(-1, 1))
    return model.cluster_centers_.ravel(), model.labels_.astype(np.int64)


def _optimal_sizes(xs: np.ndarray, n_clusters: int) -> np.ndarray:
    """Sizes of the globally optimal contiguous clusters of sorted ``xs``, in ascending order."""
    if n_clusters <= CKMEANS_MAX_CLUSTERS:
        sizes = np.array([c.size for c in ckmeans.ckmeans(xs, n_clusters)], dtype=np.int64)
    else:
        labels = np.asarray(kmeans1d.cluster(xs, n_clusters).clusters, dtype=np.int64)
        sizes = np.bincount(labels, minlength=n_clusters)
    if sizes.sum() != xs.size:
        raise ClusteringError(f"optimal engine returned {sizes.sum()} labels for {xs.size} values")
    return sizes[sizes > 0]


def _optimal_sorted(xs: np.ndarray, n_clusters: int) -> tuple[np.ndarray, np.ndarray]:
    """Globally optimal k-means of sorted values; returns (ascending centers, labels of ``xs``)."""
    sizes = _optimal_sizes(xs, n_clusters)
    starts = np.concatenate(([0], np.cumsum(sizes)[:-1]))
    centers = np.add.reduceat(xs, starts) / sizes
    return centers, np.repeat(np.arange(sizes.size, dtype=np.int64), sizes)


def _ascending(centers: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sort centroids ascending and renumber labels to match."""
    order = np.argsort(centers, kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size, dtype=np.int64)
    return centers[order].astype(np.float32), rank[labels]


def _check_settings(n_clusters: int, max_iter: int, tol: float, engine: str) -> None:
    """Validate the scalar settings of ``kmeans_1d``."""
    _check_n_clusters(n_clusters)
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
        raise ClusteringError(f"max_iter must be an int >= 1, got {max_iter!r}")
    if not np.isfinite(tol) or tol < 0:
        raise ClusteringError(f"tol must be a finite number >= 0, got {tol!r}")
    if engine not in KMEANS_ENGINES:
        raise ClusteringError(f"unknown engine {engine!r}; choose one of {KMEANS_ENGINES}")


def kmeans_1d(
    values: np.ndarray,
    n_clusters: int,
    init: CentroidInit = DEFAULT_INIT,
    seed: int = 0,
    max_iter: int = 300,
    tol: float = 1e-4,
    engine: KMeansEngine | OptimalEngine = DEFAULT_ENGINE,
) -> tuple[np.ndarray, np.ndarray]:
    """Cluster 1-D values with k-means; returns (centroids float32 ascending, labels int64).

    ``k' = min(n_clusters, number of distinct values)`` centroids are returned; with no more
    distinct values than clusters the distinct values themselves are the (exact) answer.
    Engines ``"sorted"`` and ``"sklearn"`` run Lloyd from ``init``; ``"optimal"`` is exact.
    """
    x = _check_values(values)
    _check_settings(n_clusters, max_iter, tol, engine)
    if init not in CENTROID_INITS:
        raise ClusteringError(f"unknown init {init!r}; choose one of {CENTROID_INITS}")
    if x.size == 0:
        return np.empty(0, dtype=np.float32), np.empty(0, dtype=np.int64)
    order = np.argsort(x, kind="stable")
    xs = x[order]
    starts = np.concatenate(([True], xs[1:] != xs[:-1]))
    labels = np.empty(x.size, dtype=np.int64)
    if np.count_nonzero(starts) <= n_clusters:
        labels[order] = np.cumsum(starts) - 1
        return xs[starts].astype(np.float32), labels
    if engine == "optimal":
        centers, sorted_labels = _optimal_sorted(xs, int(n_clusters))
        labels[order] = sorted_labels
        return centers.astype(np.float32), labels
    init_c = init_centroids(x, n_clusters, init, seed)
    if engine == "sklearn":
        centers, labels = _lloyd_sklearn(x, init_c, max_iter, tol)
    else:
        centers, sorted_labels = _lloyd_sorted(xs, init_c, max_iter, tol)
        labels[order] = sorted_labels
    return _ascending(centers, labels)
