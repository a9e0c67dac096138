"""The evaluation table of any number of models, built from outcome records: :class:`OutcomeMatrix`.

One row per query, one column per model: the query as a router sees it, each model's 0..1 quality
(:attr:`~accord.routing.records.Outcome.unit_quality`; several records of one query and model, e.g. one per turn,
are averaged) and cost in micro-USD (summed); NaN where a model has no record of a query. It is the N-model
sibling of :class:`~accord.routing.table.PairTable`: predictors are fitted on it (a missing cell is simply not
learned from) and evaluated on its complete rows (:meth:`OutcomeMatrix.complete`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from accord.routing.base import FloatArray, Query, RouterError
from accord.routing.records import Outcome, query_key

__all__ = ["OutcomeMatrix", "group_folds", "parse_models"]


def group_folds(groups: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Fold number (0..k-1) per row from a seeded permutation of the distinct ``groups``: rows of one group (e.g.
    one prompt) share a fold."""
    distinct = sorted(set(groups))
    order = np.random.default_rng(seed).permutation(len(distinct))
    fold_of = {distinct[int(j)]: i % k for i, j in enumerate(order)}
    return np.asarray([fold_of[g] for g in groups], dtype=np.int64)


def parse_models(spec: str, available: Iterable[str]) -> list[str]:
    """The models named by ``spec``: ``all`` (every model of the log, sorted) or a comma-separated list.

    Raises :class:`RouterError` (``unknown_model``) for a name the log does not have, ``no_pair`` for fewer than
    two models.
    """
    present = sorted(set(available))
    if spec.strip() == "all":
        chosen = present
    else:
        chosen = list(dict.fromkeys(m.strip() for m in spec.split(",") if m.strip()))
        missing = [m for m in chosen if m not in present]
        if missing:
            raise RouterError("unknown_model", f"{missing} not in the log; it has {present}")
    if len(chosen) < 2:
        raise RouterError("no_pair", f"need at least two models, got {chosen}")
    return chosen


@dataclass(frozen=True)
class OutcomeMatrix:
    """Per-query outcomes of ``models``; arrays are ``(len(query_ids), len(models))``, aligned with ``queries``."""

    models: list[str]
    query_ids: list[str]
    queries: list[Query]
    quality: FloatArray
    """0..1 quality per (query, model); NaN where the model has no record of the query."""
    cost: FloatArray
    """Cost in micro-USD per (query, model) (0 where a record names none); NaN where there is no record."""

    @classmethod
    def from_outcomes(cls, records: Iterable[Outcome], models: Sequence[str] | None = None) -> OutcomeMatrix:
        """The matrix of ``models`` (default: every model of the records, sorted by name), queries in order of
        first appearance. Records without a quality signal are skipped."""
        listed = [r for r in records if r.has_quality]
        chosen = list(models) if models is not None else sorted({r.model for r in listed})
        if len(chosen) < 1:
            raise RouterError("no_pair", "no outcome records with a quality signal")
        column = {m: j for j, m in enumerate(chosen)}
        first: dict[str, Outcome] = {}
        sums: dict[tuple[str, int], list[float]] = {}
        for record in listed:
            j = column.get(record.model)
            if j is None:
                continue
            first.setdefault(record.query_id, record)
            acc = sums.setdefault((record.query_id, j), [0.0, 0.0, 0.0])
            acc[0] += record.unit_quality
            acc[1] += 1.0
            acc[2] += float(record.cost_micros or 0)
        if not first:
            raise RouterError("no_pair", f"no outcome records of {chosen}")
        answered = {j for _, j in sums}
        empty = [m for j, m in enumerate(chosen) if j not in answered]
        if empty:
            raise RouterError("unknown_model", f"no outcome records of {empty}")
        order = list(first)
        row = {q: i for i, q in enumerate(order)}
        quality = np.full((len(order), len(chosen)), np.nan)
        cost = np.full((len(order), len(chosen)), np.nan)
        for (qid, j), (total, count, spent) in sums.items():
            quality[row[qid], j] = total / count
            cost[row[qid], j] = spent
        return cls(
            models=chosen,
            query_ids=order,
            queries=[Query.from_outcome(first[q]) for q in order],
            quality=quality,
            cost=cost,
        )

    def __len__(self) -> int:
        return len(self.query_ids)

    @property
    def observed(self) -> np.ndarray:
        """Boolean mask of the cells that have a record."""
        return np.asarray(~np.isnan(self.quality))

    def take(self, rows: Sequence[int] | np.ndarray) -> OutcomeMatrix:
        index = np.asarray(rows, dtype=np.int64)
        return OutcomeMatrix(
            models=self.models,
            query_ids=[self.query_ids[int(i)] for i in index],
            queries=[self.queries[int(i)] for i in index],
            quality=self.quality[index],
            cost=self.cost[index],
        )

    def complete(self) -> OutcomeMatrix:
        """Only the queries every model answered (what a choice among all models can be scored on)."""
        return self.take(np.flatnonzero(self.observed.all(axis=1)))

    def groups(self) -> list[str]:
        """A key per row that is equal for rows with the same (whitespace-normalised) prompt."""
        return [query_key(q.text) for q in self.queries]

    def accuracy(self) -> FloatArray:
        """Mean quality per model over the queries it answered."""
        return np.asarray(np.nanmean(self.quality, axis=0), dtype=np.float64)

    def cost_per_query(self) -> FloatArray:
        """Mean cost (micro-USD) per model over the queries it answered."""
        return np.asarray(np.nanmean(self.cost, axis=0), dtype=np.float64)
