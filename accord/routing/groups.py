"""Per-task tables: what each model achieves, and costs, on each task, shrunk towards coarser levels.

A query's task key is its ``kind`` and, when it has one, its ``category`` (``k:math`` or ``c:mcq/anatomy``): both
are known at request time. A :class:`GroupTable` holds one value per (key, model), estimated as empirical-Bayes
means: a category's mean is shrunk towards its kind's with ``prior`` pseudo-observations, a kind's towards the
model's overall mean. A key never seen falls back to its kind, then to the overall mean. The predictor uses one
table for quality (the per-task best single model is its fallback policy) and one for cost (its price estimate).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from accord.routing.base import FloatArray, Query, RouterError

__all__ = ["GroupTable", "category_key", "kind_key", "query_keys"]


def kind_key(query: Query) -> str:
    return "k:" + query.kind


def category_key(query: Query) -> str | None:
    return None if query.category is None else f"c:{query.kind}/{query.category}"


def query_keys(query: Query) -> list[str]:
    """The task keys of ``query``, finest first (category, then kind)."""
    category = category_key(query)
    return [kind_key(query)] if category is None else [category, kind_key(query)]


class GroupTable:
    """Shrunk per-task means of a ``(rows, models)`` value matrix (see the module docstring)."""

    def __init__(self, keys: list[str], values: FloatArray, overall: FloatArray) -> None:
        if values.shape != (len(keys), overall.size):
            raise RouterError("bad_file", f"a group table of shape {values.shape} for {len(keys)} keys")
        self.keys = keys
        self.values = values
        self.overall = overall
        self._index = {k: i for i, k in enumerate(keys)}

    @classmethod
    def fit(cls, queries: Sequence[Query], values: FloatArray, *, prior: float) -> GroupTable:
        """From ``values`` (``(len(queries), models)``, NaN where unobserved)."""
        observed = ~np.isnan(values)
        filled = np.where(observed, values, 0.0)
        counts = observed.sum(axis=0)
        overall = np.divide(filled.sum(axis=0), counts, out=np.zeros(values.shape[1]), where=counts > 0)
        sums: dict[str, tuple[FloatArray, FloatArray]] = {}
        for i, query in enumerate(queries):
            for key in query_keys(query):
                total, count = sums.get(key, (np.zeros(values.shape[1]), np.zeros(values.shape[1])))
                sums[key] = (total + filled[i], count + observed[i])
        means: dict[str, FloatArray] = {}
        for key in sorted(sums, key=lambda k: (not k.startswith("k:"), k)):  # kinds before their categories
            parent = overall if key.startswith("k:") else means.get("k:" + key[2:].split("/", 1)[0], overall)
            total, count = sums[key]
            means[key] = (total + prior * parent) / (count + prior)
        keys = sorted(means)
        table = np.asarray([means[k] for k in keys], dtype=np.float64).reshape(len(keys), values.shape[1])
        return cls(keys, table, overall)

    def row(self, query: Query) -> FloatArray:
        for key in query_keys(query):
            i = self._index.get(key)
            if i is not None:
                return np.asarray(self.values[i], dtype=np.float64)
        return self.overall

    def lookup(self, queries: Sequence[Query]) -> FloatArray:
        """``(len(queries), models)``: each query's finest known key's values."""
        if not queries:
            return np.zeros((0, self.overall.size))
        return np.stack([self.row(q) for q in queries])
