"""Topic clusters of queries, learned without labels: spherical k-means over TF-IDF of the query's words.

Queries about one subject share words, and models differ by subject, but a log rarely names the subject. The
predictor clusters the training queries' text (hashed words weighted ``log(1 + count) * idf``, unit length) at
a few resolutions (``ks``: 8 and 24 clusters by default) and adds each query's nearest centroid per resolution as
a one-hot feature, so that a model's skill on a cluster is learned from every query in it (the idea of routing by
per-cluster error rates, as in Jitkrittum et al. 2025, "Universal model routing"). Words in more than ``max_df``
of the queries (templates, stop words) or in only one are left out, or a log of several tasks would cluster by
its prompt templates. The fit is seeded (k-means++ start, ``iterations`` Lloyd steps); no label is used, so
clustering every training query leaks nothing into out-of-fold predictions.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
import numpy as np

from accord.routing.base import FloatArray, Query, RouterError
from accord.routing.common import pack, unpack
from accord.routing.features import TextFeaturizer
from accord.routing.sparse import IntArray, SparseRows

__all__ = ["ClusterState", "Clusters", "fit_clusters", "text_only"]


def text_only(features: TextFeaturizer) -> TextFeaturizer:
    """The same text features without shape, kind and category (what clusters are made of)."""
    return TextFeaturizer(
        dim_bits=features.dim_bits,
        words=True,
        bigrams=False,
        char_ngrams=0,
        max_chars=features.max_chars,
        category_weight=0.0,
        kind_weight=0.0,
        shape_weight=0.0,
    )


def _mm(a: FloatArray, b: FloatArray) -> FloatArray:
    return np.asarray(np.einsum("ij,jk->ik", a, b, optimize=False), dtype=np.float64)


class ClusterState(msgspec.Struct, frozen=True, kw_only=True):
    """Clusters as data: the word columns (little-endian int32), their idf and every resolution's centroids
    (float32, one block of ``sizes[i] * len(columns)`` values per resolution)."""

    columns: bytes
    idf: bytes
    sizes: list[int]
    centroids: bytes
    weight: float


@dataclass(frozen=True)
class Clusters:
    """Centroids per resolution over the hashed word columns ``columns`` (with their ``idf``)."""

    features: TextFeaturizer
    columns: IntArray
    idf: FloatArray
    centroids: list[FloatArray]
    """One ``(k, len(columns))`` array per resolution, rows of unit length."""
    weight: float = 2.0
    """The value of a cluster's one-hot feature."""

    @property
    def dim(self) -> int:
        return sum(c.shape[0] for c in self.centroids)

    def _matrix(self, queries: Sequence[Query]) -> SparseRows:
        """TF-IDF rows of unit length over ``columns``."""
        x = self.features.transform(queries).select(self.columns)
        values = x.data * self.idf[x.indices]
        rows = x.row_ids()
        norms = np.sqrt(np.bincount(rows, weights=values * values, minlength=x.n_rows))
        values = values / np.where(norms > 0, norms, 1.0)[rows]
        return SparseRows(indptr=x.indptr, indices=x.indices, data=values, dim=x.dim)

    def assign(self, queries: Sequence[Query]) -> list[IntArray]:
        """The nearest centroid of every query, per resolution."""
        if not queries:
            return [np.zeros(0, dtype=np.int64) for _ in self.centroids]
        x = self._matrix(queries)
        return [np.asarray(np.argmax(x.matmat(c.T), axis=1), dtype=np.int64) for c in self.centroids]

    def state(self) -> ClusterState:
        return ClusterState(
            columns=np.asarray(self.columns, dtype="<i4").tobytes(),
            idf=pack(self.idf),
            sizes=[int(c.shape[0]) for c in self.centroids],
            centroids=pack(np.concatenate([c.ravel() for c in self.centroids])),
            weight=self.weight,
        )

    @classmethod
    def from_state(cls, state: ClusterState, features: TextFeaturizer) -> Clusters:
        columns = np.frombuffer(state.columns, dtype="<i4").astype(np.int64)
        width = columns.size
        flat = unpack(state.centroids, sum(state.sizes) * width)
        bounds = np.cumsum([0, *state.sizes])
        return cls(
            features=text_only(features),
            columns=columns,
            idf=unpack(state.idf, width),
            centroids=[
                flat[a * width : b * width].reshape(b - a, width) for a, b in itertools.pairwise(bounds.tolist())
            ],
            weight=state.weight,
        )

    def transform(self, queries: Sequence[Query]) -> SparseRows:
        """One-hot cluster features, one column block per resolution."""
        assigned = self.assign(queries)
        n = len(queries)
        offsets = np.cumsum([0] + [c.shape[0] for c in self.centroids[:-1]])
        indices = np.stack([a + o for a, o in zip(assigned, offsets, strict=True)], axis=1).reshape(-1)
        per_row = len(self.centroids)
        return SparseRows(
            indptr=np.arange(0, n * per_row + 1, per_row, dtype=np.int64),
            indices=indices.astype(np.int64),
            data=np.full(n * per_row, self.weight),
            dim=self.dim,
        )


def _kmeans(x: SparseRows, k: int, rng: np.random.Generator, iterations: int) -> FloatArray:
    n = x.n_rows
    order = x.column_order()
    centroids = np.zeros((k, x.dim))
    first = int(rng.integers(n))
    chosen = [first]
    best = x.matmat(_row(x, first)[:, None])[:, 0]
    for _ in range(1, k):
        distance = np.clip(1.0 - best, 0.0, None)
        total = float(distance.sum())
        pick = int(rng.choice(n, p=distance / total)) if total > 0 else int(rng.integers(n))
        chosen.append(pick)
        best = np.maximum(best, x.matmat(_row(x, pick)[:, None])[:, 0])
    for j, row in enumerate(chosen):
        centroids[j] = _row(x, row)
    for _ in range(iterations):
        similarity = x.matmat(centroids.T)
        assigned = np.argmax(similarity, axis=1)
        one_hot = np.zeros((n, k))
        one_hot[np.arange(n), assigned] = 1.0
        sums = x.rmatmat(one_hot, order).T
        norms = np.sqrt(np.multiply(sums, sums).sum(axis=1))
        empty = norms == 0
        if empty.any():  # restart an empty cluster at the query farthest from its centroid
            farthest = np.argsort(similarity[np.arange(n), assigned])[: int(empty.sum())]
            for slot, far in zip(np.flatnonzero(empty).tolist(), farthest.tolist(), strict=True):
                sums[slot] = _row(x, far)
                norms[slot] = 1.0
        updated = sums / norms[:, None]
        if np.allclose(updated, centroids):
            break
        centroids = updated
    return centroids


def _row(x: SparseRows, i: int) -> FloatArray:
    out = np.zeros(x.dim)
    span = slice(int(x.indptr[i]), int(x.indptr[i + 1]))
    out[x.indices[span]] = x.data[span]
    return out


def fit_clusters(
    queries: Sequence[Query],
    features: TextFeaturizer,
    *,
    ks: Sequence[int] = (8, 24),
    seed: int = 0,
    iterations: int = 20,
    weight: float = 2.0,
    max_df: float = 0.1,
) -> Clusters | None:
    """Cluster ``queries`` (see the module docstring); None when there are too few queries or words for it."""
    text = text_only(features)
    x = text.transform(queries)
    compact, columns = x.compact()
    n = compact.n_rows
    sizes = [k for k in ks if 2 <= k <= n // 10]
    if not sizes or not compact.dim:
        return None
    df = np.bincount(compact.indices, minlength=compact.dim).astype(np.float64)
    keep = (df >= 2) & (df <= max_df * n)
    if not keep.any():
        return None
    idf = np.log((1.0 + n) / (1.0 + df[keep])) + 1.0
    clusters = Clusters(features=text, columns=columns[keep], idf=idf, centroids=[], weight=weight)
    weighted = clusters._matrix(queries)
    rng = np.random.default_rng(seed)
    centroids = [_kmeans(weighted, k, rng, iterations) for k in sizes]
    if any(not np.all(np.isfinite(c)) for c in centroids):
        raise RouterError("bad_input", "clustering diverged")
    return Clusters(features=text, columns=clusters.columns, idf=idf, centroids=centroids, weight=weight)
