"""The learned predictor over a pair of models, as a pair router (kind ``predictor``): the two-model RouteLLM
metrics (APGR, CPT) of the same model that ranks offers in the market.

The score is ``P(strong answers well) - P(weak answers well)``, both calibrated predictions of a
:class:`~accord.routing.predictor.LearnedPredictor` fitted on the pair (no gate and no price: a pair router's
score ranks queries by how much escalating is worth; the threshold sets the price).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from accord.routing.base import FloatArray, Query
from accord.routing.common import PairRouter
from accord.routing.matrix import OutcomeMatrix
from accord.routing.predictor import LearnedPredictor, PredictorState
from accord.routing.table import PairTable

__all__ = ["PredictorRouter"]


class PredictorRouter(PairRouter):
    kind = "predictor"

    def __init__(self, weak: str = "", strong: str = "", *, predictor: LearnedPredictor | None = None) -> None:
        super().__init__(weak, strong)
        self.predictor = predictor if predictor is not None else LearnedPredictor()

    def fit_table(self, table: PairTable) -> None:
        self._begin_fit(table)
        matrix = OutcomeMatrix(
            models=[table.weak, table.strong],
            query_ids=list(table.query_ids),
            queries=list(table.queries),
            quality=np.stack([table.q_weak, table.q_strong], axis=1) / table.scale,
            cost=np.stack([table.c_weak, table.c_strong], axis=1),
        )
        self.predictor.fit_matrix(matrix)
        self.fitted = True

    def _predict_batch(self, queries: Sequence[Query]) -> tuple[FloatArray, FloatArray]:
        quality = self.predictor.predict_quality(queries)
        return quality[:, 0], quality[:, 1]

    def state(self) -> PredictorState:
        return self.predictor.state()

    @classmethod
    def from_state(cls, weak: str, strong: str, state: PredictorState) -> PredictorRouter:
        router = cls(weak, strong, predictor=LearnedPredictor.from_state(state))
        router.fitted = True
        return router
