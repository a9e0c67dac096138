"""Logistic regression per model on hashed text features: predicted quality of each model, score = the gap.

One L2-regularised logistic model per model of the pair predicts its 0..1 quality (correctness, or a judge's
score / its maximum as a soft label) from :class:`~accord.routing.features.TextFeaturizer` features; the
score is ``p_strong - p_weak``, the expected quality gained by escalating. (Predicting the gap directly throws
away which side a tie is on: a query both models fail is worth nothing, one only the weak model fails is worth
everything; two models keep that apart.)
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

from accord.routing.base import FloatArray, Query
from accord.routing.common import PairRouter, pack, unpack
from accord.routing.features import TextFeaturizer
from accord.routing.sparse import fit_logistic, sigmoid
from accord.routing.table import PairTable

__all__ = ["LogisticRouter", "LogisticState"]


class LogisticState(msgspec.Struct, frozen=True, kw_only=True, tag="logistic"):
    features: TextFeaturizer
    l2: float
    weak_w: bytes
    weak_b: float
    strong_w: bytes
    strong_b: float


class LogisticRouter(PairRouter):
    kind = "logistic"

    def __init__(
        self,
        weak: str = "",
        strong: str = "",
        *,
        features: TextFeaturizer | None = None,
        l2: float = 1.0,
        max_iter: int = 150,
    ) -> None:
        super().__init__(weak, strong)
        self.features = features if features is not None else TextFeaturizer()
        self.l2 = l2
        self.max_iter = max_iter
        dim = self.features.dim
        self._w = (np.zeros(dim), np.zeros(dim))
        self._b = (0.0, 0.0)

    def fit_table(self, table: PairTable) -> None:
        self._begin_fit(table)
        x = self.features.transform(table.queries)
        w_weak, b_weak = fit_logistic(x, table.q_weak / table.scale, l2=self.l2, max_iter=self.max_iter)
        w_strong, b_strong = fit_logistic(x, table.q_strong / table.scale, l2=self.l2, max_iter=self.max_iter)
        self._w, self._b = (w_weak, w_strong), (b_weak, b_strong)
        self.fitted = True

    def _predict_batch(self, queries: Sequence[Query]) -> tuple[FloatArray, FloatArray]:
        x = self.features.transform(queries)
        return (
            sigmoid(x.matvec(self._w[0]) + self._b[0]),
            sigmoid(x.matvec(self._w[1]) + self._b[1]),
        )

    def state(self) -> LogisticState:
        return LogisticState(
            features=self.features,
            l2=self.l2,
            weak_w=pack(self._w[0]),
            weak_b=self._b[0],
            strong_w=pack(self._w[1]),
            strong_b=self._b[1],
        )

    @classmethod
    def from_state(cls, weak: str, strong: str, state: LogisticState) -> LogisticRouter:
        router = cls(weak, strong, features=state.features, l2=state.l2)
        dim = state.features.dim
        router._w = (unpack(state.weak_w, dim), unpack(state.strong_w, dim))
        router._b = (state.weak_b, state.strong_b)
        router.fitted = True
        return router
