"""The evaluation table of a (weak, strong) model pair, built from outcome records.

One row per query that both models answered: the query as a router sees it, each model's quality (on the
log's own scale; several records of the same query and model, e.g. one per turn, are averaged) and cost (summed).
Metrics and cross-fitting work on this table; routers are fitted on the records behind it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from accord.routing.base import FloatArray, Query, RouterError
from accord.routing.records import Outcome, query_key

__all__ = ["PairTable", "infer_pair"]


def infer_pair(records: Sequence[Outcome]) -> tuple[str, str]:
    """(weak, strong): the two models with the most queries; the one with the higher mean quality is strong."""
    queries: dict[str, set[str]] = defaultdict(set)
    totals: dict[str, list[float]] = defaultdict(lambda: [0.0, 0.0])
    for record in records:
        queries[record.model].add(record.query_id)
        total = totals[record.model]
        total[0] += record.unit_quality
        total[1] += 1.0
    if len(queries) < 2:
        raise RouterError("no_pair", f"need outcomes of at least two models, got {sorted(queries)}")
    first, second = sorted(queries, key=lambda m: (-len(queries[m]), m))[:2]
    mean = {m: totals[m][0] / totals[m][1] for m in (first, second)}
    return (first, second) if mean[first] <= mean[second] else (second, first)


@dataclass(frozen=True)
class PairTable:
    """Per-query outcomes of two models; arrays are aligned with ``queries``."""

    weak: str
    strong: str
    query_ids: list[str]
    queries: list[Query]
    """Each with ``answer`` = the weak model's response (when logged), for cascades."""
    q_weak: FloatArray
    q_strong: FloatArray
    c_weak: FloatArray
    c_strong: FloatArray
    scale: float
    """The quality scale's maximum (1 for correctness, 10 for a 1-10 judge)."""

    @classmethod
    def from_outcomes(
        cls, records: Sequence[Outcome], weak: str | None = None, strong: str | None = None
    ) -> PairTable:
        if weak is None or strong is None:
            inferred_weak, inferred_strong = infer_pair(records)
            weak = weak if weak is not None else inferred_weak
            strong = strong if strong is not None else inferred_strong
        if weak == strong:
            raise RouterError("no_pair", f"weak and strong are the same model {weak!r}")
        first: dict[str, Outcome] = {}
        sums: dict[tuple[str, str], list[float]] = {}
        answers: dict[str, str] = {}
        order: list[str] = []
        scale = 1.0
        for record in records:
            if record.model not in (weak, strong):
                continue
            if record.query_id not in first:
                first[record.query_id] = record
                order.append(record.query_id)
            acc = sums.setdefault((record.query_id, record.model), [0.0, 0.0, 0.0])
            acc[0] += record.quality
            acc[1] += 1.0
            acc[2] += float(record.cost_micros or 0)
            if record.score is not None:
                scale = max(scale, record.score_max)
            if record.model == weak and record.response is not None and record.query_id not in answers:
                answers[record.query_id] = record.response
        kept = [q for q in order if (q, weak) in sums and (q, strong) in sums]
        if not kept:
            raise RouterError("no_pair", f"no query has outcomes of both {weak!r} and {strong!r}")

        def column(model: str, index: int, mean: bool) -> FloatArray:
            values = [sums[(q, model)][index] / (sums[(q, model)][1] if mean else 1.0) for q in kept]
            return np.asarray(values, dtype=np.float64)

        return cls(
            weak=weak,
            strong=strong,
            query_ids=kept,
            queries=[Query.from_outcome(first[q], answer=answers.get(q)) for q in kept],
            q_weak=column(weak, 0, True),
            q_strong=column(strong, 0, True),
            c_weak=column(weak, 2, False),
            c_strong=column(strong, 2, False),
            scale=scale,
        )

    def __len__(self) -> int:
        return len(self.query_ids)

    def groups(self) -> list[str]:
        """A key per row that is equal for rows with the same (whitespace-normalised) prompt."""
        return [query_key(q.text) for q in self.queries]

    def take(self, rows: Sequence[int] | np.ndarray) -> PairTable:
        index = [int(i) for i in rows]
        return PairTable(
            weak=self.weak,
            strong=self.strong,
            query_ids=[self.query_ids[i] for i in index],
            queries=[self.queries[i] for i in index],
            q_weak=self.q_weak[index],
            q_strong=self.q_strong[index],
            c_weak=self.c_weak[index],
            c_strong=self.c_strong[index],
            scale=self.scale,
        )
