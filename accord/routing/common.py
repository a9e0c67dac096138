"""Shared plumbing of the pair routers: fitting from records through a :class:`PairTable`, per-query scoring
through the batch path, threshold routing, and packing numpy arrays into saved state."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from accord.routing.base import FloatArray, Query, RouterError
from accord.routing.records import Outcome
from accord.routing.table import PairTable

__all__ = ["PairRouter", "pack", "unpack"]


def pack(array: FloatArray) -> bytes:
    """Little-endian float32 bytes (saved state; float32 keeps files small and scores stable to ~1e-7)."""
    return np.asarray(array, dtype="<f4").tobytes()


def unpack(raw: bytes, size: int | None = None) -> FloatArray:
    array = np.frombuffer(raw, dtype="<f4").astype(np.float64)
    if size is not None and array.size != size:
        raise RouterError("bad_file", f"expected {size} values, got {array.size}")
    return array


class PairRouter:
    """Base of routers between a weak and a strong model. Subclasses implement ``fit_table`` and
    ``_predict_batch`` (predicted 0..1 quality of weak and strong per query) or override ``score_batch``."""

    kind = "base"

    def __init__(self, weak: str = "", strong: str = "") -> None:
        self.weak = weak
        self.strong = strong
        self.fitted = False

    def fit(self, records: Sequence[Outcome]) -> None:
        table = PairTable.from_outcomes(records, self.weak or None, self.strong or None)
        self.fit_table(table)

    def fit_table(self, table: PairTable) -> None:
        raise NotImplementedError

    def _begin_fit(self, table: PairTable) -> None:
        self.weak, self.strong = table.weak, table.strong

    def _check(self) -> None:
        if not self.fitted:
            raise RouterError("not_fitted", f"the {self.kind} router has not been fitted or loaded")

    def _predict_batch(self, queries: Sequence[Query]) -> tuple[FloatArray, FloatArray]:
        raise NotImplementedError

    def score_batch(self, queries: Sequence[Query]) -> FloatArray:
        self._check()
        if not queries:
            return np.zeros(0)
        p_weak, p_strong = self._predict_batch(queries)
        return p_strong - p_weak

    def score(self, query: Query) -> float:
        return float(self.score_batch([query])[0])

    def predict(self, query: Query) -> dict[str, float]:
        self._check()
        p_weak, p_strong = self._predict_batch([query])
        return {self.weak: float(p_weak[0]), self.strong: float(p_strong[0])}

    def route(self, query: Query, threshold: float) -> str:
        return self.strong if self.score(query) >= threshold else self.weak
