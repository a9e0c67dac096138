"""The subject (category) baseline: the strong model's mean gain within the query's category.

Each model's quality rate per category is shrunk towards its overall rate with ``prior`` pseudo-queries
(empirical Bayes), so small categories do not swing; a category never seen (or none) gets the overall rates.
Queries without a category fall back to their ``kind``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import msgspec
import numpy as np

from accord.routing.base import FloatArray, Query
from accord.routing.common import PairRouter
from accord.routing.table import PairTable

__all__ = ["SubjectRouter", "SubjectState"]


class SubjectState(msgspec.Struct, frozen=True, kw_only=True, tag="subject"):
    prior: float
    keys: list[str]
    weak_rate: list[float]
    strong_rate: list[float]
    weak_all: float
    strong_all: float


def _key(query: Query) -> str:
    return "cat:" + query.category if query.category is not None else "kind:" + query.kind


class SubjectRouter(PairRouter):
    kind = "subject"

    def __init__(self, weak: str = "", strong: str = "", *, prior: float = 10.0) -> None:
        super().__init__(weak, strong)
        self.prior = prior
        self._rates: dict[str, tuple[float, float]] = {}
        self._overall = (0.0, 0.0)

    def fit_table(self, table: PairTable) -> None:
        self._begin_fit(table)
        qw, qs = table.q_weak / table.scale, table.q_strong / table.scale
        overall = (float(qw.mean()), float(qs.mean()))
        sums: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0, 0.0])
        for query, w, s in zip(table.queries, qw.tolist(), qs.tolist(), strict=True):
            acc = sums[_key(query)]
            acc[0] += w
            acc[1] += s
            acc[2] += 1.0
        a = self.prior
        self._rates = {
            key: ((w + a * overall[0]) / (n + a), (s + a * overall[1]) / (n + a))
            for key, (w, s, n) in sums.items()
        }
        self._overall = overall
        self.fitted = True

    def _predict_batch(self, queries: Sequence[Query]) -> tuple[FloatArray, FloatArray]:
        rates = [self._rates.get(_key(q), self._overall) for q in queries]
        array = np.asarray(rates, dtype=np.float64)
        return array[:, 0], array[:, 1]

    def state(self) -> SubjectState:
        keys = sorted(self._rates)
        return SubjectState(
            prior=self.prior,
            keys=keys,
            weak_rate=[self._rates[k][0] for k in keys],
            strong_rate=[self._rates[k][1] for k in keys],
            weak_all=self._overall[0],
            strong_all=self._overall[1],
        )

    @classmethod
    def from_state(cls, weak: str, strong: str, state: SubjectState) -> SubjectRouter:
        router = cls(weak, strong, prior=state.prior)
        router._rates = {k: (w, s) for k, w, s in zip(state.keys, state.weak_rate, state.strong_rate, strict=True)}
        router._overall = (state.weak_all, state.strong_all)
        router.fitted = True
        return router
